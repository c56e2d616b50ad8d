// Package fleet is the publisher's side of the wire: it discovers devices, signs one
// envelope per device, delivers it (inline or as a blob for large payloads), follows each
// job's events, and runs rollouts with batches, canaries and failure limits.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/blob"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

var (
	// ErrNoReply is returned when a device did not answer in time (or nobody listens).
	ErrNoReply = errors.New("no reply")
	// ErrInvalidOption is wrapped by option constructors that reject their argument.
	ErrInvalidOption = errors.New("invalid option")
)

// Client talks to a fleet through a NATS connection (New), or to one device through its
// HTTP bridge (NewHTTP, publisher --via).
type Client struct {
	nc       *nats.Conn
	fleet    string
	signer   ssh.Signer
	lifetime time.Duration
	now      func() time.Time
	log      *slog.Logger
	http     *httpTransport // set by NewHTTP: one device's bridge instead of NATS

	known   *KnownDevices // nil: device signatures are not checked
	tofu    bool
	onFirst func(device, fingerprint string)
}

// Signer returns the key envelopes are signed with (nil without one).
func (c *Client) Signer() ssh.Signer { return c.signer }

// WithKnownDevices makes the client check that everything a device says is signed by its
// enrolled key: an unknown device is ErrUnenrolled (or, with tofu, enrolled on first use
// and reported to onFirst), a wrong or missing signature ErrImpostor.
func WithKnownDevices(k *KnownDevices, tofu bool, onFirst func(device, fingerprint string)) Option {
	return func(c *Client) error { c.known, c.tofu, c.onFirst = k, tofu, onFirst; return nil }
}

// verifyDevice checks a device's signature over body against its enrolled key.
func (c *Client) verifyDevice(device string, body []byte, sig64 string) error {
	return c.verifyDeviceTOFU(device, body, sig64, c.tofu)
}

// verifyDeviceTOFU is verifyDevice with first use allowed or not: a record read from the
// hub (a status) never enrols a key, since no device answered anything.
func (c *Client) verifyDeviceTOFU(device string, body []byte, sig64 string, tofu bool) error {
	if c.known == nil {
		return nil
	}
	if sig64 == "" {
		return fmt.Errorf("%w: %s answered without its identity signature", ErrImpostor, device)
	}
	sig, err := base64.StdEncoding.DecodeString(sig64)
	if err != nil {
		return fmt.Errorf("%w: %s sent a malformed identity signature", ErrImpostor, device)
	}
	pub, err := auth.VerifySelf(body, sig, auth.NamespaceDevice)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrImpostor, device, err)
	}
	fp := ssh.FingerprintSHA256(pub)
	known, ok := c.known.Lookup(c.fleet, device)
	switch {
	case ok && SameKey(known, pub):
		return nil
	case ok:
		return fmt.Errorf("%w: %s signed with %s, but its enrolled key is %s (if the device was reinstalled, check its new key with 'worker identity' and re-enrol: publisher enroll --device %s --fingerprint %s)",
			ErrImpostor, device, fp, ssh.FingerprintSHA256(known), device, fp)
	case tofu:
		if err := c.known.Add(c.fleet, device, pub, nil); err != nil {
			if errors.Is(err, ErrEnrolmentChanged) {
				if now, ok := c.known.Lookup(c.fleet, device); ok && SameKey(now, pub) {
					return nil // another publisher enrolled the same key meanwhile
				}
				return fmt.Errorf("%w: %s signed with %s on first use, but another key was enrolled meanwhile: %w", ErrImpostor, device, fp, err)
			}
			return err
		}
		if c.onFirst != nil {
			c.onFirst(device, fp)
		}
		return nil
	}
	return fmt.Errorf("%w: %s (key %s); enrol it with publisher enroll --device %s --fingerprint %s", ErrUnenrolled, device, fp, device, fp)
}

// Option configures a Client.
type Option func(*Client) error

// WithSigner sets the key that signs envelopes.
func WithSigner(s ssh.Signer) Option {
	return func(c *Client) error { c.signer = s; return nil }
}

// WithLifetime sets how long envelopes stay valid (default 5m, at most 10m).
func WithLifetime(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 || d > envelope.MaxLifetime {
			return fmt.Errorf("%w: lifetime %s must be in (0, %s]", ErrInvalidOption, d, envelope.MaxLifetime)
		}
		c.lifetime = d
		return nil
	}
}

// WithClock sets the clock envelopes are stamped with.
func WithClock(now func() time.Time) Option { return func(c *Client) error { c.now = now; return nil } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(c *Client) error { c.log = l; return nil } }

// New returns a client for fleet over nc.
func New(nc *nats.Conn, fleet string, opts ...Option) (*Client, error) {
	if !subjects.ValidToken(fleet) {
		return nil, fmt.Errorf("%w: fleet %q", ErrInvalidOption, fleet)
	}
	c := &Client{nc: nc, fleet: fleet, lifetime: 5 * time.Minute, now: time.Now, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Target names devices: Devices, or a Group, or All.
type Target struct {
	Devices []string
	Group   string
	All     bool
}

func (t Target) pingSubject(fleet string) (string, error) {
	switch {
	case t.Group != "":
		return subjects.Build(subjects.Subject{Fleet: fleet, Kind: subjects.Group, Name: t.Group, Op: "ping"})
	case t.All:
		return subjects.Build(subjects.Subject{Fleet: fleet, Kind: subjects.All, Op: "ping"})
	}
	return "", fmt.Errorf("%w: a group or all is needed for discovery", ErrInvalidOption)
}

// Payload is what an op carries.
type Payload struct {
	Data        []byte
	ContentType string
	sum         string // Data's digest, once Push computed it for all its envelopes
}

// digest is Data's SHA-256 (hex), computed once per push rather than once per device.
func (p Payload) digest() string {
	if p.sum != "" {
		return p.sum
	}
	return envelope.Digest(p.Data)
}

// NewEnvelope stamps an envelope for op addressed to one device (a group or all when
// device is empty and group / all are set).
func (c *Client) NewEnvelope(op, device, group string, p Payload) *envelope.Envelope {
	now := c.now().UTC()
	e := &envelope.Envelope{V: envelope.Version, ID: uuid.Must(uuid.NewV7()).String(), Op: op, Fleet: c.fleet,
		IssuedAt: now, ExpiresAt: now.Add(c.lifetime), PayloadSHA256: p.digest(), ContentType: p.ContentType}
	switch {
	case device != "":
		e.Target, e.Device = envelope.TargetDevice, device
	case group != "":
		e.Target, e.Group = envelope.TargetGroup, group
	default:
		e.Target = envelope.TargetAll
	}
	if e.ContentType == "" {
		e.ContentType = envelope.TypeNone
	}
	return e
}

// inlineLimit is the largest payload sent inside the envelope.
func (c *Client) inlineLimit() int { return int(c.nc.MaxPayload())*3/4 - 8192 }

// Prepared is a payload ready to be referenced by many envelopes: inline when small, or
// served as a blob until Close.
type Prepared struct {
	p     Payload
	ref   *wire.PayloadRef
	close func()
}

// Close stops serving the blob.
func (p *Prepared) Close() {
	if p.close != nil {
		p.close()
	}
}

// Prepare serves a large payload as a blob for the duration of ctx (or until Close).
func (c *Client) Prepare(ctx context.Context, p Payload) (*Prepared, error) {
	pr := &Prepared{p: p}
	if c.http != nil || len(p.Data) <= c.inlineLimit() {
		return pr, nil
	}
	var b [12]byte
	rand.Read(b[:])
	subj := subjects.Subject{Fleet: c.fleet, Kind: subjects.Blob, Name: hex.EncodeToString(b[:])}.String()
	stop, err := blob.Serve(ctx, c.nc, subj, p.Data)
	if err != nil {
		return nil, err
	}
	pr.ref, pr.close = &wire.PayloadRef{Subject: subj, Size: int64(len(p.Data))}, stop
	return pr, nil
}

// Attach puts the prepared payload into an envelope.
func (p *Prepared) Attach(e *envelope.Envelope) {
	if p.ref != nil {
		e.PayloadRef = p.ref
		return
	}
	e.Payload = p.p.Data
}

// Send signs env (exact bytes) and requests it on subject, waiting up to timeout. A
// read-only request over NATS is bound to this connection's inbox (reply_to).
func (c *Client) Send(ctx context.Context, subject string, env *envelope.Envelope, timeout time.Duration) (wire.Reply, error) {
	if c.http == nil && envelope.ReadOnly(env.Op) && env.ReplyTo == "" {
		inbox := c.nc.NewRespInbox()
		env.ReplyTo = inbox[:strings.LastIndexByte(inbox, '.')+1]
	}
	raw, err := env.Encode()
	if err != nil {
		return wire.Reply{}, err
	}
	var sig string
	if c.signer != nil {
		if sig, err = envelope.Sign(raw, c.signer); err != nil {
			return wire.Reply{}, err
		}
	}
	var r wire.Reply
	if c.http != nil {
		r, err = c.http.send(ctx, env.Device, raw, sig, timeout)
	} else {
		msg := nats.NewMsg(subject)
		msg.Data = raw
		if sig != "" {
			msg.Header.Set(envelope.SignatureHeader, sig)
		}
		r, err = c.request(ctx, msg, env.Device, timeout)
	}
	// (A refusal the HTTP bridge made before the device's handler names no device and
	// carries no signature; it can only refuse.)
	if err == nil && c.known != nil && (r.Accepted || r.Device != "") && (r.Request != env.ID || r.Fleet != c.fleet) {
		// A signed reply to another request (or fleet) replayed at us.
		return wire.Reply{}, fmt.Errorf("%w: %s answered request %q in fleet %q, not %q", ErrImpostor, r.Device, r.Request, r.Fleet, env.ID)
	}
	return r, err
}

// request sends msg and decodes the reply; with known devices, the reply must be signed
// by device (or, when device is "", by the device it names).
func (c *Client) request(ctx context.Context, msg *nats.Msg, device string, timeout time.Duration) (wire.Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			return wire.Reply{}, fmt.Errorf("%w: %s: %w", ErrNoReply, msg.Subject, err)
		}
		return wire.Reply{}, fmt.Errorf("requesting %s: %w", msg.Subject, err)
	}
	var r wire.Reply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return wire.Reply{}, fmt.Errorf("decoding reply: %w", err)
	}
	if device == "" {
		device = r.Device
	}
	if c.known != nil && r.Device != device {
		return wire.Reply{}, fmt.Errorf("%w: a reply for %s names device %q", ErrImpostor, device, r.Device)
	}
	if err := c.verifyDevice(device, m.Data, m.Header.Get(wire.DeviceSignatureHeader)); err != nil {
		return wire.Reply{}, err
	}
	return r, nil
}

// Discover pings target and collects the presence replies (see gather for when it stops).
func (c *Client) Discover(ctx context.Context, t Target, quiet, max time.Duration) ([]wire.Presence, error) {
	if c.http != nil {
		p, verify, err := c.http.ping(ctx, "")
		if err != nil {
			return nil, err
		}
		if errors.Is(verify, ErrUnenrolled) {
			p.Enrollment = EnrollmentUnenrolled
		} else if verify != nil {
			c.log.Warn("ignoring a presence reply", "device", p.Device, "err", verify)
			p.Enrollment = EnrollmentImpostor
		}
		return []wire.Presence{p}, nil
	}
	subj, err := t.pingSubject(c.fleet)
	if err != nil {
		return nil, err
	}
	seen := map[string]wire.Presence{}
	err = c.gather(ctx, []string{subj}, quiet, max, nil, func(m *nats.Msg) bool {
		var r wire.Reply
		var p wire.Presence
		if json.Unmarshal(m.Data, &r) == nil && r.Accepted && json.Unmarshal(r.Data, &p) == nil && p.Device != "" && r.Device == p.Device {
			p.Enrollment = ""
			if err := c.verifyDevice(p.Device, m.Data, m.Header.Get(wire.DeviceSignatureHeader)); errors.Is(err, ErrUnenrolled) {
				p.Enrollment = EnrollmentUnenrolled
			} else if err != nil {
				c.log.Warn("ignoring a presence reply", "device", p.Device, "err", err)
				p.Enrollment = EnrollmentImpostor
			} else if c.known != nil {
				p.Enrollment = EnrollmentEnrolled
			}
			if prev, ok := seen[p.Device]; !ok || prev.Enrollment != EnrollmentEnrolled {
				seen[p.Device] = p
			}
		}
		return false
	})
	return sortPresence(seen), err
}

// gather publishes an empty request on each subject to one inbox and hands every reply
// to each until it reports it has all it wants, no new reply came for the quiet window,
// or max elapses. The window opens at the first reply (a large fleet's first answer can
// take longer than quiet to cross the hub) and grows with the fleet: it is at least a
// quarter of the time the replies have been arriving.
func (c *Client) gather(ctx context.Context, subjs []string, quiet, max time.Duration, body []byte, each func(*nats.Msg) (done bool)) error {
	inbox := c.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 4096)
	sub, err := c.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return fmt.Errorf("discovering: %w", err)
	}
	defer sub.Unsubscribe()
	for _, s := range subjs {
		if err := c.nc.PublishRequest(s, inbox, body); err != nil {
			return fmt.Errorf("discovering: %w", err)
		}
	}
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	idle := time.NewTimer(max) // armed for real by the first reply
	defer idle.Stop()
	var first time.Time
	for {
		select {
		case m := <-ch:
			if first.IsZero() {
				first = time.Now()
			}
			if each(m) {
				return nil
			}
			window := quiet
			if grown := time.Since(first) / 4; grown > window {
				window = grown
			}
			idle.Reset(window)
		case <-idle.C:
			return nil
		case <-deadline.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func sortPresence(m map[string]wire.Presence) []wire.Presence {
	out := make([]wire.Presence, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

// Ping asks one device for its presence.
func (c *Client) Ping(ctx context.Context, dev string, timeout time.Duration) (wire.Presence, error) {
	if c.http != nil {
		p, verify, err := c.http.ping(ctx, dev)
		if err == nil {
			err = verify
		}
		return p, err
	}
	subj, err := subjects.Build(subjects.Subject{Fleet: c.fleet, Kind: subjects.Device, Name: dev, Op: "ping"})
	if err != nil {
		return wire.Presence{}, err
	}
	r, err := c.request(ctx, nats.NewMsg(subj), dev, timeout)
	if err != nil {
		return wire.Presence{}, err
	}
	var p wire.Presence
	if err := json.Unmarshal(r.Data, &p); err != nil {
		return p, fmt.Errorf("decoding presence: %w", err)
	}
	p.Enrollment = ""
	if c.known != nil {
		p.Enrollment = EnrollmentEnrolled
	}
	return p, nil
}

// Job reads a job record from a device.
func (c *Client) Job(ctx context.Context, dev, id string, timeout time.Duration) (record.Job, error) {
	if c.http != nil {
		return c.http.job(ctx, dev, id)
	}
	subj, err := subjects.Build(subjects.Subject{Fleet: c.fleet, Kind: subjects.Device, Name: dev, Op: "job"})
	if err != nil {
		return record.Job{}, err
	}
	msg := nats.NewMsg(subj)
	msg.Data, _ = json.Marshal(map[string]string{"id": id})
	r, err := c.request(ctx, msg, dev, timeout)
	if err != nil {
		return record.Job{}, err
	}
	if err := r.Err(); err != nil {
		return record.Job{}, err
	}
	var j record.Job
	if err := json.Unmarshal(r.Data, &j); err != nil {
		return j, fmt.Errorf("decoding job: %w", err)
	}
	if j.ID != id {
		// A signed record of another job, replayed as the answer.
		return record.Job{}, fmt.Errorf("%w: %s answered for job %q, not %q", ErrImpostor, dev, j.ID, id)
	}
	return j, nil
}

// WatchJob subscribes to a job's events; call it before sending so nothing is missed.
// The channel closes after the final record (Done) or when stop is called.
func (c *Client) WatchJob(dev, id string) (<-chan wire.EventMsg, func(), error) {
	if c.http != nil {
		return c.http.watch(dev, id)
	}
	w := c.newWatch(dev, id)
	sub, err := c.nc.Subscribe(subjects.Events(c.fleet, dev, id), w.deliver)
	if err != nil {
		return nil, nil, fmt.Errorf("watching job: %w", err)
	}
	if err := c.nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, nil, err
	}
	return w.ch, func() { sub.Unsubscribe(); w.close() }, nil
}

// watch is one job's event stream: with known devices, only the device's own signed
// events for this job, in order, get through.
type watch struct {
	c       *Client
	dev, id string
	ch      chan wire.EventMsg
	mu      sync.Mutex
	closed  bool
	lastSeq int
}

func (c *Client) newWatch(dev, id string) *watch {
	return &watch{c: c, dev: dev, id: id, ch: make(chan wire.EventMsg, 256)}
}

func (w *watch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
}

func (w *watch) deliver(m *nats.Msg) {
	var ev wire.EventMsg
	if json.Unmarshal(m.Data, &ev) != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if w.c.known != nil {
		// Only the device's own signature, for this job, in order: a forged event, or one
		// replayed from another job, is dropped.
		err := w.c.verifyDevice(w.dev, m.Data, m.Header.Get(wire.DeviceSignatureHeader))
		if err == nil && (ev.JobID != w.id || ev.Device != w.dev || ev.Fleet != w.c.fleet || ev.Seq <= w.lastSeq) {
			err = fmt.Errorf("%w: event for job %s seq %d on job %s after seq %d", ErrImpostor, ev.JobID, ev.Seq, w.id, w.lastSeq)
		}
		if err != nil {
			w.c.log.Warn("dropping a job event", "device", w.dev, "job_id", w.id, "err", err)
			return
		}
		w.lastSeq = ev.Seq
	}
	select {
	case w.ch <- ev:
	default: // a reader that does not keep up misses events, never the process
	}
	if ev.Done {
		w.closed = true
		close(w.ch)
	}
}

// eventHub follows the jobs of a whole push with one subscription to the fleet's event
// subjects, not one per device: every subscription the publisher makes on the hub is
// interest the hub sends to every leaf-linked device.
type eventHub struct {
	c       *Client
	sub     *nats.Subscription
	mu      sync.Mutex
	watches map[string]*watch // by job id
}

func (c *Client) newEventHub() (*eventHub, error) {
	h := &eventHub{c: c, watches: map[string]*watch{}}
	sub, err := c.nc.Subscribe(subjects.Events(c.fleet, "*", "*"), func(m *nats.Msg) {
		s, err := subjects.Parse(m.Subject)
		if err != nil {
			return
		}
		h.mu.Lock()
		w := h.watches[s.Job]
		h.mu.Unlock()
		if w != nil && w.dev == s.Name {
			w.deliver(m)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("watching jobs: %w", err)
	}
	if err := c.nc.Flush(); err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	h.sub = sub
	return h, nil
}

// watch starts following a job; it needs no round trip to the server.
func (h *eventHub) watch(dev, id string) (<-chan wire.EventMsg, func()) {
	w := h.c.newWatch(dev, id)
	h.mu.Lock()
	h.watches[id] = w
	h.mu.Unlock()
	return w.ch, func() {
		h.mu.Lock()
		delete(h.watches, id)
		h.mu.Unlock()
		w.close()
	}
}

func (h *eventHub) stop() { h.sub.Unsubscribe() }

// Enrollment states a discovered device can be in (wire.Presence.Enrollment, set by the
// client, never taken from the device).
const (
	EnrollmentEnrolled   = "enrolled"
	EnrollmentUnenrolled = "unenrolled"
	EnrollmentImpostor   = "impostor"
)
