package devicenats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/messaging/device"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// ConvergerOptions configure a Converger.
type ConvergerOptions struct {
	Conn    *nats.Conn
	Service *device.Service
	// LinkUp reports whether the hub link is up; a link that comes back makes the device
	// read its desired state again. nil: no hub (the converger does nothing).
	LinkUp func() bool
	// Poll is how often LinkUp is looked at (default 1s), Resync how often the desired
	// state is read anyway, in case a notification was lost (default 5m), Timeout bounds
	// each read (default 5s), and Retry is the wait before a failed read is tried again
	// (default 1s, doubled after each failure up to a minute, with jitter): a hub too busy
	// to answer 1,000 devices at once must not leave them waiting for the next Resync.
	Poll, Resync, Timeout, Retry time.Duration
	Logger                       *slog.Logger
}

// Converger makes a device converge on its durable desired state: it reads its keys
// (its own, its groups', the fleet's) from the hub's desired-state bucket with direct
// gets when it starts, when its hub link comes back, when a key changes (the bucket
// republishes changes on core subjects it subscribes to), after each job, and every
// Resync; it hands them to the device service, which applies the newest when it is newer
// than what the device applied; and it records the device's signed status on the hub.
// It needs no JetStream consumer: a hub carries 10k devices with none.
type Converger struct {
	o     ConvergerOptions
	svc   *device.Service
	log   *slog.Logger
	kicks chan struct{}
	stop  chan struct{}
	wg    sync.WaitGroup

	mu         sync.Mutex
	subs       []*nats.Subscription
	keys       []string
	unreadable []string
	// view is the last full read, kept current by notifications (nil: read again).
	view map[string]device.Candidate
	// sent is the last status the hub acknowledged, without its time (the loop's only).
	sent []byte
}

// NewConverger returns a converger; Start runs it.
func NewConverger(o ConvergerOptions) *Converger {
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Resync <= 0 {
		o.Resync = 5 * time.Minute
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Converger{o: o, svc: o.Service, log: o.Logger.With("component", "desired"),
		kicks: make(chan struct{}, 1), stop: make(chan struct{})}
}

// kick asks for a read of the desired state (coalesced with any pending one).
func (c *Converger) kick() {
	select {
	case c.kicks <- struct{}{}:
	default:
	}
}

// Start subscribes to the change notifications and runs the loop until Stop.
func (c *Converger) Start(ctx context.Context) error {
	if c.o.LinkUp == nil {
		return nil
	}
	if err := c.subscribe(); err != nil {
		return err
	}
	// After each job: its groups may have changed, a busy device may now take a newer
	// state, and the hub learns the job's outcome.
	c.svc.Listen(func(m wire.EventMsg) {
		if m.Done {
			c.kick() // the view stays: subscribe drops it if the job changed the groups
		}
	})
	c.wg.Add(1)
	go c.loop(ctx)
	c.kick()
	return nil
}

// Stop ends the loop and unsubscribes.
func (c *Converger) Stop() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.subs {
		s.Unsubscribe()
	}
	c.subs = nil
}

func (c *Converger) loop(ctx context.Context) {
	defer c.wg.Done()
	poll := time.NewTicker(c.o.Poll)
	defer poll.Stop()
	resync := time.NewTicker(c.o.Resync)
	defer resync.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	failures := 0
	// after schedules a retry when a read failed (all keys or some) and the link is up.
	after := func(settled bool) {
		if settled || !c.o.LinkUp() {
			failures = 0
			retry.Stop()
			return
		}
		failures++
		if d, ok := retryDelay(c.o.Retry, failures); ok {
			retry.Reset(d)
		}
	}
	up := c.o.LinkUp()
	for {
		select {
		case <-c.kicks:
			// A change or a job's end: the backoff of earlier failures (a bucket that did
			// not exist yet, say) starts over, or one failed read here would wait a minute.
			failures = 0
			after(c.sync(ctx, false))
		case <-poll.C:
			now := c.o.LinkUp()
			if now && !up {
				c.log.Info("hub link up: reading desired state")
				c.refresh()
				after(c.sync(ctx, true))
			}
			up = now
		case <-retry.C:
			c.refresh()
			after(c.sync(ctx, false))
		case <-resync.C:
			c.refresh()
			after(c.sync(ctx, true))
		case <-c.stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

// subscribe follows the change notifications of the device's current keys.
func (c *Converger) subscribe() error {
	keys := subjects.DesiredKeys(c.svc.Device(), c.svc.Groups())
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(keys, c.keys) {
		return nil
	}
	for _, s := range c.subs {
		s.Unsubscribe()
	}
	c.subs, c.keys, c.view = nil, keys, nil
	for _, k := range keys {
		s, err := c.o.Conn.Subscribe(subjects.DesiredNotify(c.svc.Fleet(), k), func(m *nats.Msg) { c.notified(k, m) })
		if err != nil {
			return err
		}
		c.subs = append(c.subs, s)
	}
	return nil
}

// maxRetries bounds the retries of one failed read: past them (a key the device's
// credentials cannot read, a hub whose bucket does not exist yet, an object the hub no
// longer has) only a notification, the link coming up or the resync reads again.
const maxRetries = 8

// retryDelay is the wait before the nth retry of a failed read: base doubled per
// failure up to a minute, then between 75% and 125% of it, so a fleet that failed
// together does not retry together; ok is false past maxRetries.
func retryDelay(base time.Duration, n int) (d time.Duration, ok bool) {
	if n > maxRetries {
		return 0, false
	}
	d = base
	for i := 1; i < n && d < time.Minute; i++ {
		d *= 2
	}
	d = min(d, time.Minute)
	return d*3/4 + rand.N(d/2+1), true
}

// sync reads the device's desired-state keys, lets the service act on them, and records
// the device's status when it changed (or always, with force: after a link-up and at
// each resync, so the hub's record stays fresh). It reports whether it is settled: every
// key was read, or the hub has no desired state at all (a retry would not change that).
func (c *Converger) sync(ctx context.Context, force bool) (settled bool) {
	if err := c.subscribe(); err != nil {
		c.log.Warn("following desired-state changes", "err", err)
	}
	cands, complete, err := c.candidates(ctx)
	if err != nil {
		// No hub, no JetStream on it, or the link is down: nothing to converge on now;
		// a retry, the link coming back or a notification brings the next read.
		c.log.Debug("reading desired state", "err", err)
		return errors.Is(err, nats.ErrNoResponders)
	}
	out := c.svc.TakeDesired(ctx, cands)
	for k, err := range out.Refused {
		c.log.Warn("desired state refused", "key", k, "err", err)
	}
	switch out.Action {
	case device.DesiredStarted:
		c.log.Info("applying desired state", "job_id", out.Newest.ID, "issued_at", out.Newest.IssuedAt)
	case device.DesiredOlder:
		c.log.Info("desired state is older than what this device applied; ignored", "desired", out.Newest.ID,
			"applied", c.svc.AppliedMark().ID)
	case device.DesiredRefused:
		c.log.Warn("desired state not applied", "desired", out.Newest.ID, "err", out.Err)
	}
	if len(cands) > 0 || out.Newest != nil {
		c.publishStatus(ctx, out, force)
	}
	return complete && !out.Retry
}

// notified takes a key's change as the bucket republished it (value and headers): the
// device's view is then its last full read with this key replaced, and needs no read
// (1,000 devices told of the fleet's key would otherwise make 2,000+ gets at once).
func (c *Converger) notified(key string, m *nats.Msg) {
	c.mu.Lock()
	if c.view != nil {
		if subjects.KVDeleted(m.Header) {
			delete(c.view, key)
		} else {
			c.view[key] = device.Candidate{Key: key, Raw: m.Data, Sig: m.Header.Get(envelope.SignatureHeader)}
		}
	}
	c.mu.Unlock()
	c.kick()
}

// candidates is the device's view of its keys: the last full read with the changes
// notified since, or a full read when there is none (at start, on link-up, after a job,
// every Resync, at a retry: each of those drops the view first). complete is false when
// some keys could not be read.
func (c *Converger) candidates(ctx context.Context) (cands []device.Candidate, complete bool, err error) {
	c.mu.Lock()
	if c.view != nil {
		out := make([]device.Candidate, 0, len(c.view))
		for _, k := range c.keys {
			if cand, ok := c.view[k]; ok {
				out = append(out, cand)
			}
		}
		c.mu.Unlock()
		return out, true, nil
	}
	c.mu.Unlock()
	cands, complete, err = c.read(ctx)
	if err != nil || !complete {
		// A partial view is acted on but not kept: a notification must not pass it off
		// as complete (and cancel the retry of the keys that did not answer).
		return cands, false, err
	}
	c.mu.Lock()
	c.view = map[string]device.Candidate{}
	for _, cand := range cands {
		c.view[cand.Key] = cand
	}
	c.mu.Unlock()
	return cands, complete, nil
}

// refresh drops the view: the next Sync reads every key.
func (c *Converger) refresh() {
	c.mu.Lock()
	c.view = nil
	c.mu.Unlock()
}

// read direct-gets each key, all at once; a key with no value (or deleted) is left out.
// Any failure to reach JetStream is an error: the device does not act on a partial view.
// (Over a leaf link a missing bucket is a timeout, not "no responders": hence the
// parallel gets, so it costs one Timeout, not one per key.)
func (c *Converger) read(ctx context.Context) (cands []device.Candidate, complete bool, err error) {
	c.mu.Lock()
	keys := c.keys
	c.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	type got struct {
		c   *device.Candidate
		err error
	}
	res := make([]got, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i].c, res[i].err = c.get(rctx, k)
		}()
	}
	wg.Wait()
	var out []device.Candidate
	var failed []string
	var last error
	for i, r := range res {
		switch {
		case r.err != nil:
			failed, last = append(failed, keys[i]), r.err
		case r.c != nil:
			out = append(out, *r.c)
		}
	}
	if len(failed) == len(keys) {
		return nil, false, last // the link is down, or the hub keeps no desired state
	}
	// Some keys may answer and some not: most likely groups this device's hub credentials
	// do not carry (the hub drops those gets). The others still count: anti-rollback keeps
	// a partial view from ever taking the device backwards.
	c.failedKeys(failed, last)
	return out, len(failed) == 0, nil
}

// failedKeys logs, once per change, the keys the device cannot read.
func (c *Converger) failedKeys(keys []string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(keys, c.unreadable) {
		return
	}
	c.unreadable = keys
	if len(keys) > 0 {
		c.log.Warn("desired-state keys unreadable (are these groups in the device's hub credentials? publisher nats creds --groups)",
			"keys", keys, "err", err)
	}
}

// get direct-gets one key (nil: no value).
func (c *Converger) get(ctx context.Context, k string) (*device.Candidate, error) {
	m, err := c.o.Conn.RequestWithContext(ctx, subjects.DirectGet(subjects.Domain, c.svc.Fleet(), k), nil)
	if err != nil {
		return nil, err
	}
	if err := directGetStatus(m); errors.Is(err, errNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("direct get %s: %w", k, err)
	}
	if subjects.KVDeleted(m.Header) {
		return nil, nil
	}
	return &device.Candidate{Key: k, Raw: m.Data, Sig: m.Header.Get(envelope.SignatureHeader)}, nil
}

// Reach proves the device is reachable through its hub after a network change: a direct
// get of its own key, answered (found or not) through the hub. provision.ErrNoHub when
// the device has no hub.
func (c *Converger) Reach(ctx context.Context) error {
	if c.o.LinkUp == nil {
		return provision.ErrNoHub
	}
	if !c.o.LinkUp() {
		return errors.New("the hub link is down")
	}
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	if _, err := c.get(ctx, subjects.DeviceKey(c.svc.Device())); err != nil {
		return fmt.Errorf("no round trip through the hub: %w", err)
	}
	return nil
}

// publishStatus records the device's signed status on the hub's status stream (the
// stream's acknowledgement is awaited, so a lost write is logged).
func (c *Converger) publishStatus(ctx context.Context, out device.DesiredOutcome, force bool) {
	st := c.svc.DesiredStatus(ctx, out)
	at := st.Time
	st.Time = time.Time{}
	same, _ := json.Marshal(st)
	if !force && bytes.Equal(same, c.sent) {
		return // what the hub holds already (a group key written after the device's own)
	}
	st.Time = at
	b, _ := json.Marshal(st)
	msg := &nats.Msg{Subject: subjects.StatusOf(c.svc.Fleet(), c.svc.Device()), Data: b, Header: c.svc.SignedHeader(b)}
	rctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	if _, err := c.o.Conn.RequestMsgWithContext(rctx, msg); err != nil {
		c.log.Warn("recording status on the hub", "err", err)
		return
	}
	c.sent = same
}
