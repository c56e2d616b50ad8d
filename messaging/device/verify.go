package device

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// Request is a verified, signed request.
type Request struct {
	Env      *envelope.Envelope
	Decision auth.Decision
	// Source is the transport it came by (nats, http).
	Source string
	// Payload is the verified payload; Close releases its spool file.
	Payload io.ReadSeeker
	Close   func()
	// Size is the payload length.
	Size int64
	// raw and sig are what was verified, kept so the job can check again at its start.
	raw, sig []byte
}

// Binder checks that a decoded envelope was meant for this device by the way it came
// (the NATS subject, or a direct HTTP post).
type Binder func(env *envelope.Envelope, fleet, device string, groups []string) error

// HandleEnvelope is the whole life of a signed envelope on any transport: decode (at
// most max bytes), bind, verify, dispatch. Refusals come back as a refused reply with
// the code FromError gives; the cause is logged.
//
// replyBound says the transport checked that a read-only request's answer goes to the
// requester itself (envelope.BindReply, NATS): such a request needs no replay record,
// since sending it again only answers the same requester.
func (s *Service) HandleEnvelope(ctx context.Context, raw []byte, max int, sigHeader, source string, bind Binder, replyBound bool) wire.Reply {
	var id, op string
	reply, err := s.handleEnvelope(ctx, raw, max, sigHeader, source, bind, replyBound, &id, &op)
	if err != nil {
		werr := FromError(err)
		switch {
		case werr.Code == wire.ErrInternal.Code:
			s.log.Error("request failed", "source", source, "job_id", id, "op", op, "code", werr.Code, "err", err)
		case s.refusals.Allow():
			// The envelope id is the job id of the job it would have started. Refusals are
			// logged at most refusalLogRate a second: a flood must not become a log flood.
			s.log.Warn("request refused", "source", source, "job_id", id, "op", op, "code", werr.Code, "err", err)
		}
		reply = wire.Refuse(s.o.Device, werr)
	}
	reply.Device, reply.Fleet, reply.Request = s.o.Device, s.o.Fleet, id
	return reply
}

func (s *Service) handleEnvelope(ctx context.Context, raw []byte, max int, sigHeader, source string, bind Binder, replyBound bool, id, op *string) (wire.Reply, error) {
	env, err := envelope.DecodeLimit(raw, max)
	if err != nil {
		return wire.Reply{}, err
	}
	*id, *op = env.ID, env.Op
	if env.Durable {
		// Durable desired state outlives its window only when read from the hub's store;
		// sent as a request it would skip the replay guard's memory of it (a group's
		// envelope is run by no device as a job) and the anti-rollback check.
		return wire.Reply{}, wire.Errorf(wire.ErrInvalid, "envelope %s is durable desired state: devices read it from the hub's store, it is not sent as a request", env.ID)
	}
	if err := bind(env, s.o.Fleet, s.o.Device, s.Groups()); err != nil {
		return wire.Reply{}, err
	}
	req, err := s.verify(ctx, env, raw, sigHeader, replyBound && envelope.ReadOnly(env.Op))
	if err != nil {
		return wire.Reply{}, err
	}
	req.Source = source
	return s.Handle(ctx, req)
}

// verify runs every check on a bound envelope, cheapest first: time window, signature
// and policy, replay, payload. The replay record is made only once the signature is
// known good, so forged envelopes cannot burn ids.
func (s *Service) verify(ctx context.Context, env *envelope.Envelope, raw []byte, sigHeader string, noReplayRecord bool) (*Request, error) {
	if err := env.CheckTime(s.o.Now()); err != nil {
		return nil, err
	}
	sig, err := envelope.DecodeSignature(sigHeader)
	if err != nil {
		return nil, wire.Errorf(wire.ErrUnauthorized, "%w", err)
	}
	target := auth.Target{Kind: env.Target, Group: env.Group}
	dec, err := s.o.Trust.Verify(raw, sig, auth.NamespaceEnvelope, env.Op, target, s.Groups())
	if err != nil {
		return nil, err
	}
	// A read-only request bound to its requester's inbox needs no fsynced record.
	if !noReplayRecord {
		if err := s.o.Replay.Accept(env.ID, env.ExpiresAt); err != nil {
			if errors.Is(err, auth.ErrReplayed) {
				return nil, wire.Errorf(wire.ErrReplayed, "envelope %s was already accepted", env.ID)
			}
			if errors.Is(err, auth.ErrReplayFull) {
				return nil, wire.Wrap(wire.ErrBusy, "too many recent envelopes; try again in a few minutes", err)
			}
			return nil, wire.Wrap(wire.ErrInternal, "recording the envelope id", err)
		}
	}
	req := &Request{Env: env, Decision: dec, Close: func() {}, raw: raw, sig: sig}
	if env.PayloadRef == nil {
		if err := s.inlinePayload(req); err != nil {
			return nil, err
		}
		return req, nil
	}
	// A slow sender must not stretch the window between this check and the job: the
	// fetch ends by the envelope's expiry and runs at MinFetchRate at least.
	if err := s.fetchRef(ctx, req, fetchDeadline(s.o.Now(), env.ExpiresAt, env.PayloadRef.Size)); err != nil {
		return nil, err
	}
	return req, nil
}

// errFetch marks a payload reference that could not be read (as opposed to one that was
// read and is wrong): reading it again later may succeed.
var errFetch = errors.New("fetching the payload")

// fetchRef spools the payload r's envelope references, by deadline, and checks its size
// against the device's limit and its digest; r then holds it (r.Close removes it).
func (s *Service) fetchRef(ctx context.Context, r *Request, deadline time.Time) error {
	env := r.Env
	if limit := s.limit(); env.PayloadRef.Size > limit {
		return wire.Errorf(wire.ErrTooLarge, "payload is %d bytes (limit %d)", env.PayloadRef.Size, limit)
	}
	if s.o.Payloads == nil {
		return wire.Errorf(wire.ErrInvalid, "payload references need a NATS connection; send the payload inline")
	}
	f, err := os.CreateTemp(s.o.SpoolDir, "fleetprov-payload-")
	if err != nil {
		return wire.Wrap(wire.ErrInternal, "spooling payload", err)
	}
	release := func() { f.Close(); os.Remove(f.Name()) }
	fctx, cancel := context.WithDeadline(ctx, deadline)
	err = s.o.Payloads.Fetch(fctx, *env.PayloadRef, s.limit(), f)
	cancel()
	if err != nil {
		release()
		return wire.Wrap(wire.ErrInvalid, "fetching the payload reference failed (timed out, too slow, short or oversized)", fmt.Errorf("%w: %w", errFetch, err))
	}
	if err := checkDigest(f, env.PayloadSHA256); err != nil {
		release()
		return err
	}
	r.Payload, r.Close, r.Size = f, release, env.PayloadRef.Size
	return nil
}

// MinFetchRate is the slowest a payload reference may be fetched (bytes per second),
// after a FetchGrace head start: 32 MiB takes at most 30 s + 8.5 min at this rate, and
// the envelope's expiry (10 min at most) bounds it anyway.
const (
	MinFetchRate = 64 << 10
	FetchGrace   = 30 * time.Second
)

// fetchDeadline is the earlier of the envelope's expiry and the minimum-rate deadline.
func fetchDeadline(now, expires time.Time, size int64) time.Time {
	if byRate := rateDeadline(now, size); byRate.Before(expires) {
		return byRate
	}
	return expires
}

// rateDeadline is when a fetch of size bytes begun at now has run at MinFetchRate.
func rateDeadline(now time.Time, size int64) time.Time {
	return now.Add(FetchGrace + time.Duration(size/MinFetchRate)*time.Second)
}

// recheck is a verified envelope's authorization again, at job start under the device
// lock: still within its lifetime, and its signature still accepted by the device's
// trust as the state is now (a first-boot basis needs the device still unprovisioned;
// an admin must still be an admin of the active config).
func (s *Service) recheck(r *Request) func() error {
	return func() error {
		// Durable desired state (only ever from the hub's store: requests refuse it) is
		// held to its issue time, not its window.
		check := r.Env.CheckTime
		if r.Env.Durable {
			check = r.Env.CheckIssued
		}
		if err := check(s.o.Now()); err != nil {
			return err
		}
		if err := s.notOlder(r.Env); err != nil {
			return err
		}
		target := auth.Target{Kind: r.Env.Target, Group: r.Env.Group}
		_, err := s.o.Trust.Verify(r.raw, r.sig, auth.NamespaceEnvelope, r.Env.Op, target, s.Groups())
		return err
	}
}

func (s *Service) limit() int64 {
	if s.o.Limits.MaxCompressed > 0 {
		return s.o.Limits.MaxCompressed
	}
	return bundle.DefaultMaxCompressed
}

// checkDigest hashes f from its start and leaves it rewound.
func checkDigest(f io.ReadSeeker, want string) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return wire.Wrap(wire.ErrInternal, "rewinding payload", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return wire.Wrap(wire.ErrInternal, "hashing payload", err)
	}
	if hex.EncodeToString(h.Sum(nil)) != want {
		return wire.Errorf(wire.ErrInvalid, "payload sha256 mismatch")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return wire.Wrap(wire.ErrInternal, "rewinding payload", err)
	}
	return nil
}

// inlinePayload makes r's inline payload its input, once it is within the limit and
// matches the envelope's digest.
func (s *Service) inlinePayload(r *Request) error {
	env := r.Env
	if limit := s.limit(); int64(len(env.Payload)) > limit {
		return wire.Errorf(wire.ErrTooLarge, "payload is %d bytes (limit %d)", len(env.Payload), limit)
	}
	if err := env.CheckPayload(env.Payload); err != nil {
		return err
	}
	r.Payload, r.Size = bytes.NewReader(env.Payload), int64(len(env.Payload))
	return nil
}
