package device

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/messaging/blob"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// Request is a verified, signed request.
type Request struct {
	Env      *envelope.Envelope
	Decision auth.Decision
	// Payload is the verified payload; Close releases its spool file.
	Payload io.ReadSeeker
	Close   func()
	// Size is the payload length.
	Size int64
}

// verify runs every check on a signed request, cheapest first; the replay record is made
// only once the signature is known good, so forged envelopes cannot burn ids.
func (s *Service) verify(ctx context.Context, subj subjects.Subject, m *nats.Msg) (*Request, error) {
	env, err := envelope.Decode(m.Data)
	if err != nil {
		return nil, err
	}
	if err := env.Bind(subj, s.o.Fleet, s.o.Device, s.Groups()); err != nil {
		return nil, err
	}
	return s.Verify(ctx, env, m.Data, m.Header.Get(envelope.SignatureHeader))
}

// Verify checks an already bound envelope (the HTTP bridge calls it for POST
// /api/envelopes): time window, signature and policy, replay, payload.
func (s *Service) Verify(ctx context.Context, env *envelope.Envelope, raw []byte, sigHeader string) (*Request, error) {
	if err := env.CheckTime(s.o.Now()); err != nil {
		return nil, err
	}
	sig, err := envelope.DecodeSignature(sigHeader)
	if err != nil {
		return nil, envelope.Errorf(envelope.ErrUnauthorized, "%v", err)
	}
	target := auth.Target{Kind: env.Target, Group: env.Group}
	dec, err := s.o.Trust.Verify(raw, sig, auth.NamespaceEnvelope, env.Op, target, s.Groups())
	if err != nil {
		return nil, envelope.Errorf(envelope.ErrUnauthorized, "%v", err)
	}
	if dec.Basis == "possession" && env.Op != "apply" && env.Op != "validate" {
		return nil, envelope.Errorf(envelope.ErrUnauthorized, "an unprovisioned device accepts only apply and validate without a fleet trust file")
	}
	if err := s.o.Replay.Accept(env.ID, env.ExpiresAt); err != nil {
		if errors.Is(err, auth.ErrReplayed) {
			return nil, envelope.Errorf(envelope.ErrReplayed, "envelope %s was already accepted", env.ID)
		}
		return nil, envelope.Errorf(envelope.ErrInternal, "%v", err)
	}
	req := &Request{Env: env, Decision: dec, Close: func() {}}
	limit := s.limit()
	switch {
	case env.PayloadRef != nil:
		if env.PayloadRef.Size > limit {
			return nil, envelope.Errorf(envelope.ErrTooLarge, "payload is %d bytes (limit %d)", env.PayloadRef.Size, limit)
		}
		f, err := os.CreateTemp(s.o.SpoolDir, "fleetprov-payload-")
		if err != nil {
			return nil, envelope.Errorf(envelope.ErrInternal, "spooling payload: %v", err)
		}
		release := func() { f.Close(); os.Remove(f.Name()) }
		if err := blob.Fetch(ctx, s.o.Conn, env.PayloadRef.Subject, env.PayloadRef.Size, limit, 0, f); err != nil {
			release()
			return nil, envelope.Errorf(envelope.ErrInvalid, "fetching payload: %v", err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			release()
			return nil, envelope.Errorf(envelope.ErrInternal, "%v", err)
		}
		if err := checkDigest(f, env.PayloadSHA256); err != nil {
			release()
			return nil, err
		}
		f.Seek(0, io.SeekStart)
		req.Payload, req.Close, req.Size = f, release, env.PayloadRef.Size
	default:
		if int64(len(env.Payload)) > limit {
			return nil, envelope.Errorf(envelope.ErrTooLarge, "payload is %d bytes (limit %d)", len(env.Payload), limit)
		}
		if err := env.CheckPayload(env.Payload); err != nil {
			return nil, err
		}
		req.Payload, req.Size = bytes.NewReader(env.Payload), int64(len(env.Payload))
	}
	return req, nil
}

func (s *Service) limit() int64 {
	if s.o.Limits.MaxCompressed > 0 {
		return s.o.Limits.MaxCompressed
	}
	return bundle.DefaultMaxCompressed
}

func checkDigest(r io.Reader, want string) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return envelope.Errorf(envelope.ErrInternal, "hashing payload: %v", err)
	}
	if fmt.Sprintf("%x", h.Sum(nil)) != want {
		return envelope.Errorf(envelope.ErrInvalid, "payload sha256 mismatch")
	}
	return nil
}
