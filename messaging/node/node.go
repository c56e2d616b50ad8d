// Package node assembles a running worker: crash recovery and the job history under the
// state lock, the embedded NATS server (optionally leaf-linked to a hub), the
// transport-neutral device service with its two adapters (NATS on an in-process
// connection, the HTTP bridge), and the replay guard, trust rules and metrics they share.
// `worker serve` and the fleet tests start devices through it.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/bridge"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/device"
	"github.com/fleetprov/fleetprov/messaging/devicenats"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// Options configure a node.
type Options struct {
	Device  string
	Fleet   string
	Groups  []string
	Version string
	Prov    *provision.Provisioner
	Broker  broker.Options
	// FleetTrustFile is the image's allowed_signers for first boot (may not exist).
	FleetTrustFile string
	// FirstBootWindow closes the first-boot bases (the unsigned bridge and Boot UI, and
	// proof of possession) this long after the device's first start; 0 leaves them open
	// until it is provisioned.
	FirstBootWindow time.Duration
	Config          config.Options
	Limits          bundle.Limits
	// HeartbeatInterval between presence messages (default 30s).
	HeartbeatInterval time.Duration
	// HTTP, when set, serves the HTTP bridge (API, Boot UI, /metrics) on this listener.
	HTTP net.Listener
	// HTTPHosts are extra host names the Boot UI answers to.
	HTTPHosts []string
	// HTTPFollowLAN moves the bridge to the LAN gateway address of the config after each
	// successful apply (same port); for a bridge that starts on a first-boot address.
	HTTPFollowLAN bool
	// LinkPoll is how often the hub link is checked, to read the desired state again when
	// it comes back (default 1s).
	LinkPoll time.Duration
	Logger   *slog.Logger
}

// Node is a running worker.
type Node struct {
	Broker  *broker.Broker
	Conn    *nats.Conn
	Jobs    *jobs.Manager
	Service *device.Service
	NATS    *devicenats.Adapter
	// Desired converges on the hub's durable desired state (idle without a hub).
	Desired   *devicenats.Converger
	Prov      *provision.Provisioner
	Trust     *auth.Trust
	Replay    *auth.ReplayGuard
	Recovered state.Action
	Identity  ssh.Signer
	// AdminKey is the path of the local admin nkey seed (root-only): the credential for
	// tools on the device that use its NATS listener (publisher --creds).
	AdminKey string
	Bridge   *bridge.Server
	Metrics  *bridge.Metrics
	log      *slog.Logger
	http     *httpServer
	follow   sync.WaitGroup // followLAN moves in flight
	stop     chan struct{}  // closed by Shutdown: ends the replay pruner
	stopOnce sync.Once
	bg       sync.WaitGroup
}

// replayPruneInterval is how often expired replay records are removed.
const replayPruneInterval = time.Minute

// pruneReplay removes expired replay records every minute until Shutdown.
func (n *Node) pruneReplay() {
	defer n.bg.Done()
	t := time.NewTicker(replayPruneInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if _, err := n.Replay.Prune(); err != nil {
				n.log.Warn("pruning replay records", "err", err)
			}
		case <-n.stop:
			return
		}
	}
}

// Start brings a node up, or returns an error with nothing left running.
func Start(ctx context.Context, o Options) (n *Node, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	n = &Node{Prov: o.Prov, log: o.Logger, Metrics: bridge.NewMetrics(nil), stop: make(chan struct{})}
	st := o.Prov.State()
	n.Recovered, err = o.Prov.Recover(ctx, func(act state.Action) error {
		var err error
		n.Jobs, err = jobs.New(jobs.Options{Dir: filepath.Join(st.Root, "jobs"), Recovered: string(act), Logger: o.Logger,
			OnFinish: func(j record.Job) {
				n.Metrics.JobFinished(j)
				if o.HTTPFollowLAN && n.http != nil && j.State == record.Succeeded {
					n.follow.Add(1)
					go func() { defer n.follow.Done(); n.followLAN() }()
				}
			}})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("recovering state: %w", err)
	}
	// Uploads and fetched payloads spooled by a worker that died mid-request.
	for _, pattern := range []string{"fleetprov-upload-*", "fleetprov-payload-*"} {
		leftovers, _ := filepath.Glob(filepath.Join(st.Root, pattern))
		for _, p := range leftovers {
			os.Remove(p)
		}
	}
	n.Replay = &auth.ReplayGuard{Dir: filepath.Join(st.Root, "replay"), Skew: envelope.ClockSkew}
	if _, err := n.Replay.Prune(); err != nil {
		return nil, err
	}
	n.bg.Add(1)
	go n.pruneReplay()
	started := n
	defer func() {
		if err != nil {
			close(started.stop)
			started.bg.Wait()
		}
	}()
	n.Trust = &auth.Trust{State: st, FleetTrustFile: o.FleetTrustFile, Config: o.Config}
	if o.FirstBootWindow > 0 {
		first, err := firstStart(st.Root, time.Now())
		if err != nil {
			return nil, err
		}
		n.Trust.FirstBootUntil = first.Add(o.FirstBootWindow)
		if !n.Trust.FirstBootOpen() && !n.Trust.Provisioned() && !n.Trust.HasFleetTrust() {
			o.Logger.Warn("first-boot window closed: only a fleet trust file signer can provision this device",
				"first_start", first, "window", o.FirstBootWindow)
		}
	}
	bo := o.Broker
	if bo.Name == "" {
		bo.Name = o.Device
	}
	bo.Logger = o.Logger
	n.AdminKey = filepath.Join(st.Root, AdminKeyFile)
	admin, created, err := natsauth.LoadOrCreateUser(n.AdminKey)
	if err != nil {
		return nil, fmt.Errorf("NATS admin key: %w", err)
	}
	if created {
		o.Logger.Info("NATS admin key created", "path", n.AdminKey)
	}
	adminPub, _ := admin.PublicKey()
	bo.Users = []string{adminPub}
	b, err := broker.Start(ctx, bo)
	if err != nil {
		return nil, err
	}
	n.Broker = b
	defer func() {
		if err != nil {
			b.Shutdown() // n is nil by now
		}
	}()
	// The worker's replies to its own fetches come to an inbox under its device's subjects:
	// the only inbox its hub credentials may subscribe to.
	conn, err := n.Broker.Connect(nats.CustomInboxPrefix(subjects.InboxPrefix(o.Fleet, o.Device)))
	if err != nil {
		return nil, err
	}
	n.Conn = conn
	defer func() {
		if err != nil {
			conn.Close() // it would reconnect forever to the stopped server
		}
	}()
	hub := func() bool { return n.Broker.LeafNodes() > 0 }
	if len(bo.Hub) == 0 {
		hub = nil
	}
	idPath := o.Prov.IdentityKeyPath()
	id, created, err := identity.LoadOrCreate(idPath, "fleetprov-device:"+o.Device)
	if err != nil {
		return nil, err
	}
	if created {
		o.Logger.Info("identity key created", "path", idPath)
	}
	n.Identity = id
	n.Service = device.New(device.Options{Identity: id,
		Fleet: o.Fleet, Device: o.Device, Groups: o.Groups, Prov: o.Prov, Jobs: n.Jobs, Trust: n.Trust, Replay: n.Replay,
		Version: o.Version, Limits: o.Limits, SpoolDir: st.Root, HubConnected: hub, Logger: o.Logger,
		Payloads: devicenats.Blobs{Conn: n.Conn, Fleet: o.Fleet, Device: o.Device},
		MarkFile: filepath.Join(st.Root, MarkFile),
	})
	n.NATS = devicenats.New(devicenats.Options{Conn: n.Conn, Service: n.Service, HeartbeatInterval: o.HeartbeatInterval,
		Logger: o.Logger, OnReject: func(code string) { n.Metrics.Rejected("nats", code) }})
	if o.HTTP != nil {
		// Built before the service starts taking jobs: a finishing job may move it.
		n.Bridge = bridge.New(bridge.Options{Service: n.Service, Nonces: &auth.Nonces{}, Metrics: n.Metrics,
			MaxBody: o.Limits.MaxCompressed, SpoolDir: st.Root, Hosts: o.HTTPHosts, Logger: o.Logger})
		n.http = &httpServer{bridge: n.Bridge, log: o.Logger.With("component", "bridge")}
	}
	if err := n.NATS.Start(ctx); err != nil {
		n.Service.Close()
		n.Conn.Close()
		return nil, err
	}
	n.Desired = devicenats.NewConverger(devicenats.ConvergerOptions{Conn: n.Conn, Service: n.Service, LinkUp: hub,
		Poll: o.LinkPoll, Logger: o.Logger})
	if err := n.Desired.Start(ctx); err != nil {
		n.NATS.Stop()
		n.Service.Close()
		n.Conn.Close()
		return nil, err
	}
	o.Prov.SetReach(n.Desired.Reach)
	o.Prov.SetRelink(n.Broker.Relink)
	if n.Recovered == provision.ActionAwaitingConfirm {
		// A network change was waiting for its confirmation when the worker stopped: wait
		// for the rest of its window, then commit it or roll it back.
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			go func() { <-n.stop; cancel() }()
			if err := o.Prov.ResumeConfirm(ctx, nil); err != nil {
				o.Logger.Warn("network change rolled back", "err", err)
			}
		}()
	}
	if o.HTTP != nil {
		n.http.serve(o.HTTP)
		if o.HTTPFollowLAN {
			n.followLAN() // an already provisioned device starts on its LAN address
		}
	}
	o.Logger.Info("worker started", "device", o.Device, "fleet", o.Fleet, "recovery", string(n.Recovered),
		"identity", identity.Fingerprint(id.PublicKey()),
		"nats", n.Broker.ClientURL(), "hub", len(bo.Hub) > 0)
	return n, nil
}

// HTTPAddr returns where the bridge listens now ("" without one).
func (n *Node) HTTPAddr() string {
	if n.http == nil {
		return ""
	}
	return n.http.addr()
}

// Shutdown stops taking requests, lets a running job finish until ctx ends (then it is
// cancelled and recorded as such), and stops the server. A job that finishes meanwhile
// may still ask the bridge to follow the LAN; a stopped bridge ignores it.
func (n *Node) Shutdown(ctx context.Context) error {
	if n.http != nil {
		n.http.stop()
	}
	jerr := n.Jobs.Shutdown(ctx)
	n.follow.Wait()
	n.stopOnce.Do(func() { close(n.stop) })
	n.bg.Wait()
	n.Desired.Stop()
	n.NATS.Stop()
	n.Service.Close()
	n.Conn.Drain()
	n.Broker.Shutdown()
	if jerr != nil && !errors.Is(jerr, context.DeadlineExceeded) && !errors.Is(jerr, context.Canceled) {
		return jerr
	}
	return nil
}

// MarkFile is the anti-rollback mark in the state dir: the newest envelope the device
// took, which durable desired state must be newer than.
const MarkFile = "applied-mark.json"

// AdminKeyFile is the local admin nkey seed in the state dir (0600).
const AdminKeyFile = "nats-admin.nk"

// FirstStartFile records when the worker first started on this device (RFC 3339), the
// start of the first-boot window. Only root can reopen the window, by removing it.
const FirstStartFile = "first-start"

// firstStart reads the device's first start, recording now when there is none yet.
func firstStart(stateRoot string, now time.Time) (time.Time, error) {
	p := filepath.Join(stateRoot, FirstStartFile)
	b, err := os.ReadFile(p)
	if err == nil {
		t, perr := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
		if perr != nil {
			return time.Time{}, fmt.Errorf("reading %s: %w (remove it to restart the first-boot window)", p, perr)
		}
		return t, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return time.Time{}, fmt.Errorf("reading first start: %w", err)
	}
	if err := os.MkdirAll(stateRoot, 0o700); err != nil {
		return time.Time{}, fmt.Errorf("creating state dir: %w", err)
	}
	if err := state.WriteFileAtomic(p, []byte(now.UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return time.Time{}, fmt.Errorf("recording first start: %w", err)
	}
	return now, nil
}
