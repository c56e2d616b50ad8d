package device

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// chunks serves a payload reference from fuzz data, in chunks of fuzz-chosen sizes, the
// way a hostile publisher might: short, long, or nothing at all.
type chunks struct {
	data  []byte
	sizes []byte
}

func (c chunks) Fetch(ctx context.Context, ref wire.PayloadRef, limit int64, w io.Writer) error {
	if ref.Size > limit {
		return io.ErrShortBuffer
	}
	var off int64
	for i := 0; off < ref.Size; i++ {
		n := int64(1)
		if len(c.sizes) > 0 {
			n = int64(c.sizes[i%len(c.sizes)])
		}
		if n == 0 || off >= int64(len(c.data)) {
			return io.ErrUnexpectedEOF
		}
		end := min(off+n, int64(len(c.data)), ref.Size)
		if _, err := w.Write(c.data[off:end]); err != nil {
			return err
		}
		off = end
	}
	return nil
}

func (chunks) Serve(context.Context, string, []byte) (*wire.PayloadRef, error) { return nil, io.EOF }
func (chunks) MaxInline() int                                                  { return 1 << 20 }

// FuzzEnvelopeAndChunks decodes fuzzed envelopes, raw or re-signed by the admin (as
// validate, current or export), with
// inline payloads or payload references served in fuzzed chunks. Nothing may panic; a
// request is accepted only when its signature is valid and the payload the device holds
// is exactly what the envelope's digest names; and a refusal changes nothing.
func FuzzEnvelopeAndChunks(f *testing.F) {
	admin, line := configtest.NewKey(f)
	cfg := configtest.FixtureWithAdmin(f, "vm-full.config.toml", line)
	dev := provisiontest.New(f)
	dev.Provision(f, cfg)
	jm, _ := jobs.New(jobs.Options{})
	var payloads chunks
	svc := New(Options{Fleet: "f", Device: "d1", Prov: dev.Prov, Jobs: jm, Trust: &auth.Trust{State: dev.Prov.State()},
		Replay: &auth.ReplayGuard{Dir: filepath.Join(dev.StateDir, "replay")}, SpoolDir: f.TempDir(), Payloads: &payloads,
		Logger: slog.New(slog.DiscardHandler)})
	f.Cleanup(svc.Close)
	active := filepath.Join(dev.StateDir, "config", "config.toml")
	want := sha256.Sum256(cfg)

	f.Add([]byte(`{"v":1}`), false, false, []byte("version = 1\n"), []byte{3, 0})
	f.Add([]byte{}, true, true, []byte("version = 1\n"), []byte{5})
	f.Add([]byte{}, true, false, []byte("abc"), []byte{1, 2})
	f.Fuzz(func(t *testing.T, raw []byte, resign, byRef bool, payload, sizes []byte) {
		sig := base64.StdEncoding.EncodeToString(raw) // not a signature
		digestOK := false
		if resign {
			now := time.Now().UTC()
			// Re-signed as each op that cannot change the active state: validate, and
			// the read-only current and export (with whatever payload came along).
			op := "validate"
			if len(raw) > 0 {
				op = []string{"validate", "current", "export"}[int(raw[0]>>1)%3]
			}
			e := &envelope.Envelope{V: 1, ID: jobs.NewID(), Op: op, Fleet: "f", Target: envelope.TargetDevice, Device: "d1",
				IssuedAt: now, ExpiresAt: now.Add(time.Minute), ContentType: envelope.TypeTOML}
			// The digest names either the payload, or what raw says it is.
			e.PayloadSHA256 = envelope.Digest(payload)
			if len(raw) > 0 && raw[0]&1 == 1 {
				e.PayloadSHA256 = envelope.Digest(raw)
			}
			if byRef {
				e.PayloadRef = &wire.PayloadRef{Subject: "fleetprov.f.blob.x", Size: int64(len(payload))}
				payloads = chunks{data: payload, sizes: sizes}
			} else {
				e.Payload = payload
			}
			digestOK = e.PayloadSHA256 == envelope.Digest(payload)
			var err error
			if raw, err = e.Encode(); err != nil {
				t.Fatal(err)
			}
			if sig, err = envelope.Sign(raw, admin); err != nil {
				t.Fatal(err)
			}
		}
		bind := func(e *envelope.Envelope, fleet, dev string, groups []string) error {
			return e.BindDirect(fleet, dev, groups)
		}
		reply := svc.HandleEnvelope(context.Background(), raw, envelope.MaxSize, sig, "fuzz", bind, false)
		if reply.Accepted && !(resign && digestOK) {
			t.Fatalf("accepted without a valid signature over a matching payload: %+v", reply)
		}
		if got, err := os.ReadFile(active); err != nil || sha256.Sum256(got) != want {
			t.Fatal("the active config changed")
		}
	})
}
