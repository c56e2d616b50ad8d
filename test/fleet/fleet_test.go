// Package fleet_test runs whole fleets in one test process: a hub (embedded, or the stock
// nats-server binary) and many workers, each with its own embedded NATS server leaf-linked
// to the hub and its own state dir on the simulate backend, driven by the publisher's
// fleet client.
package fleet_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/internal/fptest/natshub"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
)

type worker struct {
	id    string
	dev   *provisiontest.Device
	node  *node.Node
	creds string // its hub credentials
}

type fleetRig struct {
	t       *testing.T
	workers []*worker
	byID    map[string]*worker
	admin   ssh.Signer
	cfg     []byte
	// cfg2 adds a required container "extra": a device told to fail extra.service fails
	// cfg2 only, and its rollback to cfg succeeds.
	cfg2 []byte
}

func logger(t testing.TB) *slog.Logger {
	if os.Getenv("FLEET_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
}

// startWorker starts one device leaf-linked to hubURL with the hub credentials creds.
func startWorker(t *testing.T, id string, groups []string, hubURL, creds string) *worker {
	t.Helper()
	n, dev := nodetest.Start(t, id, func(o *node.Options) {
		o.Fleet, o.Groups, o.Logger = "fleet", groups, logger(t)
		o.Broker = broker.Options{Listen: "127.0.0.1:-1", Hub: []string{hubURL}, HubCreds: creds, ReconnectInterval: 100 * time.Millisecond}
	})
	return &worker{id: id, dev: dev, node: n}
}

// newFleet starts n devices leaf-linked to hubURL, each with its own device credentials
// minted by auth (the fleet's NATS authority).
func newFleet(t *testing.T, hubURL string, auth *natsauth.Fleet, n int, groupOf func(i int) string) *fleetRig {
	t.Helper()
	admin, line := configtest.NewKey(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	cfg = bytes.Replace(cfg, []byte(`required = ["edgeproxy", "myapp"]`), []byte("required = [\"edgeproxy\", \"myapp\"]\ntimeout_seconds = 1"), 1)
	cfg2 := bytes.Replace(cfg, []byte(`required = ["edgeproxy", "myapp"]`), []byte(`required = ["edgeproxy", "extra", "myapp"]`), 1)
	cfg2 = append(cfg2, []byte("\n[containers.container.extra]\nprivileged = true\n[containers.container.extra.Container]\nImage = \"docker.io/library/busybox:latest\"\n")...)
	r := &fleetRig{t: t, admin: admin, cfg: cfg, cfg2: cfg2, byID: map[string]*worker{}}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("dev-%02d", i)
		creds := brokertest.DeviceCreds(t, auth, id, groupOf(i))
		w := startWorker(t, id, []string{groupOf(i)}, hubURL, creds)
		w.creds = creds
		r.workers = append(r.workers, w)
		r.byID[id] = w
	}
	return r
}

func (r *fleetRig) client(nc *nats.Conn) *fleet.Client {
	c, err := fleet.New(nc, "fleet", fleet.WithSigner(r.admin))
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// waitDiscover polls until discovery on target sees want devices.
func waitDiscover(t *testing.T, c *fleet.Client, target fleet.Target, want int) {
	t.Helper()
	var found int
	if !fptest.Eventually(20*time.Second, func() bool {
		ds, _ := c.Discover(context.Background(), target, 300*time.Millisecond, 3*time.Second)
		found = len(ds)
		return found == want
	}) {
		t.Fatalf("discovery sees %d devices, not %d", found, want)
	}
}

func (r *fleetRig) push(c *fleet.Client, o fleet.PushOptions) fleet.Summary {
	r.t.Helper()
	if o.Payload.Data == nil {
		o.Payload = fleet.Payload{Data: r.cfg, ContentType: envelope.TypeTOML}
	}
	sum, err := c.Push(context.Background(), o, nil)
	if err != nil {
		r.t.Fatalf("Push() error = %v", err)
	}
	return sum
}

func groupHalf(i int) string {
	if i < 10 {
		return "edge"
	}
	return "core"
}

func TestFleetOfTwentyOnEmbeddedHub(t *testing.T) {
	hub, auth := brokertest.AuthHub(t, "fleet")
	r := newFleet(t, hub.LeafURL(), auth, 20, groupHalf)
	nc := brokertest.PublisherConn(t, hub.ClientURL(), auth)
	c := r.client(nc)
	waitDiscover(t, c, fleet.Target{All: true}, 20)

	t.Run("group_reaches_exactly_the_group", func(t *testing.T) {
		sum := r.push(c, fleet.PushOptions{Target: fleet.Target{Group: "edge"}})
		if !sum.OK() || len(sum.Devices) != 10 || sum.Counts[fleet.StateSucceeded] != 10 {
			t.Fatalf("summary = %+v", sum)
		}
		for _, w := range r.workers {
			want := w.id < "dev-10"
			if got := w.dev.Prov.State().HasActive(); got != want {
				t.Errorf("%s provisioned = %v; want %v", w.id, got, want)
			}
		}
	})
	t.Run("all_reaches_all", func(t *testing.T) {
		sum := r.push(c, fleet.PushOptions{Target: fleet.Target{All: true}, Batch: fleet.Count{N: 25, Percent: true}})
		if !sum.OK() || sum.Counts[fleet.StateSucceeded] != 20 {
			t.Fatalf("summary = %+v", sum)
		}
	})
	t.Run("failing_canary_stops_the_rollout", func(t *testing.T) {
		r.byID["dev-10"].dev.Sim.SetFail("extra.service", true)
		sum := r.push(c, fleet.PushOptions{Target: fleet.Target{Group: "core"}, Canary: 1, Payload: fleet.Payload{Data: r.cfg2, ContentType: envelope.TypeTOML}})
		if sum.Counts[fleet.StateRolledBack] != 1 || sum.Counts[fleet.StateSkipped] != 9 || sum.Stopped == "" || sum.OK() {
			t.Fatalf("summary = %+v", sum)
		}
		if sum.Devices[0].Device != "dev-10" || sum.Devices[0].RollbackStatus != "completed" {
			t.Errorf("canary = %+v", sum.Devices[0])
		}
	})
	t.Run("max_failures_is_honoured", func(t *testing.T) {
		for _, id := range []string{"dev-00", "dev-01", "dev-02"} {
			r.byID[id].dev.Sim.SetFail("extra.service", true)
		}
		one := fleet.Count{N: 1}
		sum := r.push(c, fleet.PushOptions{Target: fleet.Target{Group: "edge"}, Batch: fleet.Count{N: 2}, MaxFailures: &one,
			Payload: fleet.Payload{Data: r.cfg2, ContentType: envelope.TypeTOML}})
		// Batch 1 (dev-00, dev-01) fails twice: more than 1, so nothing else starts.
		if sum.Counts[fleet.StateRolledBack] != 2 || sum.Counts[fleet.StateSkipped] != 8 || sum.Stopped == "" {
			t.Fatalf("summary = %+v", sum)
		}
		for _, d := range sum.Devices[:2] {
			if d.RollbackStatus != "completed" {
				t.Errorf("%s rollback = %s", d.Device, d.RollbackStatus)
			}
		}
	})
	t.Run("explicit_devices_and_busy", func(t *testing.T) {
		sum := r.push(c, fleet.PushOptions{Target: fleet.Target{Devices: []string{"dev-05", "dev-15", "nope"}}, ReplyTimeout: time.Second})
		if sum.Counts[fleet.StateSucceeded] != 2 || sum.Counts[fleet.StateNoReply] != 1 {
			t.Fatalf("summary = %+v", sum)
		}
	})
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// stockHub runs the stock nats-server binary on the hub.conf that 'publisher nats init'
// writes (operator mode, the fleet account preloaded).
type stockHub struct {
	t                    *testing.T
	conf                 string
	cmd                  *exec.Cmd
	clientPort, leafPort int
	auth                 *natsauth.Fleet
}

func startStockHub(t *testing.T) *stockHub {
	t.Helper()
	bin := natshub.Binary(t)
	h := &stockHub{t: t, clientPort: freePort(t), leafPort: freePort(t)}
	var err error
	if h.auth, err = natsauth.Create("fleet"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := h.auth.Save(dir, fmt.Sprintf("127.0.0.1:%d", h.clientPort), fmt.Sprintf("127.0.0.1:%d", h.leafPort)); err != nil {
		t.Fatal(err)
	}
	h.conf = filepath.Join(dir, natsauth.HubConfFile)
	h.cmd = exec.Command(bin, "-c", h.conf)
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *stockHub) start() {
	h.cmd = exec.Command(h.cmd.Path, "-c", h.conf)
	if err := h.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	fptest.WaitFor(h.t, 10*time.Second, "the stock nats-server to accept clients", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(h.clientPort))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (h *stockHub) stop() {
	if h.cmd != nil && h.cmd.Process != nil {
		h.cmd.Process.Kill()
		h.cmd.Wait()
		h.cmd.Process = nil
	}
}

func (h *stockHub) url() string     { return "nats://127.0.0.1:" + strconv.Itoa(h.clientPort) }
func (h *stockHub) leafURL() string { return "nats-leaf://127.0.0.1:" + strconv.Itoa(h.leafPort) }

func TestStockNATSHubAndLeafLoss(t *testing.T) {
	hub := startStockHub(t)
	r := newFleet(t, hub.leafURL(), hub.auth, 4, func(i int) string { return "edge" })
	nc := brokertest.PublisherConn(t, hub.url(), hub.auth, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	c := r.client(nc)
	waitDiscover(t, c, fleet.Target{All: true}, 4)
	if sum := r.push(c, fleet.PushOptions{Target: fleet.Target{All: true}}); !sum.OK() {
		t.Fatalf("push through the stock hub = %+v", sum)
	}

	// The hub goes away: each device keeps serving local clients on its own server.
	hub.stop()
	for _, w := range r.workers {
		local := nodetest.Connect(t, w.node)
		lc, _ := fleet.New(local, "fleet")
		p, err := lc.Ping(context.Background(), w.id, 5*time.Second)
		local.Close()
		if err != nil || !p.Provisioned {
			t.Errorf("%s without hub: ping = %+v, %v", w.id, p, err)
		}
	}
	// The hub comes back on the same address: devices reappear without a restart.
	hub.start()
	waitDiscover(t, c, fleet.Target{All: true}, 4)
}
