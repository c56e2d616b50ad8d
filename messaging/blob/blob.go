// Package blob moves payloads larger than one NATS message: the owner serves the bytes on
// a blob subject, and the receiver fetches them chunk by chunk with request/reply. It works
// through leafnode links without JetStream. Integrity is the caller's business: envelopes
// carry the sha256 of the whole payload, checked before use.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/nats-io/nats.go"
)

// ErrTooLarge is returned by Fetch when the announced size is over the caller's limit.
var ErrTooLarge = errors.New("blob too large")

// chunkSize leaves room for headers under the server's max payload.
func chunkSize(nc *nats.Conn) int {
	n := int(nc.MaxPayload()) - 4096
	if n < 4096 {
		n = 4096
	}
	return n
}

// replyInbox reports whether a chunk request's reply subject is a reply inbox: a client's
// _INBOX.… or a device's fleetprov.<fleet>.inbox.<device>.…. A server answers nothing else,
// so a client cannot use its permissions to publish on another subject.
func replyInbox(reply string) bool {
	return strings.HasPrefix(reply, "_INBOX.") || subjects.IsInbox(reply)
}

// Serve answers chunk requests for data on subject until the returned stop is called or
// ctx ends. A request's body is the decimal offset; the reply is up to one chunk.
func Serve(ctx context.Context, nc *nats.Conn, subject string, data []byte) (func(), error) {
	size := chunkSize(nc)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if !replyInbox(m.Reply) {
			return // not an inbox: a client trying to make this server publish for it
		}
		off, err := strconv.Atoi(string(m.Data))
		if err != nil || off < 0 || off > len(data) {
			m.Respond(nil)
			return
		}
		end := min(off+size, len(data))
		m.Respond(data[off:end])
	})
	if err != nil {
		return nil, fmt.Errorf("serving blob: %w", err)
	}
	if err := nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("serving blob: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { sub.Unsubscribe() })
	return func() {
		stop()
		sub.Unsubscribe()
	}, nil
}

// Fetch reads size bytes from subject into w, one chunk per request, each within
// perChunk. It refuses sizes over limit before fetching anything.
func Fetch(ctx context.Context, nc *nats.Conn, subject string, size, limit int64, perChunk time.Duration, w io.Writer) error {
	if size > limit {
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, size, limit)
	}
	if perChunk <= 0 {
		perChunk = 10 * time.Second
	}
	var off int64
	for off < size {
		cctx, cancel := context.WithTimeout(ctx, perChunk)
		m, err := nc.RequestWithContext(cctx, subject, []byte(strconv.FormatInt(off, 10)))
		cancel()
		if err != nil {
			return fmt.Errorf("fetching blob at offset %d: %w", off, err)
		}
		if len(m.Data) == 0 {
			return fmt.Errorf("fetching blob at offset %d: empty chunk", off)
		}
		if off+int64(len(m.Data)) > size {
			return fmt.Errorf("fetching blob: more data than the announced %d bytes", size)
		}
		if _, err := w.Write(m.Data); err != nil {
			return fmt.Errorf("writing blob: %w", err)
		}
		off += int64(len(m.Data))
	}
	return nil
}
