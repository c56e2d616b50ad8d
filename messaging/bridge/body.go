package bridge

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/fleetprov/fleetprov/messaging/wire"
)

// DefaultMaxUploads bounds the request bodies being received at once: each is spooled
// to a file, not memory, but a stalled upload holds a slot. One client (address, or /64)
// holds at most one slot, and an upload slower than MinUploadRate after UploadGrace is
// cut, so stalled uploads cannot keep everyone else out.
const (
	DefaultMaxUploads = 4
	MinUploadRate     = 32 << 10 // bytes per second
	UploadGrace       = 10 * time.Second
)

// body is a request body spooled to a file in the state dir while it was hashed.
type body struct {
	f   *os.File
	sum [32]byte
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
	release, err := s.uploadSlot(r)
	if err != nil {
		return nil, err
	}
	defer release()
	f, err := os.CreateTemp(s.o.SpoolDir, "fleetprov-upload-")
	if err != nil {
		return nil, fmt.Errorf("spooling upload: %w", err)
	}
	b := &body{f: f}
	h := sha256.New()
	in := &rateReader{r: http.MaxBytesReader(w, r.Body, limit), start: time.Now(), now: time.Now,
		rc: http.NewResponseController(w)}
	in.rc.SetReadDeadline(time.Now().Add(UploadGrace))
	if _, err := io.Copy(io.MultiWriter(f, h), in); err != nil {
		b.Close()
		return nil, err
	}
	copy(b.sum[:], h.Sum(nil))
	return b, nil
}

// uploadSlot takes one of the MaxUploads slots, at most one per client; the release func
// gives it back.
func (s *Server) uploadSlot(r *http.Request) (func(), error) {
	client := clientAddr(r)
	s.uploadMu.Lock()
	if s.uploaders[client] {
		s.uploadMu.Unlock()
		return nil, errf(wire.ErrBusy, "this client already has an upload in progress", nil)
	}
	select {
	case s.uploads <- struct{}{}:
	default:
		s.uploadMu.Unlock()
		return nil, errf(wire.ErrBusy, fmt.Sprintf("%d uploads in progress; try again shortly", cap(s.uploads)), nil)
	}
	s.uploaders[client] = true
	s.uploadMu.Unlock()
	return func() {
		s.uploadMu.Lock()
		delete(s.uploaders, client)
		<-s.uploads
		s.uploadMu.Unlock()
	}, nil
}

// errTooSlow ends an upload that fell under MinUploadRate.
var errTooSlow = errors.New("upload too slow")

// rateReader fails once, after UploadGrace, the bytes read so far fall under
// MinUploadRate. A stalled client is cut when its connection next delivers (or by the
// server's ReadTimeout if it delivers nothing at all).
type rateReader struct {
	r     io.Reader
	n     int64
	start time.Time
	now   func() time.Time         // the clock (tests move it)
	rc    *http.ResponseController // moves the read deadline: UploadGrace of silence cuts it; nil in tests
}

func (r *rateReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += int64(n)
	if r.rc != nil && n > 0 {
		r.rc.SetReadDeadline(r.now().Add(UploadGrace))
	}
	if el := r.now().Sub(r.start); el > UploadGrace && float64(r.n) < MinUploadRate*el.Seconds() {
		return n, errf(wire.ErrInvalid, fmt.Sprintf("upload slower than %d KiB/s", MinUploadRate>>10), errTooSlow)
	}
	return n, err
}
