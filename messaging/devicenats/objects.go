package devicenats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// errNotFound is a direct get's 404: no such message.
var errNotFound = errors.New("not found")

// directGetStatus is the JetStream status a direct get was answered with: nil for a
// message, errNotFound for none, an error for anything else.
func directGetStatus(m *nats.Msg) error {
	switch st := m.Header.Get("Status"); st {
	case "":
		return nil
	case "404":
		return errNotFound
	default:
		return fmt.Errorf("status %s %s", st, m.Header.Get("Description"))
	}
}

// objectInfo is what a device needs of a JetStream object's info.
type objectInfo struct {
	NUID    string `json:"nuid"`
	Size    int64  `json:"size"`
	Deleted bool   `json:"deleted"`
}

// objectRequestTimeout bounds each request of an object fetch (the fetch as a whole is
// bounded by its caller's deadline).
const objectRequestTimeout = 10 * time.Second

// fetchObject copies object name of the fleet's payload store on the hub into w with
// direct gets (no consumer on the hub): its info, then its chunks in stream order until
// it has size bytes, the signed envelope's size, at most limit. Whatever the hub answers,
// each chunk must be non-empty, later in the stream than the one before, and within size;
// the caller checks the digest.
func fetchObject(ctx context.Context, nc *nats.Conn, fleet, name string, size, limit int64, w io.Writer) error {
	if size > limit {
		return fmt.Errorf("object %s: %d bytes (limit %d)", name, size, limit)
	}
	request := func(subject string, body []byte) (*nats.Msg, error) {
		rctx, cancel := context.WithTimeout(ctx, objectRequestTimeout)
		defer cancel()
		m, err := nc.RequestWithContext(rctx, subject, body)
		if err != nil {
			return nil, err
		}
		return m, directGetStatus(m)
	}
	m, err := request(subjects.ObjectInfoGet(subjects.Domain, fleet, name), nil)
	if err != nil {
		return fmt.Errorf("reading object %s: %w", name, err)
	}
	var info objectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return fmt.Errorf("reading object %s: %w", name, err)
	}
	switch {
	case info.Deleted:
		return fmt.Errorf("object %s was deleted from the hub", name)
	case info.Size != size:
		return fmt.Errorf("object %s is %d bytes; the envelope says %d", name, info.Size, size)
	case !subjects.ValidToken(info.NUID):
		return fmt.Errorf("object %s: bad chunk id %q", name, info.NUID)
	}
	chunks := subjects.ObjectChunks(fleet, info.NUID)
	var seq uint64
	for got := int64(0); got < size; {
		req, _ := json.Marshal(struct {
			Seq  uint64 `json:"seq,omitempty"`
			Next string `json:"next_by_subj"`
		}{seq + 1, chunks})
		m, err := request(subjects.ObjectDirectGet(subjects.Domain, fleet), req)
		if err != nil {
			return fmt.Errorf("reading object %s at byte %d: %w", name, got, err)
		}
		next, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		switch {
		case err != nil || next <= seq:
			return fmt.Errorf("reading object %s at byte %d: chunk sequence %q after %d", name, got, m.Header.Get("Nats-Sequence"), seq)
		case len(m.Data) == 0:
			return fmt.Errorf("reading object %s at byte %d: empty chunk", name, got)
		case got+int64(len(m.Data)) > size:
			return fmt.Errorf("object %s is longer than %d bytes", name, size)
		}
		if _, err := w.Write(m.Data); err != nil {
			return err
		}
		seq, got = next, got+int64(len(m.Data))
	}
	return nil
}
