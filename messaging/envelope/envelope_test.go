package envelope

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

func valid() *Envelope {
	now := time.Now().UTC()
	return &Envelope{V: 1, ID: "0193-abc", Op: "apply", Fleet: "prod", Target: TargetDevice, Device: "gw1",
		IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute), PayloadSHA256: Digest([]byte("x")), ContentType: TypeTOML, Payload: []byte("x")}
}

func TestDecodeStrict(t *testing.T) {
	good, _ := valid().Encode()
	if _, err := Decode(good); err != nil {
		t.Fatalf("Decode(valid) = %v", err)
	}
	obj := valid()
	obj.Payload, obj.Durable, obj.PayloadRef = nil, true, &wire.PayloadRef{Object: obj.PayloadSHA256, Size: 1}
	if b, _ := obj.Encode(); b == nil {
		t.Fatal("encoding an object reference")
	} else if _, err := Decode(b); err != nil {
		t.Fatalf("a durable envelope referencing its object is refused: %v", err)
	}
	withSecrets := valid()
	withSecrets.Op, withSecrets.Secrets = "patch", []byte("age-encryption.org/v1")
	b, _ := withSecrets.Encode()
	if _, err := Decode(b); err != nil {
		t.Fatalf("a patch with secrets is refused: %v", err)
	}
	mut := func(f func(e *Envelope)) []byte {
		e := valid()
		f(e)
		b, _ := e.Encode()
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want *wire.Error
	}{
		{"unknown_field", []byte(strings.Replace(string(good), `"v":1`, `"v":1,"extra":true`, 1)), wire.ErrInvalid},
		{"trailing_data", append(append([]byte{}, good...), []byte(` {}`)...), wire.ErrInvalid},
		{"version_2", mut(func(e *Envelope) { e.V = 2 }), wire.ErrInvalid},
		{"bad_id", mut(func(e *Envelope) { e.ID = "../x" }), wire.ErrInvalid},
		{"unsigned_op", mut(func(e *Envelope) { e.Op = "ping" }), wire.ErrInvalid},
		{"unknown_op", mut(func(e *Envelope) { e.Op = "reboot" }), wire.ErrInvalid},
		{"bad_fleet", mut(func(e *Envelope) { e.Fleet = "a.b" }), wire.ErrInvalid},
		{"too_long_lifetime", mut(func(e *Envelope) { e.ExpiresAt = e.IssuedAt.Add(11 * time.Minute) }), wire.ErrInvalid},
		{"expires_before_issued", mut(func(e *Envelope) { e.ExpiresAt = e.IssuedAt.Add(-time.Second) }), wire.ErrInvalid},
		{"bad_digest", mut(func(e *Envelope) { e.PayloadSHA256 = "abc" }), wire.ErrInvalid},
		{"bad_content_type", mut(func(e *Envelope) { e.ContentType = "text/html" }), wire.ErrInvalid},
		{"device_target_without_device", mut(func(e *Envelope) { e.Device = "" }), wire.ErrInvalid},
		{"group_target_with_device", mut(func(e *Envelope) { e.Target = TargetGroup; e.Group = "edge" }), wire.ErrInvalid},
		{"unknown_target", mut(func(e *Envelope) { e.Target = "fleet" }), wire.ErrInvalid},
		// Desired state is only ever applied: a durable envelope of another op would run
		// as an apply for a key allowed only that op.
		{"durable_validate", mut(func(e *Envelope) { e.Durable, e.Op = true, "validate" }), wire.ErrInvalid},
		{"durable_reply_to", mut(func(e *Envelope) { e.Durable, e.ReplyTo = true, "_INBOX.x" }), wire.ErrInvalid},
		{"ref_and_inline", mut(func(e *Envelope) { e.PayloadRef = &wire.PayloadRef{Subject: "fleetprov.prod.blob.x", Size: 1} }), wire.ErrInvalid},
		{"ref_other_fleet", mut(func(e *Envelope) {
			e.Payload = nil
			e.PayloadRef = &wire.PayloadRef{Subject: "fleetprov.dev.blob.x", Size: 1}
		}), wire.ErrInvalid},
		// An object in the hub's store is named by the payload's digest, and only durable
		// state refers to one.
		{"object_ref_not_durable", mut(func(e *Envelope) {
			e.Payload, e.PayloadRef = nil, &wire.PayloadRef{Object: e.PayloadSHA256, Size: 1}
		}), wire.ErrInvalid},
		{"object_ref_other_name", mut(func(e *Envelope) {
			e.Payload, e.Durable, e.PayloadRef = nil, true, &wire.PayloadRef{Object: strings.Repeat("0", 64), Size: 1}
		}), wire.ErrInvalid},
		{"object_ref_and_subject", mut(func(e *Envelope) {
			e.Payload, e.Durable, e.PayloadRef = nil, true, &wire.PayloadRef{Object: e.PayloadSHA256, Subject: "fleetprov.prod.blob.x", Size: 1}
		}), wire.ErrInvalid},
		{"durable_blob_ref", mut(func(e *Envelope) {
			e.Payload, e.Durable, e.PayloadRef = nil, true, &wire.PayloadRef{Subject: "fleetprov.prod.blob.x", Size: 1}
		}), wire.ErrInvalid},
		{"secrets_on_validate", mut(func(e *Envelope) { e.Op = "validate"; e.Secrets = []byte("age") }), wire.ErrInvalid},
		{"secrets_on_export", mut(func(e *Envelope) { e.Op = "export"; e.Secrets = []byte("age") }), wire.ErrInvalid},
		{"secrets_empty", []byte(strings.Replace(string(good), `"v":1`, `"v":1,"secrets":""`, 1)), wire.ErrInvalid},
		{"reply_to_wildcard", mut(func(e *Envelope) { e.Op = "current"; e.ReplyTo = "_INBOX.>" }), wire.ErrInvalid},
		{"reply_to_star", mut(func(e *Envelope) { e.Op = "current"; e.ReplyTo = "_INBOX.*" }), wire.ErrInvalid},
		{"reply_to_too_long", mut(func(e *Envelope) { e.Op = "current"; e.ReplyTo = "_INBOX." + strings.Repeat("a", 256) }), wire.ErrInvalid},
		{"not_json", []byte("{"), wire.ErrInvalid},
		{"too_large", make([]byte, MaxSize+1), wire.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Decode(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("Decode() error = %v; want %v", err, tc.want)
			}
		})
	}
}

func TestBindAndTime(t *testing.T) {
	e := valid()
	dev := subjects.Subject{Fleet: "prod", Kind: subjects.Device, Name: "gw1", Op: "apply"}
	if err := e.Bind(dev, "prod", "gw1", nil); err != nil {
		t.Errorf("Bind(own subject) = %v", err)
	}
	other := dev
	other.Name = "gw2"
	if err := e.Bind(other, "prod", "gw2", nil); !errors.Is(err, wire.ErrWrongTarget) {
		t.Errorf("device A's envelope on device B's subject: %v", err)
	}
	g := valid()
	g.Target, g.Device, g.Group = TargetGroup, "", "edge"
	grp := subjects.Subject{Fleet: "prod", Kind: subjects.Group, Name: "edge", Op: "apply"}
	if err := g.Bind(grp, "prod", "gw1", []string{"core"}); !errors.Is(err, wire.ErrWrongTarget) {
		t.Errorf("group envelope on a device outside the group: %v", err)
	}
	if err := g.Bind(grp, "prod", "gw1", []string{"edge"}); err != nil {
		t.Errorf("group envelope in group: %v", err)
	}
	wrongOp := dev
	wrongOp.Op = "validate"
	if err := e.Bind(wrongOp, "prod", "gw1", nil); !errors.Is(err, wire.ErrWrongTarget) {
		t.Errorf("op mismatch: %v", err)
	}
	if err := e.CheckTime(e.ExpiresAt.Add(ClockSkew + time.Second)); !errors.Is(err, wire.ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	if err := e.CheckTime(e.IssuedAt.Add(-ClockSkew - time.Second)); !errors.Is(err, wire.ErrExpired) {
		t.Errorf("issued in the future: %v", err)
	}
	if err := e.CheckTime(e.IssuedAt.Add(-time.Minute)); err != nil {
		t.Errorf("within skew: %v", err)
	}
	if err := e.CheckPayload([]byte("y")); !errors.Is(err, wire.ErrInvalid) {
		t.Errorf("digest mismatch: %v", err)
	}
}

func TestSignExactBytes(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	b, _ := valid().Encode()
	h, err := Sign(b, signer)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := DecodeSignature(h)
	if err != nil {
		t.Fatal(err)
	}
	allowed, _ := auth.ParseAllowedSigners(append([]byte("admin "), ssh.MarshalAuthorizedKey(signer.PublicKey())...))
	if _, err := allowed.Verify(b, sig, auth.NamespaceEnvelope, time.Now()); err != nil {
		t.Errorf("Verify() = %v", err)
	}
	// Re-encoding with different whitespace is different bytes: the signature is over
	// what was sent, so it no longer verifies.
	spaced := []byte(strings.Replace(string(b), `"v":1,`, `"v": 1,`, 1))
	if _, err := allowed.Verify(spaced, sig, auth.NamespaceEnvelope, time.Now()); !errors.Is(err, auth.ErrBadSignature) {
		t.Errorf("Verify(reformatted) = %v; want ErrBadSignature", err)
	}
}

func FuzzDecode(f *testing.F) {
	b, _ := valid().Encode()
	f.Add(b)
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			var ee *wire.Error
			if !errors.As(err, &ee) {
				t.Fatalf("Decode error %v is not an *wire.Error", err)
			}
			return
		}
		// Property: what Decode accepts re-encodes and decodes to the same envelope.
		again, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		e2, err := Decode(again)
		if err != nil || e2.ID != e.ID || e2.Op != e.Op || e2.Target != e.Target || !e2.ExpiresAt.Equal(e.ExpiresAt) {
			t.Fatalf("round trip: %+v, %v", e2, err)
		}
	})
}
