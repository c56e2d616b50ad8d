// Package device is the device-side NATS service: it subscribes to the device's own,
// group and fleet-wide request subjects, checks every envelope (decode, subject binding,
// time window, signature and signer policy, replay, payload digest), dispatches to the
// core pipeline and job manager, replies at once, publishes job events and presence. It
// holds no provisioning logic of its own.
package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// Options configure the service.
type Options struct {
	Conn   *nats.Conn
	Fleet  string
	Device string
	// Groups from the command line; the active config's [fleet].groups are added.
	Groups  []string
	Prov    *provision.Provisioner
	Jobs    *jobs.Manager
	Trust   *auth.Trust
	Replay  *auth.ReplayGuard
	Version string
	// HeartbeatInterval between presence messages (default 30s).
	HeartbeatInterval time.Duration
	// Limits bound payloads (MaxCompressed is the upload limit).
	Limits bundle.Limits
	// SpoolDir holds fetched payloads until they are used (default os.TempDir()).
	SpoolDir string
	// HubConnected reports the leaf link state for presence; nil means no hub.
	HubConnected func() bool
	// OnReject is told the code of every refused request (metrics).
	OnReject func(code string)
	Now      func() time.Time
	Logger   *slog.Logger
}

// Service is a running device service.
type Service struct {
	o    Options
	log  *slog.Logger
	sem  chan struct{}
	wg   sync.WaitGroup
	stop chan struct{}

	handlers map[string]Handler

	mu     sync.Mutex
	subs   map[string]*nats.Subscription
	groups []string
}

// New returns a service; Start subscribes.
func New(o Options) *Service {
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{o: o, log: o.Logger.With("device", o.Device, "fleet", o.Fleet), sem: make(chan struct{}, 8),
		stop: make(chan struct{}), subs: map[string]*nats.Subscription{}}
	s.handlers = s.newHandlers()
	return s
}

// Start subscribes to the request subjects, announces presence and starts the heartbeat.
func (s *Service) Start(ctx context.Context) error {
	if !subjects.ValidToken(s.o.Fleet) || !subjects.ValidToken(s.o.Device) {
		return fmt.Errorf("fleet %q and device %q must match ^[A-Za-z0-9_-]{1,64}$", s.o.Fleet, s.o.Device)
	}
	if err := s.resubscribe(); err != nil {
		return err
	}
	s.publishPresence()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(s.o.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.publishPresence()
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return nil
}

// Stop unsubscribes and waits for in-flight handlers (jobs keep running in the manager).
func (s *Service) Stop() {
	s.mu.Lock()
	for _, sub := range s.subs {
		sub.Unsubscribe()
	}
	s.subs = map[string]*nats.Subscription{}
	s.mu.Unlock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.wg.Wait()
}

// Groups returns the device's current groups.
func (s *Service) Groups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.groups...)
}

// currentGroups is the flag groups plus the active config's [fleet].groups.
func (s *Service) currentGroups() []string {
	g := append([]string(nil), s.o.Groups...)
	if m, err := s.o.Prov.ActiveModel(); err == nil && m.Fleet != nil {
		g = append(g, m.Fleet.Groups...)
	}
	sort.Strings(g)
	return slices.Compact(g)
}

// resubscribe makes the subscriptions match the device id, its groups and the fleet.
func (s *Service) resubscribe() error {
	groups := s.currentGroups()
	want := map[string]bool{subjects.DeviceRequests(s.o.Fleet, s.o.Device): true, subjects.AllRequests(s.o.Fleet): true}
	for _, g := range groups {
		if subjects.ValidToken(g) {
			want[subjects.GroupRequests(s.o.Fleet, g)] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.groups = groups
	for subj, sub := range s.subs {
		if !want[subj] {
			sub.Unsubscribe()
			delete(s.subs, subj)
		}
	}
	for subj := range want {
		if _, ok := s.subs[subj]; ok {
			continue
		}
		sub, err := s.o.Conn.Subscribe(subj, s.dispatch)
		if err != nil {
			return fmt.Errorf("subscribing to %s: %w", subj, err)
		}
		s.subs[subj] = sub
	}
	return s.o.Conn.Flush()
}

// dispatch runs each request in its own goroutine (at most 8 at once), so a slow payload
// fetch does not hold up pings.
func (s *Service) dispatch(m *nats.Msg) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sem <- struct{}{}
		defer func() { <-s.sem }()
		reply := s.handle(context.Background(), m)
		if !reply.Accepted && s.o.OnReject != nil {
			s.o.OnReject(reply.Code)
		}
		if m.Reply == "" {
			return
		}
		reply.Device = s.o.Device
		b, _ := json.Marshal(reply)
		if err := m.Respond(b); err != nil {
			s.log.Warn("replying", "subject", m.Subject, "err", err)
		}
	}()
}

func (s *Service) handle(ctx context.Context, m *nats.Msg) envelope.Reply {
	subj, err := subjects.Parse(m.Subject)
	if err != nil {
		return envelope.Refuse(s.o.Device, envelope.Errorf(envelope.ErrInvalid, "%v", err))
	}
	switch subj.Op {
	case "ping":
		return s.ok(s.presence())
	case "job":
		return s.job(m.Data)
	}
	req, err := s.verify(ctx, subj, m)
	if err != nil {
		s.log.Warn("request rejected", "subject", m.Subject, "code", codeOf(err), "err", err)
		return envelope.Refuse(s.o.Device, err)
	}
	r, err := s.run(ctx, req)
	if err != nil {
		return envelope.Refuse(s.o.Device, err)
	}
	return r
}

func (s *Service) ok(v any) envelope.Reply {
	b, _ := json.Marshal(v)
	return envelope.Reply{Accepted: true, Data: b}
}

func (s *Service) job(body []byte) envelope.Reply {
	var q struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &q); err != nil || q.ID == "" {
		return envelope.Refuse(s.o.Device, envelope.Errorf(envelope.ErrInvalid, `expected {"id": "<job id>"}`))
	}
	j, err := s.o.Jobs.Get(q.ID)
	if err != nil {
		return envelope.Refuse(s.o.Device, envelope.Errorf(envelope.ErrNotFound, "job %s not found", q.ID))
	}
	return s.ok(j)
}

func codeOf(err error) string {
	var e *envelope.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return envelope.ErrInternal.Code
}
