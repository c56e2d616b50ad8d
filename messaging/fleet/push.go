package fleet

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/secrets"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
	"golang.org/x/crypto/ssh"
)

// Device outcomes of a push. Where a device's job decides the outcome, the word is the
// job's own (core/record's state or failure code, the wire's busy code); the rest are
// the rollout's.
const (
	StatePending    = "pending"
	StateSent       = "sent"
	StateRunning    = string(record.Running)
	StateSucceeded  = string(record.Succeeded)
	StateFailed     = string(record.Failed)
	StateRolledBack = record.CodeRolledBack
	StateBusy       = "busy" // wire.ErrBusy's code
	StateRejected   = "rejected"
	StateNoReply    = "no-reply"
	StateSkipped    = "skipped"
	StateUnenrolled = EnrollmentUnenrolled // not in known_devices: nothing sent is trusted
	StateImpostor   = EnrollmentImpostor   // not signed by its enrolled key
	StateAccepted   = "accepted"           // with Detach: the job runs on, unwatched
)

// DeviceState is one device's progress in a push.
type DeviceState struct {
	Device         string                `json:"device"`
	State          string                `json:"state"`
	JobID          string                `json:"job_id,omitempty"`
	Stage          string                `json:"stage,omitempty"`
	Code           string                `json:"code,omitempty"`
	Error          string                `json:"error,omitempty"`
	RollbackStatus record.RollbackStatus `json:"rollback_status,omitempty"`
	Seconds        float64               `json:"seconds,omitempty"`
}

// Final reports whether the state will not change any more.
func (d DeviceState) Final() bool {
	switch d.State {
	case StatePending, StateSent, StateRunning:
		return false
	}
	return true
}

// failed reports whether the state counts against a rollout: anything but succeeded,
// accepted (detached), skipped or offline (durable: it converges when it comes back).
func (d DeviceState) failed() bool {
	switch d.State {
	case StateSucceeded, StateAccepted, StateSkipped, StateOffline:
		return false
	}
	return true
}

// Count is a number or a percentage of the targeted devices.
type Count struct {
	N       int
	Percent bool
}

// Of resolves the count against total (at least 1 when non-zero).
func (c Count) Of(total int) int {
	if !c.Percent {
		return c.N
	}
	n := total * c.N / 100
	if n == 0 && c.N > 0 {
		n = 1
	}
	return n
}

// PushOptions describe a rollout.
type PushOptions struct {
	Op      string // apply (default) or patch
	Target  Target
	Payload Payload
	// Batch is how many devices are in flight at once (0: all).
	Batch Count
	// BatchSleep is the pause between batches.
	BatchSleep time.Duration
	// Canary devices go first, alone; the rest follow only if all of them succeeded.
	Canary int
	// MaxFailures stops starting new devices once more than this many failed (nil: no
	// limit).
	MaxFailures *Count
	// Timeout bounds each device, from send to final result (default 5m).
	Timeout time.Duration
	// ReplyTimeout bounds the device's first answer (default 10s).
	ReplyTimeout time.Duration
	// Detach returns once every device accepted, with job ids.
	Detach bool
	// Discovery bounds finding the devices of a group or all (default 2s; quiet 300ms).
	Discovery time.Duration
	// Secrets, when set, are sealed to each device's enrolled identity key and sent in
	// its envelope; a device that is not enrolled gets nothing (state unenrolled).
	Secrets secrets.Values
	// Desired, when set, makes the push durable: each device's envelope is written as its
	// desired state on the hub instead of sent as a request, and a complete rollout to a
	// group or all also writes that group's or the fleet's key (devices that join later
	// converge on it). A device that does not take it within ReplyTimeout is offline, not
	// failed: it converges when it can. Patches are one-shot only.
	Desired *DesiredStore
	// Wait, with Desired: after the rollout, wait (up to Timeout) until this many devices
	// have converged; fewer is a failed push.
	Wait *Count
	// RevertOnFailure, with Desired: a rollout stopped by its failure budget (or canary)
	// gives the devices that took the new state their previous desired state back, as a
	// new envelope (devices never go back to an older one).
	RevertOnFailure bool
	// Resume, with Desired: a device whose own key already holds this payload and which
	// applied it successfully is not given it again (succeeded, "already converged"), so
	// the same push run again continues a stopped rollout where it stopped.
	Resume bool
}

// Summary is the outcome of a push.
type Summary struct {
	Devices []DeviceState  `json:"devices"`
	Counts  map[string]int `json:"counts"`
	Stopped string         `json:"stopped,omitempty"` // why the rollout stopped early
	// Durable says the desired state was stored on the hub; Reverted lists the devices a
	// stopped rollout returned to their previous desired state; Note is anything else the
	// operator should know.
	Durable  bool     `json:"durable,omitempty"`
	Reverted []string `json:"reverted,omitempty"`
	Note     string   `json:"note,omitempty"`
	// WaitUnmet says fewer devices converged than Wait asked for.
	WaitUnmet bool `json:"wait_unmet,omitempty"`
}

// OK reports whether every targeted device succeeded (or, detached, accepted; or, durable,
// is offline and will converge later), and a Wait was met.
func (s Summary) OK() bool {
	if len(s.Devices) == 0 || s.WaitUnmet || s.Stopped != "" {
		return false
	}
	for _, d := range s.Devices {
		if d.State != StateSucceeded && d.State != StateAccepted && !(s.Durable && d.State == StateOffline) {
			return false
		}
	}
	return true
}

// Push rolls a payload out to the target's devices. progress, when set, is called with a
// device's state on every change (from several goroutines, serialized).
func (c *Client) Push(ctx context.Context, o PushOptions, progress func(DeviceState)) (Summary, error) {
	if o.Op == "" {
		o.Op = "apply"
	}
	o.Payload.sum = envelope.Digest(o.Payload.Data)
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.ReplyTimeout <= 0 {
		o.ReplyTimeout = 10 * time.Second
	}
	if o.Discovery <= 0 {
		o.Discovery = 2 * time.Second
	}
	if c.signer == nil {
		return Summary{}, fmt.Errorf("%w: pushing needs a signing key", ErrInvalidOption)
	}
	// Secrets go only to keys enrolled before this push: first use (tofu) during its
	// discovery or replies would trust whatever answered, an impostor included.
	var enrolled map[string]ssh.PublicKey
	if o.Secrets != nil && c.known != nil {
		enrolled = c.known.snapshot()
	}
	devices := append([]string(nil), o.Target.Devices...)
	if len(devices) == 0 {
		found, err := c.Discover(ctx, o.Target, 300*time.Millisecond, o.Discovery)
		if err != nil && o.Desired != nil && errors.Is(err, ErrNoReply) {
			err = nil // offline devices the hub knows still get their desired state
		}
		if err != nil {
			return Summary{}, err
		}
		for _, p := range found {
			devices = append(devices, p.Device)
		}
	}
	var du *durable
	var groupEnv *envelope.Envelope
	if o.Desired != nil {
		var err error
		if du, devices, groupEnv, err = c.startDurable(ctx, o, devices); err != nil {
			return Summary{}, err
		}
		defer du.statuses.stop()
	}
	sort.Strings(devices)
	for _, d := range devices {
		if !subjects.ValidToken(d) {
			return Summary{}, fmt.Errorf("%w: device id %q", ErrInvalidOption, d)
		}
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var err error
	var prep *Prepared // one-shot requests only: durable state carries its payload inline
	if du == nil {
		if prep, err = c.Prepare(pctx, o.Payload); err != nil {
			return Summary{}, err
		}
		defer prep.Close()
	}
	var hub *eventHub
	if c.http == nil {
		if hub, err = c.newEventHub(); err != nil {
			return Summary{}, err
		}
		defer hub.stop()
	}

	var mu sync.Mutex
	states := map[string]*DeviceState{}
	for _, d := range devices {
		states[d] = &DeviceState{Device: d, State: StatePending}
	}
	update := func(d string, f func(*DeviceState)) {
		mu.Lock()
		defer mu.Unlock()
		f(states[d])
		if progress != nil {
			progress(*states[d])
		}
	}
	failures := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, s := range states {
			if s.Final() && s.failed() {
				n++
			}
		}
		return n
	}
	runBatch := func(batch []string) {
		var wg sync.WaitGroup
		for _, d := range batch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if du != nil {
					c.pushDesired(ctx, o, du, hub, enrolled, d, update)
					return
				}
				c.pushOne(ctx, o, prep, hub, enrolled, d, update)
			}()
		}
		wg.Wait()
	}
	maxFail := -1
	if o.MaxFailures != nil {
		maxFail = o.MaxFailures.Of(len(devices))
	}
	rest := devices
	sum := Summary{}
	if o.Canary > 0 && len(rest) > 0 {
		n := min(o.Canary, len(rest))
		runBatch(rest[:n])
		canaries := rest[:n]
		rest = rest[n:]
		proven := func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, d := range canaries {
				if states[d].State == StateSucceeded {
					return true
				}
			}
			return false
		}
		if failures() > 0 || (du != nil && !proven()) {
			why := "a canary device failed"
			if failures() == 0 {
				why = "no canary device took the new state (offline)"
			}
			sum.Stopped = fmt.Sprintf("%s; %d device(s) not started", why, len(rest))
			for _, d := range rest {
				update(d, func(s *DeviceState) { s.State = StateSkipped })
			}
			rest = nil
		}
	}
	size := o.Batch.Of(len(devices))
	if size <= 0 {
		size = len(rest)
	}
	for len(rest) > 0 {
		if maxFail >= 0 && failures() > maxFail {
			sum.Stopped = fmt.Sprintf("more than %d device(s) failed; %d device(s) not started", maxFail, len(rest))
			for _, d := range rest {
				update(d, func(s *DeviceState) { s.State = StateSkipped })
			}
			break
		}
		n := min(size, len(rest))
		runBatch(rest[:n])
		rest = rest[n:]
		if len(rest) > 0 && o.BatchSleep > 0 {
			select {
			case <-time.After(o.BatchSleep):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	sum.Counts = map[string]int{}
	for _, d := range devices {
		sum.Devices = append(sum.Devices, *states[d])
		sum.Counts[states[d].State]++
	}
	if du != nil && ctx.Err() == nil {
		sum.Durable = true
		if err := c.finishDurable(ctx, o, du, groupEnv, &sum); err != nil {
			return sum, err
		}
		if o.Wait != nil && sum.Stopped == "" {
			want := o.Wait.Of(len(devices))
			c.waitConverged(ctx, du, &sum, want, o.Timeout)
			if got := sum.Counts[StateSucceeded]; got < want {
				sum.WaitUnmet = true
				sum.Note = strings.TrimPrefix(sum.Note+"; ", "; ") + fmt.Sprintf("%d of %d device(s) converged within %s; --wait asked for %d", got, len(devices), o.Timeout, want)
			}
		}
	}
	return sum, ctx.Err()
}

// sealFor seals values to one device's identity key as enrolled before the push began.
// A device that was not in known_devices then cannot receive secrets, whatever the
// first-use policy: its key would be whatever answered.
func (c *Client) sealFor(enrolled map[string]ssh.PublicKey, dev string, v secrets.Values) ([]byte, error) {
	if enrolled == nil {
		return nil, fmt.Errorf("%w: secrets need the device's enrolled key (known_devices)", ErrUnenrolled)
	}
	pub, ok := enrolled[c.fleet+"/"+dev]
	if !ok {
		return nil, fmt.Errorf("%w: %s cannot receive secrets until it is enrolled (publisher enroll --device %s)", ErrUnenrolled, dev, dev)
	}
	r, err := secrets.Recipient(pub)
	if err != nil {
		return nil, err
	}
	return secrets.Seal(v, r)
}

// sealInto seals v (when set) into env for dev; on failure it returns the device's state
// (unenrolled, or failed) and why.
func (c *Client) sealInto(env *envelope.Envelope, enrolled map[string]ssh.PublicKey, dev string, v secrets.Values) (string, error) {
	if v == nil {
		return "", nil
	}
	sealed, err := c.sealFor(enrolled, dev, v)
	if err != nil {
		if errors.Is(err, ErrUnenrolled) {
			return StateUnenrolled, err
		}
		return StateFailed, err
	}
	env.Secrets = sealed
	return "", nil
}

// pushOne delivers one device's envelope and follows its job to the end.
func (c *Client) pushOne(ctx context.Context, o PushOptions, prep *Prepared, hub *eventHub, enrolled map[string]ssh.PublicKey, dev string, update func(string, func(*DeviceState))) {
	t0 := time.Now()
	done := func(f func(*DeviceState)) {
		update(dev, func(s *DeviceState) { f(s); s.Seconds = time.Since(t0).Round(time.Millisecond).Seconds() })
	}
	env := c.NewEnvelope(o.Op, dev, "", o.Payload)
	prep.Attach(env)
	if st, err := c.sealInto(env, enrolled, dev, o.Secrets); err != nil {
		done(func(s *DeviceState) { s.State, s.Error = st, err.Error() })
		return
	}
	subj, _ := subjects.Build(subjects.Subject{Fleet: c.fleet, Kind: subjects.Device, Name: dev, Op: o.Op})
	var events <-chan wire.EventMsg
	var stop func()
	var err error
	if hub != nil {
		events, stop = hub.watch(dev, env.ID)
	} else if events, stop, err = c.WatchJob(dev, env.ID); err != nil {
		done(func(s *DeviceState) { s.State, s.Error = StateFailed, err.Error() })
		return
	}
	defer stop()
	update(dev, func(s *DeviceState) { s.State, s.JobID = StateSent, env.ID })
	reply, err := c.Send(ctx, subj, env, o.ReplyTimeout)
	switch {
	case errors.Is(err, ErrNoReply):
		done(func(s *DeviceState) { s.State, s.Error = StateNoReply, "the device did not answer" })
		return
	case errors.Is(err, ErrImpostor):
		done(func(s *DeviceState) { s.State, s.Error = StateImpostor, err.Error() })
		return
	case errors.Is(err, ErrUnenrolled):
		done(func(s *DeviceState) { s.State, s.Error = StateUnenrolled, err.Error() })
		return
	case err != nil:
		done(func(s *DeviceState) { s.State, s.Error = StateFailed, err.Error() })
		return
	case !reply.Accepted:
		st := StateRejected
		if reply.Code == wire.ErrBusy.Code {
			st = StateBusy
		}
		done(func(s *DeviceState) { s.State, s.Code, s.Error = st, reply.Code, reply.Error })
		return
	}
	if o.Detach {
		done(func(s *DeviceState) { s.State = StateAccepted })
		return
	}
	update(dev, func(s *DeviceState) { s.State = StateRunning })
	timeout := time.NewTimer(o.Timeout)
	defer timeout.Stop()
	for {
		select {
		case ev, ok := <-events:
			if ok && ev.Event != nil {
				update(dev, func(s *DeviceState) { s.Stage = stageText(*ev.Event) })
				continue
			}
			var j *record.Job
			if ok && ev.Done {
				j = ev.Job
			}
			if j == nil {
				// The final event was missed: ask the device.
				got, err := c.Job(ctx, dev, env.ID, o.ReplyTimeout)
				if err != nil {
					done(func(s *DeviceState) { s.State, s.Error = StateNoReply, "lost track of the job: "+err.Error() })
					return
				}
				j = &got
			}
			done(func(s *DeviceState) { finish(s, *j) })
			return
		case <-timeout.C:
			if j, err := c.Job(ctx, dev, env.ID, o.ReplyTimeout); err == nil && j.State.Finished() {
				done(func(s *DeviceState) { finish(s, j) })
				return
			}
			done(func(s *DeviceState) { s.State, s.Error = StateFailed, fmt.Sprintf("no result within %s", o.Timeout) })
			return
		case <-ctx.Done():
			done(func(s *DeviceState) { s.State, s.Error = StateFailed, ctx.Err().Error() })
			return
		}
	}
}

func finish(s *DeviceState, j record.Job) {
	s.Stage, s.Code, s.Error, s.RollbackStatus = j.Stage, j.Code, j.Error, j.RollbackStatus
	switch {
	case j.State == record.Succeeded:
		s.State = StateSucceeded
	case j.Result != nil && j.Result.RolledBack:
		s.State = StateRolledBack
	default:
		s.State = StateFailed
	}
}

// stageText is what the live view shows of a device's latest event: the step, and for
// health waits and checks what is awaited and the latest result.
func stageText(e record.Event) string {
	if (e.Step == "health-wait" || e.Step == "health-check") && e.Message != "" {
		msg, _, _ := strings.Cut(e.Message, "\n")
		if e.Service != "" && !strings.HasPrefix(msg, e.Service) {
			msg = e.Service + ": " + msg
		}
		return e.Step + ": " + msg
	}
	return e.Step
}
