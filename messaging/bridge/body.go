package bridge

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/fleetprov/fleetprov/messaging/wire"
)

// DefaultMaxUploads bounds the request bodies being received at once: each is spooled
// to a file, not memory, but a stalled upload holds a connection until ReadTimeout.
const DefaultMaxUploads = 4

// body is a request body spooled to a file in the state dir while it was hashed.
type body struct {
	f    *os.File
	size int64
	sum  [32]byte
}

// Reader returns the body from its start.
func (b *body) Reader() (io.ReadSeeker, error) {
	if _, err := b.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return b.f, nil
}

// Bytes reads the whole body into memory (envelopes and patches, which are decoded).
func (b *body) Bytes() ([]byte, error) {
	r, err := b.Reader()
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// Close removes the spool file.
func (b *body) Close() {
	b.f.Close()
	os.Remove(b.f.Name())
}

// spool receives the request body within limit (413 past it) into a file in the spool
// dir, hashing it on the way; memory stays flat however large or slow the upload. At
// most MaxUploads run at once; past that the request is refused as busy at once.
func (s *Server) spool(w http.ResponseWriter, r *http.Request, limit int64) (*body, error) {
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	default:
		return nil, errf(wire.ErrBusy, fmt.Sprintf("%d uploads in progress; try again shortly", cap(s.uploads)), nil)
	}
	f, err := os.CreateTemp(s.o.SpoolDir, "fleetprov-upload-")
	if err != nil {
		return nil, fmt.Errorf("spooling upload: %w", err)
	}
	b := &body{f: f}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		b.Close()
		return nil, err
	}
	b.size = n
	copy(b.sum[:], h.Sum(nil))
	return b, nil
}
