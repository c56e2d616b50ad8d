// Package devicenats is the device service's NATS transport: it subscribes to the
// device's own, group and fleet-wide request subjects, answers the unsigned ping and job
// ops, hands every signed envelope to messaging/device (bound to the subject it came
// on), replies, publishes job events and presence, and serves large payloads as chunked
// blobs. It holds no provisioning logic and never imports the HTTP bridge.
package devicenats

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/fleetprov/fleetprov/messaging/blob"
	"github.com/fleetprov/fleetprov/messaging/device"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// Options configure the adapter.
type Options struct {
	Conn    *nats.Conn
	Service *device.Service
	// HeartbeatInterval between presence messages (default 30s).
	HeartbeatInterval time.Duration
	// OnReject is told the code of every refused request (metrics).
	OnReject func(code string)
	Logger   *slog.Logger
}

// Adapter is a running NATS transport.
type Adapter struct {
	o    Options
	svc  *device.Service
	log  *slog.Logger
	work chan *nats.Msg // the bounded queue between the subscriptions and the workers
	wg   sync.WaitGroup
	stop chan struct{}

	dropped atomic.Int64

	mu   sync.Mutex
	subs map[string]*nats.Subscription

	unsigned      []byte // the reply to a signed op sent without a signature
	unsignedHdr   nats.Header
	unsignedLimit *rate.Limiter // answers to requests without a signature
	jobLimit      *rate.Limiter // answers to job queries

	pingMu  sync.Mutex // guards the signed ping reply, reused for pingTTL
	pingAt  time.Time
	pingMsg *nats.Msg
}

// Requests are handled by maxInFlight workers fed by a queue of queueLen: a slow payload
// fetch must not hold up pings, and a flood must cost neither a goroutine per message nor
// the connection (a callback that only enqueues keeps up with the socket, so the server
// never sees a slow consumer). Past queueLen, requests are dropped, counted, and the
// requester sees no reply.
// The unsigned read-only ops (ping: a presence whose drift part is cached; job: a lookup) are answered in the
// callback itself, and a signed op without a signature is refused there too: they cost
// microseconds, so the callback keeps pace with the socket and a slow payload fetch or a
// flood never holds up discovery.
const (
	maxInFlight = 8
	queueLen    = 1024
	maxJobQuery = 256 // {"id": "<job id>"}
	// pendingMsgs bounds each subscription's client-side buffer: under a flood the
	// client drops past it (a slow-consumer error on that subscription, never the
	// connection), which bounds how long a real request waits behind junk.
	pendingMsgs  = 16384
	pendingBytes = 16 << 20
	// unsignedRefusals is how many requests without a signature a second are answered
	// (missing signature); the rest are dropped.
	unsignedRefusals = 100
	// jobQueries is how many job queries a second are answered (each is a lookup and a
	// signature; a publisher asks once per job it lost track of); the rest are dropped.
	jobQueries = 200
	// pingTTL is how long one signed presence answers every ping: a flood of empty pings
	// must not cost a signature each.
	pingTTL = time.Second
)

// New returns an adapter; Start subscribes.
func New(o Options) *Adapter {
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	unsigned, _ := json.Marshal(wire.Refuse(o.Service.Device(),
		wire.Errorf(wire.ErrUnauthorized, "missing signature: send the envelope's signature in the %s header", envelope.SignatureHeader)))
	return &Adapter{o: o, svc: o.Service, log: o.Logger.With("device", o.Service.Device(), "fleet", o.Service.Fleet()),
		work: make(chan *nats.Msg, queueLen), stop: make(chan struct{}), subs: map[string]*nats.Subscription{},
		unsigned: unsigned, unsignedHdr: o.Service.SignedHeader(unsigned), unsignedLimit: rate.NewLimiter(unsignedRefusals, unsignedRefusals),
		jobLimit: rate.NewLimiter(jobQueries, jobQueries)}
}

// Start subscribes to the request subjects, announces presence, follows job events and
// starts the heartbeat.
func (a *Adapter) Start(ctx context.Context) error {
	fleet, dev := a.svc.Fleet(), a.svc.Device()
	if !subjects.ValidToken(fleet) || !subjects.ValidToken(dev) {
		return fmt.Errorf("fleet %q and device %q must match ^[A-Za-z0-9_-]{1,64}$", fleet, dev)
	}
	for range maxInFlight {
		a.wg.Add(1)
		go a.worker(a.work)
	}
	if err := a.resubscribe(); err != nil {
		return err
	}
	a.svc.Listen(a.publishEvent)
	a.publishPresence()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTicker(a.o.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				a.publishPresence()
			case <-a.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return nil
}

// Stop unsubscribes and waits for in-flight handlers.
func (a *Adapter) Stop() {
	a.mu.Lock()
	for _, sub := range a.subs {
		sub.Unsubscribe()
	}
	a.subs = map[string]*nats.Subscription{}
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// resubscribe makes the subscriptions match the device id, its groups and the fleet.
func (a *Adapter) resubscribe() error {
	fleet := a.svc.Fleet()
	want := map[string]bool{subjects.DeviceRequests(fleet, a.svc.Device()): true, subjects.AllRequests(fleet): true}
	for _, g := range a.svc.Groups() {
		if subjects.ValidToken(g) {
			want[subjects.GroupRequests(fleet, g)] = true
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.stop:
		return nil // stopped: never subscribe again
	default:
	}
	for subj, sub := range a.subs {
		if !want[subj] {
			sub.Unsubscribe()
			delete(a.subs, subj)
		}
	}
	for subj := range want {
		if _, ok := a.subs[subj]; ok {
			continue
		}
		sub, err := a.o.Conn.Subscribe(subj, a.dispatch)
		if err != nil {
			return fmt.Errorf("subscribing to %s: %w", subj, err)
		}
		if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
			return fmt.Errorf("subscribing to %s: %w", subj, err)
		}
		a.subs[subj] = sub
	}
	return a.o.Conn.Flush()
}

// dispatch is every subscription's callback: it only enqueues. A message without a reply
// subject is no request and is dropped; so is one that finds the queue full.
func (a *Adapter) dispatch(m *nats.Msg) {
	if m.Reply == "" {
		a.drop()
		return
	}
	op := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	switch {
	case !subjects.IsOp(op), op == "ping" && len(m.Data) > 0, op == "job" && len(m.Data) > maxJobQuery:
		// Unknown ops and malformed read-only requests (a ping has no body) are junk:
		// dropped unanswered, so a flood costs no replies.
		a.drop()
		return
	case op == "ping":
		// Answered here, never queued behind slow requests, with the presence signed at
		// most once per pingTTL.
		if err := m.RespondMsg(a.pingReply()); err != nil {
			a.log.Warn("replying", "subject", m.Subject, "err", err)
		}
		return
	case op == "job":
		// A lookup: answered here, up to jobQueries a second.
		if !a.jobLimit.Allow() {
			a.drop()
			return
		}
		a.respond(m, a.handle(a.svc.Context(), m))
		return
	case m.Header.Get(envelope.SignatureHeader) == "":
		if a.o.OnReject != nil {
			a.o.OnReject(wire.ErrUnauthorized.Code)
		}
		// Refused with a clear error, up to unsignedRefusals a second; past that a flood
		// of them is dropped unanswered (answering was most of the callback's time).
		if !a.unsignedLimit.Allow() {
			a.drop()
			return
		}
		m.RespondMsg(&nats.Msg{Data: a.unsigned, Header: a.unsignedHdr})
		return
	}
	select {
	case a.work <- m:
	default:
		a.drop()
	}
}

func (a *Adapter) drop() {
	if n := a.dropped.Add(1); n&(n-1) == 0 { // log at 1, 2, 4, 8, ... drops
		a.log.Warn("dropping requests: queue full, over a rate limit, junk or no reply subject", "dropped", n)
	}
}

// Dropped returns how many requests were dropped.
func (a *Adapter) Dropped() int64 { return a.dropped.Load() }

// worker handles requests from q until Stop.
func (a *Adapter) worker(q <-chan *nats.Msg) {
	defer a.wg.Done()
	for {
		select {
		case <-a.stop:
			return
		case m := <-q:
			a.respond(m, a.handle(a.svc.Context(), m))
		}
	}
}

func (a *Adapter) respond(m *nats.Msg, reply wire.Reply) {
	if !reply.Accepted && a.o.OnReject != nil {
		a.o.OnReject(reply.Code)
	}
	if err := m.RespondMsg(a.signed(reply)); err != nil {
		a.log.Warn("replying", "subject", m.Subject, "err", err)
	}
}

// signed is reply as the device sends it: naming the device, signed by it.
func (a *Adapter) signed(reply wire.Reply) *nats.Msg {
	reply.Device = a.svc.Device()
	b, _ := json.Marshal(reply)
	return &nats.Msg{Data: b, Header: a.svc.SignedHeader(b)}
}

// pingReply is the signed presence a ping gets, made again after pingTTL or a job's end.
func (a *Adapter) pingReply() *nats.Msg {
	a.pingMu.Lock()
	defer a.pingMu.Unlock()
	if now := time.Now(); a.pingMsg == nil || now.Sub(a.pingAt) >= pingTTL || now.Before(a.pingAt) {
		a.pingMsg, a.pingAt = a.signed(wire.OK(a.svc.Presence(a.svc.Context()))), now
	}
	return &nats.Msg{Data: a.pingMsg.Data, Header: a.pingMsg.Header}
}

func (a *Adapter) handle(ctx context.Context, m *nats.Msg) wire.Reply {
	subj, err := subjects.Parse(m.Subject)
	if err != nil {
		return wire.Refuse(a.svc.Device(), wire.Errorf(wire.ErrInvalid, "%w", err))
	}
	switch subj.Op {
	case "job":
		var q struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m.Data, &q); err != nil || q.ID == "" {
			return wire.Refuse(a.svc.Device(), wire.Errorf(wire.ErrInvalid, `expected {"id": "<job id>"}`))
		}
		j, err := a.svc.Job(q.ID)
		if err != nil {
			return wire.Refuse(a.svc.Device(), device.FromError(err))
		}
		return wire.OK(j)
	}
	bind := func(env *envelope.Envelope, fleet, dev string, groups []string) error {
		if err := env.Bind(subj, fleet, dev, groups); err != nil {
			return err
		}
		return env.BindReply(m.Reply)
	}
	return a.svc.HandleEnvelope(ctx, m.Data, envelope.MaxSize, m.Header.Get(envelope.SignatureHeader), "nats", bind, true)
}

func (a *Adapter) publishPresence() {
	b, _ := json.Marshal(a.svc.Presence(a.svc.Context()))
	hdr := a.svc.SignedHeader(b)
	subj := subjects.Subject{Fleet: a.svc.Fleet(), Kind: subjects.Presence, Name: a.svc.Device()}.String()
	if err := a.o.Conn.PublishMsg(&nats.Msg{Subject: subj, Data: b, Header: hdr}); err != nil {
		a.log.Warn("publishing presence", "err", err)
	}
}

// publishEvent sends a job's event on its subject; after the final record it refreshes
// the subscriptions (the job may have changed the groups) and announces the new presence.
func (a *Adapter) publishEvent(m wire.EventMsg) {
	if m.Done {
		// The job may have changed the presence: a ping after its end sees it.
		a.pingMu.Lock()
		a.pingMsg = nil
		a.pingMu.Unlock()
	}
	b, _ := json.Marshal(m)
	msg := &nats.Msg{Subject: subjects.Events(a.svc.Fleet(), a.svc.Device(), m.JobID), Data: b, Header: a.svc.SignedHeader(b)}
	if err := a.o.Conn.PublishMsg(msg); err != nil {
		a.log.Warn("publishing job event", "job_id", m.JobID, "err", err)
	}
	if !m.Done {
		return
	}
	if err := a.resubscribe(); err != nil {
		a.log.Warn("refreshing subscriptions", "err", err)
	}
	a.publishPresence()
}

// Blobs moves large payloads as chunked blobs on the fleet's blob subjects
// (device.Payloads).
type Blobs struct {
	Conn  *nats.Conn
	Fleet string
	// Device names the inbox the device's own blobs (exports) are served under.
	Device string
}

// Fetch implements device.Payloads: a blob its sender serves, or an object in the
// fleet's payload store on the hub (durable desired state).
func (b Blobs) Fetch(ctx context.Context, ref wire.PayloadRef, limit int64, w io.Writer) error {
	if ref.Object != "" {
		return fetchObject(ctx, b.Conn, b.Fleet, ref.Object, ref.Size, limit, w)
	}
	return blob.Fetch(ctx, b.Conn, ref.Subject, ref.Size, limit, 0, w)
}

// Serve implements device.Payloads: the blob is offered until ctx ends.
func (b Blobs) Serve(ctx context.Context, name string, data []byte) (*wire.PayloadRef, error) {
	// Under the device's own inbox: the only subjects besides its requests that its hub
	// credentials may subscribe to.
	subj := subjects.InboxPrefix(b.Fleet, b.Device) + "." + subjects.Blob + "." + name
	// blob.Serve unsubscribes by itself when ctx ends.
	if _, err := blob.Serve(ctx, b.Conn, subj, data); err != nil {
		return nil, err
	}
	return &wire.PayloadRef{Subject: subj, Size: int64(len(data))}, nil
}

// MaxInline implements device.Payloads: half the connection's max payload, leaving room
// for the reply around it.
func (b Blobs) MaxInline() int { return int(b.Conn.MaxPayload()) / 2 }
