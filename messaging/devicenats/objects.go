package devicenats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// objectInfo is what a device needs of a JetStream object's info.
type objectInfo struct {
	NUID    string `json:"nuid"`
	Size    int64  `json:"size"`
	Chunks  int    `json:"chunks"`
	Deleted bool   `json:"deleted"`
}

// fetchObject copies object name of the fleet's payload store on the hub into w with
// direct gets through domain (no consumer on the hub): its info, then each chunk in
// order. The object must be exactly size bytes (the signed envelope's), and no more than
// limit; the caller checks its digest.
func fetchObject(ctx context.Context, nc *nats.Conn, domain, fleet, name string, size, limit int64, w io.Writer) error {
	m, err := nc.RequestWithContext(ctx, subjects.ObjectInfoGet(domain, fleet, name), nil)
	if err != nil {
		return fmt.Errorf("reading object %s: %w", name, err)
	}
	if st := m.Header.Get("Status"); st != "" {
		return fmt.Errorf("reading object %s: %s %s", name, st, m.Header.Get("Description"))
	}
	var info objectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return fmt.Errorf("reading object %s: %w", name, err)
	}
	switch {
	case info.Deleted:
		return fmt.Errorf("object %s was deleted from the hub", name)
	case info.Size != size || size > limit:
		return fmt.Errorf("object %s is %d bytes; the envelope says %d (limit %d)", name, info.Size, size, limit)
	case info.NUID == "" || !subjects.ValidToken(info.NUID):
		return fmt.Errorf("object %s: bad chunk id %q", name, info.NUID)
	}
	req, _ := json.Marshal(map[string]any{"next_by_subj": subjects.ObjectChunks(fleet, info.NUID)})
	var seq uint64
	var got int64
	for i := 0; i < info.Chunks; i++ {
		if seq > 0 {
			req, _ = json.Marshal(map[string]any{"seq": seq + 1, "next_by_subj": subjects.ObjectChunks(fleet, info.NUID)})
		}
		m, err := nc.RequestWithContext(ctx, subjects.ObjectDirectGet(domain, fleet), req)
		if err != nil {
			return fmt.Errorf("reading object %s chunk %d: %w", name, i, err)
		}
		if st := m.Header.Get("Status"); st != "" {
			return fmt.Errorf("reading object %s chunk %d: %s %s", name, i, st, m.Header.Get("Description"))
		}
		if seq, err = strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64); err != nil {
			return fmt.Errorf("reading object %s chunk %d: no sequence", name, i)
		}
		if got += int64(len(m.Data)); got > size {
			return fmt.Errorf("object %s is longer than %d bytes", name, size)
		}
		if _, err := w.Write(m.Data); err != nil {
			return err
		}
	}
	if got != size {
		return errors.New("object " + name + " is short: " + strconv.FormatInt(got, 10) + " of " + strconv.FormatInt(size, 10) + " bytes")
	}
	return nil
}
