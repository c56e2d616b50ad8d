package device

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/time/rate"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// Payloads moves payloads too large for one message; the NATS adapter implements it
// with chunked blobs. Without one, payload references are refused and exports are
// always inline.
type Payloads interface {
	// Fetch copies the payload ref points at into w, at most limit bytes.
	Fetch(ctx context.Context, ref wire.PayloadRef, limit int64, w io.Writer) error
	// Serve offers data under name until ctx ends and returns where to fetch it.
	Serve(ctx context.Context, name string, data []byte) (*wire.PayloadRef, error)
	// MaxInline is the largest payload that goes inline in a reply.
	MaxInline() int
}

// Options configure the service.
type Options struct {
	Fleet  string
	Device string
	// Groups from the command line; the active config's [fleet].groups are added.
	Groups  []string
	Prov    *provision.Provisioner
	Jobs    *jobs.Manager
	Trust   *auth.Trust
	Replay  *auth.ReplayGuard
	Version string
	// Limits bound payloads (MaxCompressed is the upload limit).
	Limits bundle.Limits
	// SpoolDir holds fetched payloads until they are used (default os.TempDir()).
	SpoolDir string
	Payloads Payloads
	// HubConnected reports the leaf link state for presence; nil means no hub.
	HubConnected func() bool
	// Identity is the device's own key: it signs replies, events and presence (nil: the
	// device says things unsigned).
	Identity ssh.Signer
	// MarkFile keeps the anti-rollback mark (the newest envelope taken) across restarts;
	// "" keeps it in memory.
	MarkFile string
	Now      func() time.Time
	Logger   *slog.Logger
}

// Listener is told every event of every job the service runs, then the final record
// (Done), whatever transport submitted the job.
type Listener func(wire.EventMsg)

// Service is the device service. It is safe for concurrent use.
type Service struct {
	o        Options
	log      *slog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	handlers map[string]Handler

	mu        sync.Mutex
	groups    []string
	listeners []Listener

	refusals *rate.Limiter
	// fingerprint is the identity key's, computed once (presence carries it on every ping).
	fingerprint string

	curMu    sync.Mutex
	curCache provision.Current
	curJSON  []byte // curCache as a reply's data
	curAt    time.Time

	markMu sync.Mutex
	mark   Mark
}

// currentTTL is how long a computed current state (config digest and drift) answers
// pings, heartbeats and `current`: computing it re-renders the active config and reads
// every derived file (about a millisecond), so a flood of pings costs one computation a
// second. A finished job invalidates it.
const currentTTL = time.Second

// refusalLogRate bounds the "request refused" log lines per second.
const refusalLogRate = 10

// New returns a service. Close cancels its base context and waits for its goroutines.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{o: o, log: o.Logger.With("device", o.Device, "fleet", o.Fleet), ctx: ctx, cancel: cancel,
		refusals: rate.NewLimiter(refusalLogRate, 2*refusalLogRate)}
	s.handlers = s.newHandlers()
	s.RefreshGroups()
	if o.Identity != nil {
		s.fingerprint = identity.Fingerprint(o.Identity.PublicKey())
	}
	if err := s.loadMark(); err != nil {
		// Unreadable: the device starts from no mark, so desired state may be applied
		// again; it never blocks the device.
		s.log.Error("anti-rollback mark unreadable; starting without one", "err", err)
	}
	return s
}

// Context is the service's base context: requests that no transport bounds run under
// it, and Close cancels it.
func (s *Service) Context() context.Context { return s.ctx }

// Close cancels in-flight requests and waits for the event fan-out (jobs themselves
// belong to the job manager, which shuts down on its own).
func (s *Service) Close() {
	s.cancel()
	s.wg.Wait()
}

// Device returns the device id.
func (s *Service) Device() string { return s.o.Device }

// Fleet returns the fleet name.
func (s *Service) Fleet() string { return s.o.Fleet }

// Listen adds a listener for job events.
func (s *Service) Listen(l Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listeners = append(s.listeners, l)
}

// Groups returns the device's current groups.
func (s *Service) Groups() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.groups...)
}

// RefreshGroups recomputes the groups (the flag groups plus the active config's
// [fleet].groups) and returns them.
func (s *Service) RefreshGroups() []string {
	g := append([]string(nil), s.o.Groups...)
	if m, err := s.o.Prov.ActiveModel(); err == nil && m.Fleet != nil {
		g = append(g, m.Fleet.Groups...)
	}
	sort.Strings(g)
	g = slices.Compact(g)
	s.mu.Lock()
	s.groups = g
	s.mu.Unlock()
	return append([]string(nil), g...)
}

// Presence is what the device announces: identity, groups, provisioned state, config
// digest and drift (from cachedCurrent, the one expensive part), its last job, and the
// hub link.
func (s *Service) Presence(ctx context.Context) wire.Presence {
	p := wire.Presence{Device: s.o.Device, Fleet: s.o.Fleet, Groups: s.Groups(), Version: s.o.Version, Time: s.o.Now().UTC(),
		Busy: s.o.Jobs.Active() != ""}
	p.Identity = s.fingerprint
	if p.Groups == nil {
		p.Groups = []string{}
	}
	if cur, err := s.cachedCurrent(ctx); err == nil {
		p.Provisioned, p.ConfigSHA256 = cur.Provisioned, cur.Digest
		p.Drift, p.DriftFiles = len(cur.Drift) > 0, cur.Drift
	}
	if j, ok := s.o.Jobs.Last(); ok {
		p.LastJob = &wire.JobRef{Op: j.Op, State: j.State, Code: j.Code, RollbackStatus: j.RollbackStatus}
	}
	if s.o.HubConnected != nil {
		up := s.o.HubConnected()
		p.Hub = &up
	}
	return p
}

// Job returns a job's record; FromError maps a missing one to not-found.
func (s *Service) Job(id string) (record.Job, error) { return s.o.Jobs.Get(id) }

// JobSpec is a mutating pipeline job, whatever transport it came by.
type JobSpec struct {
	ID     string // empty: a new id (the envelope id for envelopes)
	Op     string // apply or patch
	Source string // nats, http, boot-ui
	Signer string
	Input  provision.Input
	// Release runs when the job no longer needs its input (closes a spooled payload).
	Release func()
}

// SubmitJob starts a mutating pipeline job; its events go to every listener. A second
// job while one runs is refused (FromError: busy).
func (s *Service) SubmitJob(spec JobSpec) (record.Job, error) {
	release := spec.Release
	if release == nil {
		release = func() {}
	}
	in := spec.Input
	j, events, cancel, err := s.o.Jobs.SubmitWatch(jobs.Spec{ID: spec.ID, Op: spec.Op, Source: spec.Source,
		Signer: spec.Signer, Mutating: true,
		Run: func(ctx context.Context, run *jobs.Run) (*record.Result, error) {
			defer release()
			return provision.JobFunc(s.o.Prov, in)(ctx, run)
		}})
	if err != nil {
		release()
		return record.Job{}, err
	}
	s.fanOut(j.ID, events, cancel)
	return j, nil
}

// fanOut sends a job's events as they happen and its final record to the listeners.
func (s *Service) fanOut(id string, ch <-chan record.Event, cancel func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		seq := 0
		for ev := range ch {
			seq++
			s.notify(wire.EventMsg{JobID: id, Device: s.o.Device, Fleet: s.o.Fleet, Seq: seq, Event: &ev})
		}
		if j, err := s.o.Jobs.Get(id); err == nil {
			s.RefreshGroups()
			s.curMu.Lock()
			s.curAt = time.Time{}
			s.curMu.Unlock()
			s.notify(wire.EventMsg{JobID: id, Device: s.o.Device, Fleet: s.o.Fleet, Seq: seq + 1, Done: true, Job: &j})
		}
	}()
}

func (s *Service) notify(m wire.EventMsg) {
	s.mu.Lock()
	ls := append([]Listener(nil), s.listeners...)
	s.mu.Unlock()
	for _, l := range ls {
		l(m)
	}
}

// WatchJob returns a job as it is now and a channel of its later events (see
// jobs.Manager.Watch).
func (s *Service) WatchJob(id string) (record.Job, <-chan record.Event, func(), error) {
	return s.o.Jobs.Watch(id)
}

// Provisioned reports whether the device has an active config.
func (s *Service) Provisioned() bool { return s.o.Trust.Provisioned() }

// FirstBootUnsigned reports whether an unsigned apply may pass: never provisioned, no
// fleet trust file, and the first-boot window still open.
func (s *Service) FirstBootUnsigned() bool {
	return !s.o.Trust.Provisioned() && !s.o.Trust.HasFleetTrust() && s.o.Trust.FirstBootOpen()
}

// FirstBootRecheck is an unsigned first-boot apply's check at job start: the first-boot
// window must still be open (provision.Input.RequireUnprovisioned covers the rest).
func (s *Service) FirstBootRecheck() error {
	if !s.o.Trust.FirstBootOpen() {
		return auth.ErrFirstBootClosed
	}
	return nil
}

// Authorize checks a signature over msg in namespace ns for op on this device (the HTTP
// bridge's signed requests): the signer must be trusted by the device's own state.
func (s *Service) Authorize(msg, sig []byte, ns, op string) (auth.Decision, error) {
	return s.o.Trust.Verify(msg, sig, ns, op, auth.Target{Kind: "device"}, s.Groups())
}

// Version returns the worker's version.
func (s *Service) Version() string { return s.o.Version }

// Sign signs a message body the device sends (a reply, an event, its presence) with its
// identity key, for wire.DeviceSignatureHeader; "" when the device has no identity.
func (s *Service) Sign(body []byte) string {
	if s.o.Identity == nil {
		return ""
	}
	sig, err := auth.Sign(body, s.o.Identity, auth.NamespaceDevice)
	if err != nil {
		s.log.Error("signing a message", "err", err)
		return ""
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// IdentityKey returns the device's public identity key (nil without one).
func (s *Service) IdentityKey() ssh.PublicKey {
	if s.o.Identity == nil {
		return nil
	}
	return s.o.Identity.PublicKey()
}

// SignedHeader is a NATS header carrying the device's signature of body (empty without
// an identity). It is a plain map, so the device service needs no NATS import.
func (s *Service) SignedHeader(body []byte) map[string][]string {
	h := map[string][]string{}
	if sig := s.Sign(body); sig != "" {
		h[wire.DeviceSignatureHeader] = []string{sig}
	}
	return h
}

// cachedCurrent is the device's desired state and drift, computed at most once per
// currentTTL (it re-renders the active config and reads every derived file): pings,
// heartbeats and `current` requests share it. A finished job invalidates it.
func (s *Service) cachedCurrent(ctx context.Context) (provision.Current, error) {
	cur, _, err := s.cachedCurrentJSON(ctx)
	return cur, err
}

// cachedCurrentJSON is cachedCurrent and its JSON, encoded once per computation.
func (s *Service) cachedCurrentJSON(ctx context.Context) (provision.Current, []byte, error) {
	s.curMu.Lock()
	defer s.curMu.Unlock()
	now := s.o.Now()
	if !s.curAt.IsZero() && now.Sub(s.curAt) < currentTTL && !now.Before(s.curAt) {
		return s.curCache, s.curJSON, nil
	}
	cur, err := s.o.Prov.Current(ctx)
	if err != nil {
		return cur, nil, err
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return cur, nil, fmt.Errorf("encoding current: %w", err)
	}
	s.curCache, s.curJSON, s.curAt = cur, b, now
	return cur, b, nil
}
