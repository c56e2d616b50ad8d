package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// StateOffline is a durable push's device that did not take its desired state within the
// reply timeout (off, cut off from the hub, or busy): the state is stored, and it converges
// when it can. It does not count as a failure.
const StateOffline = "offline"

// statusHub follows the devices' status records over one subscription: it routes each
// to the device's push, and keeps the last one of each device (for --wait).
type statusHub struct {
	mu      sync.Mutex
	subs    map[string]chan DeviceStatus
	last    map[string]DeviceStatus
	changed chan struct{} // a record arrived since the last look
	stop    func()
}

func (d *DesiredStore) newStatusHub() (*statusHub, error) {
	h := &statusHub{subs: map[string]chan DeviceStatus{}, last: map[string]DeviceStatus{}, changed: make(chan struct{}, 1)}
	stop, err := d.WatchStatus(func(s DeviceStatus) {
		if s.Enrollment == EnrollmentImpostor {
			return
		}
		h.mu.Lock()
		ch := h.subs[s.Device]
		h.last[s.Device] = s
		h.mu.Unlock()
		if ch != nil {
			select {
			case ch <- s:
			default:
			}
		}
		select {
		case h.changed <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	if err := d.c.nc.Flush(); err != nil {
		stop()
		return nil, err
	}
	h.stop = stop
	return h, nil
}

// merge takes records read from the stream where the watch has none newer.
func (h *statusHub) merge(sts map[string]DeviceStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for dev, s := range sts {
		if cur, ok := h.last[dev]; s.Enrollment != EnrollmentImpostor && (!ok || s.Time.After(cur.Time)) {
			h.last[dev] = s
		}
	}
}

func (h *statusHub) get(dev string) (DeviceStatus, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.last[dev]
	return s, ok
}

// statusJob is the job record a status record describes (for finish).
func statusJob(s DeviceStatus) record.Job {
	return record.Job{State: s.JobState, Code: s.Code, Error: s.Error, RollbackStatus: s.RollbackStatus,
		Result: &record.Result{RolledBack: s.RollbackStatus != ""}}
}

func (h *statusHub) watch(dev string) (<-chan DeviceStatus, func()) {
	ch := make(chan DeviceStatus, 16)
	h.mu.Lock()
	h.subs[dev] = ch
	h.mu.Unlock()
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, dev)
		h.mu.Unlock()
	}
}

// durable is one durable push: the store, the status routing, what each device desired
// before (for a revert), and the envelope each device was given.
type durable struct {
	d        *DesiredStore
	statuses *statusHub
	mu       sync.Mutex
	prev     map[string]*DesiredEntry // device -> its desired state before this push (nil: none)
	sent     map[string]string        // device -> envelope id
	fallback *DesiredEntry            // with RevertOnFailure: the newest of the target group's and the fleet's keys before
	status   map[string]DeviceStatus  // for --all or Resume: the statuses at the start
	desired  map[string]DesiredEntry  // for RevertOnFailure or Resume: every key's state at the start
}

// startDurable prepares a durable rollout: its targets, the group's or fleet's envelope
// (stamped before any device's, so it never overrides them; nil for a list of devices),
// what a revert falls back to, and the status routing. The caller stops the routing.
func (c *Client) startDurable(ctx context.Context, o PushOptions, devices []string) (*durable, []string, *envelope.Envelope, error) {
	if o.Op != "apply" || o.Detach {
		return nil, nil, nil, fmt.Errorf("%w: durable desired state is a whole config (apply, not %s, and not detached)", ErrInvalidOption, o.Op)
	}
	du := &durable{d: o.Desired, prev: map[string]*DesiredEntry{}, sent: map[string]string{}}
	var err error
	if o.Target.All || o.Resume {
		if du.status, err = o.Desired.Statuses(ctx); err != nil {
			return nil, nil, nil, err
		}
	}
	devices = durableTargets(o, devices, du.status)
	key := subjects.AllKey
	if o.Target.Group != "" {
		key = subjects.GroupKey(o.Target.Group)
	}
	if err := o.Desired.offload(ctx, o.Payload); err != nil {
		return nil, nil, nil, err
	}
	groupEnv, err := o.Desired.Stamp(key, o.Payload)
	if err == nil {
		_, err = o.Desired.encode(groupEnv) // it fits durable desired state
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if len(o.Target.Devices) > 0 {
		groupEnv = nil
	}
	if o.RevertOnFailure || o.Resume {
		// What every device had, read once (one ordered consumer), not a request a device.
		if du.desired, err = o.Desired.All(ctx); err != nil {
			return nil, nil, nil, err
		}
		c.keepSigned(du.desired)
	}
	if o.RevertOnFailure {
		for _, k := range []string{subjects.AllKey, key} {
			if e, ok := du.desired[k]; ok && (du.fallback == nil || e.Env.Newer(du.fallback.Env.IssuedAt, du.fallback.Env.ID)) {
				du.fallback = &e
			}
		}
	}
	if du.statuses, err = o.Desired.newStatusHub(); err != nil {
		return nil, nil, nil, err
	}
	return du, devices, groupEnv, nil
}

// durableTargets adds, for --all, the devices the hub's status stream knows (sts) to the
// discovered ones (offline ones included: their desired state is written all the same),
// except impostors and, with known devices, unenrolled ones.
func durableTargets(o PushOptions, devices []string, sts map[string]DeviceStatus) []string {
	// Only --all: a status record's groups are the device's own claim, and a group's
	// targets must be the devices the hub lets hear that group (they answered its
	// discovery). Offline members of a group converge on the group's key, written when
	// the rollout completes.
	if !o.Target.All {
		return devices
	}
	for dev, s := range sts {
		if s.Enrollment == "" || s.Enrollment == EnrollmentEnrolled {
			if !slices.Contains(devices, dev) {
				devices = append(devices, dev)
			}
		}
	}
	return devices
}

// pushDesired writes one device's durable desired state and follows its job: by its
// events, or its status record on the hub (which also carries a refusal). A device that
// shows nothing within the reply timeout is offline.
func (c *Client) pushDesired(ctx context.Context, o PushOptions, du *durable, hub *eventHub, enrolled map[string]ssh.PublicKey, dev string, update func(string, func(*DeviceState))) {
	t0 := time.Now()
	done := func(f func(*DeviceState)) {
		update(dev, func(s *DeviceState) { f(s); s.Seconds = time.Since(t0).Round(time.Millisecond).Seconds() })
	}
	fail := func(err error) { done(func(s *DeviceState) { s.State, s.Error = StateFailed, err.Error() }) }
	key := subjects.DeviceKey(dev)
	env, err := du.d.Stamp(key, o.Payload)
	if err != nil {
		fail(err)
		return
	}
	if st, err := c.sealInto(env, enrolled, dev, o.Secrets); err != nil {
		done(func(s *DeviceState) { s.State, s.Error = st, err.Error() })
		return
	}
	// What it had, for a revert or a resume (read at the start).
	prev, ok := du.desired[key]
	if st, known := du.status[dev]; o.Resume && ok && known && prev.Env.PayloadSHA256 == env.PayloadSHA256 &&
		st.Enrollment != EnrollmentImpostor && st.Applied == prev.Env.ID && st.JobState == record.Succeeded {
		// Resumed: this device took this payload already.
		done(func(s *DeviceState) { s.State, s.JobID, s.Stage = StateSucceeded, prev.Env.ID, "already converged" })
		return
	}
	events, stop := hub.watch(dev, env.ID)
	defer stop()
	statuses, stopSt := du.statuses.watch(dev)
	defer stopSt()
	update(dev, func(s *DeviceState) { s.State, s.JobID = StateSent, env.ID })
	if _, err := du.d.Put(ctx, key, env); err != nil {
		fail(err)
		return
	}
	du.mu.Lock()
	du.sent[dev] = env.ID
	if ok {
		du.prev[dev] = &prev
	}
	du.mu.Unlock()
	first := time.NewTimer(o.ReplyTimeout)
	defer first.Stop()
	timeout := time.NewTimer(o.Timeout)
	defer timeout.Stop()
	for {
		select {
		case ev, ok := <-events:
			first.Stop()
			if ok && ev.Event != nil {
				update(dev, func(s *DeviceState) { s.State, s.Stage = StateRunning, stageText(*ev.Event) })
				continue
			}
			if ok && ev.Done && ev.Job != nil {
				done(func(s *DeviceState) { finish(s, *ev.Job) })
				return
			}
			events = nil // closed without a final record: the status record will tell
		case st := <-statuses:
			if st.Desired != env.ID {
				continue
			}
			first.Stop()
			switch {
			case st.Enrollment == EnrollmentUnenrolled && c.tofu:
				// A status record never enrols a device; with --tofu its signed job
				// events do (on first use), and they may come after this record.
				continue
			case st.Enrollment == EnrollmentUnenrolled:
				done(func(s *DeviceState) {
					s.State, s.Error = StateUnenrolled, "its status is signed by a key that is not enrolled (publisher enroll --device "+dev+")"
				})
				return
			case st.JobState == "" && st.Code == wire.ErrBusy.Code:
				update(dev, func(s *DeviceState) { s.Stage = "waiting: " + st.Error })
			case st.JobState == "" && st.Code != "":
				done(func(s *DeviceState) { s.State, s.Code, s.Error = StateRejected, st.Code, st.Error })
				return
			case st.JobState.Finished():
				done(func(s *DeviceState) { finish(s, statusJob(st)) })
				return
			default:
				update(dev, func(s *DeviceState) { s.State = StateRunning })
			}
		case <-first.C:
			done(func(s *DeviceState) {
				if s.State == StateSent {
					s.State, s.Error = StateOffline, "desired state stored; it converges when it comes online"
				}
			})
			return
		case <-timeout.C:
			fail(fmt.Errorf("no result within %s (the desired state stays stored)", o.Timeout))
			return
		case <-ctx.Done():
			fail(ctx.Err())
			return
		}
	}
}

// unproven says why a rollout that was not stopped still does not prove its state for the
// devices that join later ("" when it does): more devices failed than --max-failures
// allows (none without it), or a canary rollout had no device take it.
func unproven(o PushOptions, devices []DeviceState) string {
	budget := 0
	if o.MaxFailures != nil {
		budget = o.MaxFailures.Of(len(devices))
	}
	took, failed := false, []string{}
	for _, d := range devices {
		switch {
		case d.State == StateSucceeded:
			took = true
		case d.failed():
			failed = append(failed, d.Device+" ("+d.State+")")
		}
	}
	switch {
	case len(failed) > budget:
		return fmt.Sprintf("%d device(s) did not take it: %s", len(failed), strings.Join(failed, ", "))
	case o.Canary > 0 && !took:
		return "no device took it, and a canary rollout needs one that did"
	}
	return ""
}

// finishDurable ends a durable rollout: a complete one writes the group's or fleet's
// key (stamped before any device's, so it never overrides them), so devices that join
// later converge too; a stopped one with RevertOnFailure gives the devices that took the
// new state their previous desired state back.
func (c *Client) finishDurable(ctx context.Context, o PushOptions, du *durable, groupEnv *envelope.Envelope, sum *Summary) error {
	if sum.Stopped == "" {
		if groupEnv == nil {
			return nil
		}
		if o.Secrets != nil {
			sum.Note = "secrets are sealed per device: the group's or fleet's key was not written (devices that join later get nothing)"
			return nil
		}
		if why := unproven(o, sum.Devices); why != "" {
			sum.Note = "the group's or fleet's key was not written: " + why
			return nil
		}
		key := subjects.AllKey
		if groupEnv.Target == envelope.TargetGroup {
			key = subjects.GroupKey(groupEnv.Group)
		}
		if _, err := du.d.Put(ctx, key, groupEnv); err != nil {
			return err
		}
		sum.Note = "stored as " + key + " too: devices of the target that did not answer take it when they come online"
		return nil
	}
	if !o.RevertOnFailure {
		return nil
	}
	for i, ds := range sum.Devices {
		du.mu.Lock()
		_, sent := du.sent[ds.Device]
		prev := du.prev[ds.Device]
		du.mu.Unlock()
		if !sent {
			continue // never given the new state (skipped, or refused before it was written)
		}
		// What the device desired before: the newer of its own key and the target's
		// group or fleet key as they were.
		if f := du.fallback; f != nil && (prev == nil || f.Env.Newer(prev.Env.IssuedAt, prev.Env.ID)) {
			prev = f
		}
		key := subjects.DeviceKey(ds.Device)
		if prev == nil {
			// Nothing to return to: the key goes, and the device keeps what it runs.
			if err := du.d.Delete(ctx, key); err != nil {
				return err
			}
			sum.Devices[i].Error = "no previous desired state to return to: its key was removed, and it keeps what it runs"
			continue
		}
		env, err := du.d.restamp(key, prev.Env)
		if err != nil {
			return err
		}
		if prev.Env.Target == envelope.TargetDevice {
			env.Secrets = prev.Env.Secrets
		}
		if _, err := du.d.Put(ctx, key, env); err != nil {
			return fmt.Errorf("reverting %s: %w", ds.Device, err)
		}
		sum.Reverted = append(sum.Reverted, ds.Device)
	}
	if len(sum.Reverted) > 0 {
		sum.Stopped += fmt.Sprintf("; %d device(s) given their previous desired state back", len(sum.Reverted))
	}
	return nil
}

// waitConverged waits, after a durable rollout, until want of the devices succeeded
// (their status records say so), or timeout.
func (c *Client) waitConverged(ctx context.Context, du *durable, sum *Summary, want int, timeout time.Duration) {
	// The stream's records, for any the live routing dropped (a slow consumer); they are
	// taken only where the routing holds nothing newer.
	if sts, err := du.d.Statuses(ctx); err == nil {
		du.statuses.merge(sts)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		for i := range sum.Devices {
			d := &sum.Devices[i]
			du.mu.Lock()
			id := du.sent[d.Device]
			du.mu.Unlock()
			s, ok := du.statuses.get(d.Device)
			if d.State == StateSucceeded || !ok || s.Enrollment == EnrollmentUnenrolled || s.Desired != id || !s.JobState.Finished() {
				continue
			}
			if sum.Counts[d.State]--; sum.Counts[d.State] == 0 {
				delete(sum.Counts, d.State)
			}
			finish(d, statusJob(s))
			sum.Counts[d.State]++
		}
		if sum.Counts[StateSucceeded] >= want {
			return
		}
		select {
		case <-du.statuses.changed:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// keepSigned drops the entries this publisher's key did not sign (or whose inline
// payload does not match its digest): anyone with publisher credentials can write the
// bucket, and a revert re-signs what it returns to, a resume trusts what it finds.
func (c *Client) keepSigned(entries map[string]DesiredEntry) {
	for k, e := range entries {
		sig, err := envelope.DecodeSignature(e.Sig)
		if err == nil {
			var pub ssh.PublicKey
			if pub, err = auth.VerifySelf(e.Raw, sig, auth.NamespaceEnvelope); err == nil && !SameKey(pub, c.signer.PublicKey()) {
				err = errors.New("signed by another key")
			}
		}
		if err == nil && e.Env.Payload != nil {
			err = e.Env.CheckPayload(e.Env.Payload)
		}
		if err != nil {
			c.log.Warn("ignoring a desired-state value this publisher did not sign", "key", k, "err", err)
			delete(entries, k)
		}
	}
}
