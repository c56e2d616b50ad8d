package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// Mark is the anti-rollback mark: the newest envelope the device took (apply or patch,
// pushed or durable). Durable desired state older than it, or equal to it, is not
// applied again.
type Mark struct {
	ID       string    `json:"id"`
	IssuedAt time.Time `json:"issued_at"`
}

// newer reports whether (issued, id) is newer than the mark.
func (m Mark) newer(issued time.Time, id string) bool {
	return envelope.NewerThan(issued, id, m.IssuedAt, m.ID)
}

// Candidate is one desired-state key's value as read from the hub: the envelope's bytes
// and its signature header.
type Candidate struct {
	Key string
	Raw []byte
	Sig string
}

// Desired actions: what the device did with its desired state.
const (
	DesiredNone    = "none"    // no key holds a valid envelope
	DesiredCurrent = "current" // the newest is the one it applied last
	DesiredOlder   = "older"   // the newest is older than what it applied: ignored
	DesiredBusy    = "busy"    // a job runs; it tries again when that ends
	DesiredStarted = "started" // a job runs the newest now
	DesiredRefused = "refused" // the newest could not be taken (Err says why)
)

// DesiredOutcome is the result of TakeDesired.
type DesiredOutcome struct {
	Action string
	// Newest is the newest envelope that verified (nil: none did).
	Newest *envelope.Envelope
	// Refused holds, per key, why its value was not a valid desired state for this device.
	Refused map[string]error
	// Err is why Newest could not be started (Action refused).
	Err error
	// Retry: Newest's payload could not be read from the hub; reading again may succeed.
	Retry bool
}

// AppliedMark returns the anti-rollback mark.
func (s *Service) AppliedMark() Mark {
	s.markMu.Lock()
	defer s.markMu.Unlock()
	return s.mark
}

// loadMark reads the mark from its file (none yet: the zero mark).
func (s *Service) loadMark() error {
	if s.o.MarkFile == "" {
		return nil
	}
	b, err := os.ReadFile(s.o.MarkFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the applied mark: %w", err)
	}
	if err := json.Unmarshal(b, &s.mark); err != nil {
		return fmt.Errorf("reading the applied mark %s: %w", s.o.MarkFile, err)
	}
	return nil
}

// setMark records m (fsynced before it returns) when it is newer than the mark.
func (s *Service) setMark(m Mark) error {
	s.markMu.Lock()
	defer s.markMu.Unlock()
	if !s.mark.newer(m.IssuedAt, m.ID) {
		return nil
	}
	if s.o.MarkFile != "" {
		b, _ := json.Marshal(m)
		if err := state.WriteFileAtomic(s.o.MarkFile, append(b, '\n'), 0o600); err != nil {
			return fmt.Errorf("recording the applied mark: %w", err)
		}
	}
	s.mark = m
	return nil
}

// notOlder is anti-rollback for a job's envelope, checked when the job starts: it must
// be newer than the newest envelope the device took (or be that very one, when a job is
// recovered).
func (s *Service) notOlder(env *envelope.Envelope) error {
	m := s.AppliedMark()
	if env.ID == m.ID || m.newer(env.IssuedAt, env.ID) {
		return nil
	}
	return wire.Errorf(wire.ErrReplayed, "envelope %s (issued %s) is older than the state this device applied (%s, issued %s): a device never goes back; check the publisher's clock, or push again",
		env.ID, env.IssuedAt.Format(time.RFC3339), m.ID, m.IssuedAt.Format(time.RFC3339))
}

// checkDesired checks one candidate as a desired state of this device, short of its
// signature: strict decode, durable apply of this fleet for this device, one of its
// groups or all, stored under the key its target names, not issued in the future.
func (s *Service) checkDesired(c Candidate, groups []string) (*envelope.Envelope, error) {
	env, err := envelope.Decode(c.Raw)
	if err != nil {
		return nil, err
	}
	if !env.Durable {
		return nil, wire.Errorf(wire.ErrInvalid, "envelope %s is not durable desired state", env.ID)
	}
	if env.Fleet != s.o.Fleet {
		return nil, wire.Errorf(wire.ErrWrongTarget, "envelope for fleet %s, device is in fleet %s", env.Fleet, s.o.Fleet)
	}
	var key string
	switch env.Target {
	case envelope.TargetDevice:
		key = subjects.DeviceKey(env.Device)
		if env.Device != s.o.Device {
			return nil, wire.Errorf(wire.ErrWrongTarget, "envelope targets device %s, not this device (%s)", env.Device, s.o.Device)
		}
	case envelope.TargetGroup:
		key = subjects.GroupKey(env.Group)
		if !slices.Contains(groups, env.Group) {
			return nil, wire.Errorf(wire.ErrWrongTarget, "envelope targets group %s; this device is in %v", env.Group, groups)
		}
	default:
		key = subjects.AllKey
	}
	if key != c.Key {
		return nil, wire.Errorf(wire.ErrWrongTarget, "envelope for key %s stored under %s", key, c.Key)
	}
	if err := env.CheckIssued(s.o.Now()); err != nil {
		return nil, err
	}
	return env, nil
}

// TakeDesired is a device's step towards its desired state: of the candidates (its own
// key, its groups' and the fleet's), the newest that is signed by a key this device's
// state trusts (exactly as for a pushed apply) is its desired state. When that is newer
// than the applied mark, it runs as an apply job like a pushed one (the same checks again
// at job start, the mark advanced once the job is recorded). Older or equal desired state
// changes nothing, and costs no signature check: re-reading what it applied is a no-op,
// and it never goes back to an older state.
func (s *Service) TakeDesired(ctx context.Context, cands []Candidate) DesiredOutcome {
	out := DesiredOutcome{Action: DesiredNone, Refused: map[string]error{}}
	groups := s.Groups()
	type candidate struct {
		c   Candidate
		env *envelope.Envelope
	}
	var found []candidate
	for _, c := range cands {
		env, err := s.checkDesired(c, groups)
		if err != nil {
			out.Refused[c.Key] = err
			continue
		}
		found = append(found, candidate{c, env})
	}
	// Newest first: the first that is not newer than the mark, or that verifies, decides.
	slices.SortFunc(found, func(a, b candidate) int {
		if a.env.Newer(b.env.IssuedAt, b.env.ID) {
			return -1
		}
		return 1
	})
	mark := s.AppliedMark()
	for _, f := range found {
		env := f.env
		if env.ID == mark.ID || !mark.newer(env.IssuedAt, env.ID) {
			out.Newest, out.Action = env, DesiredCurrent
			if env.ID != mark.ID {
				out.Action = DesiredOlder
			}
			return out
		}
		sig, err := envelope.DecodeSignature(f.c.Sig)
		if err != nil {
			out.Refused[f.c.Key] = wire.Errorf(wire.ErrUnauthorized, "%w", err)
			continue
		}
		dec, err := s.o.Trust.Verify(f.c.Raw, sig, auth.NamespaceEnvelope, env.Op, auth.Target{Kind: env.Target, Group: env.Group}, groups)
		if err != nil {
			out.Refused[f.c.Key] = err
			continue
		}
		out.Newest = env
		s.start(ctx, &out, &Request{Env: env, Decision: dec, Source: "desired", Close: func() {}, raw: f.c.Raw, sig: sig})
		return out
	}
	return out
}

// start runs a verified desired state newer than the mark as an apply job (submit: the
// job record first, then the mark).
func (s *Service) start(ctx context.Context, out *DesiredOutcome, r *Request) {
	env := r.Env
	if _, err := s.o.Jobs.Get(env.ID); err == nil {
		// Its job exists: the worker stopped after starting it and before recording the
		// mark. The job is the job's recovery's; it is not run twice.
		if err := s.setMark(Mark{ID: env.ID, IssuedAt: env.IssuedAt}); err != nil {
			s.log.Error("recording the applied mark", "job_id", env.ID, "err", err)
		}
		out.Action = DesiredCurrent
		return
	}
	var err error
	if env.PayloadRef == nil {
		err = s.inlinePayload(r)
	} else if s.o.Jobs.Active() != "" {
		// Busy: the object is not downloaded only to be dropped (the job's end brings
		// another read).
		err = wire.Errorf(wire.ErrBusy, "a job is running")
	} else {
		// Durable state outlives its window: the fetch is bounded by its size alone. A
		// hub too busy to serve it is tried again (Retry), not refused for good.
		err = s.fetchRef(ctx, r, rateDeadline(s.o.Now(), env.PayloadRef.Size))
		out.Retry = errors.Is(err, errFetch)
	}
	if err == nil {
		_, err = s.apply(ctx, r)
	}
	switch {
	case err == nil:
		out.Action = DesiredStarted
	case FromError(err).Code == wire.ErrBusy.Code:
		out.Action = DesiredBusy
	default:
		out.Action, out.Err = DesiredRefused, err
	}
}

// DesiredStatus is the device's signed status record for the hub: out's newest desired
// state and its job, the applied mark, and the active config's digest and drift.
func (s *Service) DesiredStatus(ctx context.Context, out DesiredOutcome) wire.Status {
	st := wire.Status{Device: s.o.Device, Fleet: s.o.Fleet, Groups: s.Groups(), Time: s.o.Now().UTC(), Identity: s.fingerprint}
	if st.Groups == nil {
		st.Groups = []string{}
	}
	m := s.AppliedMark()
	st.Applied, st.AppliedIssuedAt = m.ID, m.IssuedAt
	if cur, err := s.cachedCurrent(ctx); err == nil {
		st.ConfigSHA256, st.Drift = cur.Digest, len(cur.Drift) > 0
	}
	if out.Newest != nil {
		st.Desired, st.DesiredIssuedAt = out.Newest.ID, out.Newest.IssuedAt
		j, err := s.o.Jobs.Get(out.Newest.ID)
		switch {
		case err == nil:
			st.JobState, st.Code, st.Error, st.RollbackStatus = j.State, j.Code, j.Error, j.RollbackStatus
		case out.Err != nil:
			st.Code, st.Error = wire.Public(out.Err)
		case out.Action == DesiredBusy:
			st.Code, st.Error = wire.ErrBusy.Code, "a job is running; it takes this state when that job ends"
		case out.Action == DesiredOlder:
			st.Code, st.Error = wire.ErrReplayed.Code, fmt.Sprintf("older than the state this device applied (%s); never applied", m.ID)
		}
	}
	return st
}
