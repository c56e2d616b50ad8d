// Command fleetpush measures `push --all` of vm-full to many simulated devices in one
// process: a hub (embedded, or a stock nats-server with -hub-bin), N devices (each with its own embedded NATS server leaf-linked
// to the hub), each with its own state dir on the simulate backend. It prints discovery and
// push times, devices per second, and the process's peak RSS.
//
//	go run ./test/bench/fleetpush -n 100
//	go run ./test/bench/fleetpush -n 1000 -durable   # then a durable push, and one device's reconnect
package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/core/system/simulate"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
	"github.com/fleetprov/fleetprov/messaging/node"
)

// profileTo, heapTo and deviceRoot are the -cpuprofile, -memprofile and -device-root flags.
var profileTo, heapTo, deviceRoot, hubBin string

// showPhases is the -phases flag.
var showPhases bool

const adminKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfm/RhPyisFyBAwigDt2AnnOU1fMAVk4XaCj3S/k/3Z admin@example"

func main() {
	n := flag.Int("n", 100, "devices")
	fixture := flag.String("config", "test/testdata/atomixos/vm-full.config.toml", "config to push")
	batch := flag.Int("batch", 0, "devices in flight (0: all)")
	verify := flag.Bool("verify", true, "check device signatures against known devices (enrolled on first use), as the publisher does")
	authn := flag.Bool("auth", true, "operator-mode hub (publisher nats init's hub.conf) with per-device credentials, as deployed; false: anonymous hub")
	durable := flag.Bool("durable", false, "after the one-shot push, push another config as durable desired state (JetStream on the hub), then stop one device, push again, start it and time its convergence (-auth)")
	flag.StringVar(&profileTo, "cpuprofile", "", "write a CPU profile of discovery and the pushes to this file")
	flag.StringVar(&heapTo, "memprofile", "", "write a heap profile after the pushes to this file")
	flag.BoolVar(&showPhases, "phases", false, "print when the durable pushes' devices reach each state")
	flag.StringVar(&hubBin, "hub-bin", "", "run the hub as this stock nats-server binary with the hub.conf 'publisher nats init' writes (its RSS and CPU reported apart; needs -auth); default: embedded in this process")
	flag.StringVar(&deviceRoot, "device-root", "", "directory for the devices' state dirs (default: beside the hub's; /dev/shm gives each device a disk of its own instead of 1,000 sharing one journal)")
	flag.Parse()
	if *durable && !*authn {
		fmt.Fprintln(os.Stderr, "fleetpush: -durable needs -auth")
		os.Exit(2)
	}
	if err := run(*n, *fixture, *batch, *verify, *authn, *durable); err != nil {
		fmt.Fprintln(os.Stderr, "fleetpush:", err)
		os.Exit(1)
	}
}

func run(n int, fixture string, batch int, verify, authn, durable bool) error {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	raw, err := os.ReadFile(fixture)
	if err != nil {
		return err
	}
	cfg := bytes.ReplaceAll(raw, []byte(adminKey), []byte(line))
	root, err := os.MkdirTemp("", "fleetpush-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	devRoot := root
	if deviceRoot != "" {
		if devRoot, err = os.MkdirTemp(deviceRoot, "fleetpush-"); err != nil {
			return err
		}
		defer os.RemoveAll(devRoot)
	}
	hubOpts := broker.Options{Name: "hub", Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Logger: log}
	// creds mints a user's credentials file ("" without -auth).
	creds := func(string, []string) (string, error) { return "", nil }
	var pubOpts []nats.Option
	var stock *stockHub
	if hubBin != "" && !authn {
		return fmt.Errorf("-hub-bin needs -auth")
	}
	if authn {
		f, err := natsauth.Create("bench")
		if err != nil {
			return err
		}
		if hubBin == "" {
			if err := f.Save(filepath.Join(root, "nats"), "127.0.0.1:-1", "127.0.0.1:-1"); err != nil {
				return err
			}
			hubOpts.ConfigFile = filepath.Join(root, "nats", natsauth.HubConfFile)
		} else if stock, err = startStockHub(hubBin, filepath.Join(root, "nats"), f); err != nil {
			return err
		}
		creds = func(id string, groups []string) (string, error) {
			var b []byte
			var err error
			if id == "" {
				b, err = f.Creds("publisher", natsauth.PublisherPermissions("bench"), 0)
			} else {
				b, err = f.DeviceCreds(id, groups, 0)
			}
			if err != nil {
				return "", err
			}
			p := filepath.Join(root, "nats", "user-"+id+".creds")
			return p, os.WriteFile(p, b, 0o600)
		}
		p, err := creds("", nil)
		if err != nil {
			return err
		}
		pubOpts = append(pubOpts, nats.UserCredentials(p))
	}
	var hub hubServer = stock
	if stock == nil {
		if hub, err = broker.Start(ctx, hubOpts); err != nil {
			return err
		}
	}
	defer hub.Shutdown()
	hubUsage := func() string {
		if stock == nil {
			return "hub in this process"
		}
		return stock.usage()
	}
	fmt.Printf("before the devices: %s\n", hubUsage())
	t0 := time.Now()
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	// The leaf-linked devices, and the first one's options to start it again (-durable).
	nodes := map[string]*node.Node{}
	var first node.Options
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("dev-%04d", i)
		dir := filepath.Join(devRoot, id)
		sim := simulate.New(simulate.Options{Home: filepath.Join(dir, "home")})
		prov := provision.New(provision.Options{State: state.Dir{Root: filepath.Join(dir, "state")}, Backend: sim.Backend(),
			Quadlet: quadlet.Dirs{Rootful: filepath.Join(dir, "q"), Rootless: filepath.Join(dir, "home", "q")}, Logger: log})
		hubCreds, err := creds(id, nil)
		if err != nil {
			return err
		}
		o := node.Options{Device: id, Fleet: "bench", Prov: prov, HeartbeatInterval: time.Hour, Logger: slog.New(devLog),
			Broker: broker.Options{Hub: []string{hub.LeafURL()}, HubCreds: hubCreds, ReconnectInterval: 2 * time.Second}}
		nd, err := node.Start(ctx, o)
		if err != nil {
			return err
		}
		if i == 0 {
			first = o
		}
		nodes[id] = nd
		stops = append(stops, func() { nd.Shutdown(ctx) })
	}
	startup := time.Since(t0)
	pubOpts = append(pubOpts, nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
		fmt.Fprintf(os.Stderr, "publisher connection: %v\n", err)
	}))
	nc, err := nats.Connect(hub.ClientURL(), pubOpts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	opts := []fleet.Option{fleet.WithSigner(signer)}
	if verify {
		known, err := fleet.LoadKnownDevices(filepath.Join(root, "known_devices"))
		if err != nil {
			return err
		}
		opts = append(opts, fleet.WithKnownDevices(known, true, nil))
	}
	c, _ := fleet.New(nc, "bench", opts...)
	if profileTo != "" {
		f, err := os.Create(profileTo)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// The links alone, before any discovery, for the hub's cost of admitting them.
	for t := time.Now(); hub.LeafNodes() < n && time.Since(t) < time.Minute; {
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("%d of %d links up %s after startup: %s\n", hub.LeafNodes(), n, time.Since(t0).Round(time.Millisecond), hubUsage())
	// The fleet has settled when one discovery finds every device (their links and
	// subscriptions have crossed to the hub); then one more discovery is timed alone.
	t1 := time.Now()
	var found int
	for time.Since(t1) < 180*time.Second {
		ds, _ := c.Discover(ctx, fleet.Target{All: true}, 500*time.Millisecond, 10*time.Second)
		fmt.Fprintf(os.Stderr, "discovered %d (hub leafnodes %d)\n", len(ds), hub.LeafNodes())
		if found = len(ds); found == n {
			break
		}
	}
	settle := time.Since(t1)
	if found != n {
		return fmt.Errorf("discovered %d of %d devices", found, n)
	}
	t1 = time.Now()
	ds, err := c.Discover(ctx, fleet.Target{All: true}, 500*time.Millisecond, 10*time.Second)
	discovery := time.Since(t1)
	if err != nil {
		return err
	}
	fmt.Printf("settled (all %d discovered) %s after startup; one discovery of the settled fleet: %d devices in %s; %s\n",
		n, settle.Round(time.Millisecond), len(ds), discovery.Round(time.Millisecond), hubUsage())
	t2 := time.Now()
	sum, err := c.Push(ctx, fleet.PushOptions{Target: fleet.Target{All: true}, Batch: fleet.Count{N: batch}, Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML},
		Discovery: 10 * time.Second, ReplyTimeout: 60 * time.Second}, nil)
	push := time.Since(t2)
	if err != nil {
		return err
	}
	fmt.Printf("auth=%v verify=%v devices=%d startup=%s discovery=%s push=%s devices/s=%.1f ok=%v counts=%v peakRSS=%s goroutines=%d\n",
		authn, verify, n, startup.Round(time.Millisecond), discovery.Round(time.Millisecond), push.Round(time.Millisecond),
		float64(sum.Counts[fleet.StateSucceeded])/push.Seconds(), sum.OK(), sum.Counts, peakRSS(), runtime.NumGoroutine())
	fmt.Printf("  after the push: %s\n", hubUsage())
	devLog.report()
	printReasons(sum)
	if durable {
		if err := durablePush(ctx, c, cfg, n, batch, first, nodes, hub, hubUsage); err != nil {
			return err
		}
	}
	if heapTo != "" {
		f, err := os.Create(heapTo)
		if err != nil {
			return err
		}
		defer f.Close()
		return pprof.WriteHeapProfile(f)
	}
	return nil
}

// durablePush pushes cfg (marked) as durable desired state to all, then stops the first
// device, pushes again, starts it, and times how long after its link is up it converges.
func durablePush(ctx context.Context, c *fleet.Client, cfg []byte, n, batch int, o node.Options, nodes map[string]*node.Node, hub hubServer, hubUsage func() string) error {
	ds, err := c.OpenDesired(ctx)
	if err != nil {
		return err
	}
	push := func(mark string, replyTimeout time.Duration) (fleet.Summary, time.Duration, error) {
		t := time.Now()
		sum, err := c.Push(ctx, fleet.PushOptions{Target: fleet.Target{All: true}, Batch: fleet.Count{N: batch}, Desired: ds,
			Payload:   fleet.Payload{Data: append(bytes.Clone(cfg), []byte("\n# "+mark+"\n")...), ContentType: envelope.TypeTOML},
			Discovery: 10 * time.Second, ReplyTimeout: replyTimeout}, phases(t))
		return sum, time.Since(t), err
	}
	sum, took, err := push("durable-1", 60*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("durable push: devices=%d push=%s devices/s=%.1f ok=%v counts=%v peakRSS=%s\n", n, took.Round(time.Millisecond),
		float64(sum.Counts[fleet.StateSucceeded])/took.Seconds(), sum.OK(), sum.Counts, peakRSS())
	// What the devices the push did not hear from did meanwhile.
	late := map[string]int{}
	for _, d := range sum.Devices {
		if d.State == fleet.StateSucceeded || nodes[d.Device] == nil {
			continue
		}
		j, err := nodes[d.Device].Jobs.Get(d.JobID)
		switch {
		case err != nil:
			late["no job"]++
		default:
			late["job "+string(j.State)]++
		}
	}
	if len(late) > 0 {
		fmt.Printf("  devices not heard from, by their own job record: %v\n", late)
	}
	fmt.Printf("  hub slow consumers: %d; %s\n", hub.SlowConsumers(), hubUsage())
	devLog.report()
	// One device goes away, misses a push, and comes back.
	if err := nodes[o.Device].Shutdown(ctx); err != nil {
		return err
	}
	sum, took, err = push("durable-2", 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("durable push with one device down (reply timeout 10s): push=%s counts=%v\n", took.Round(time.Millisecond), sum.Counts)
	printReasons(sum)
	var want string
	for _, d := range sum.Devices {
		if d.Device == o.Device {
			want = d.JobID
		}
	}
	if want == "" {
		return fmt.Errorf("the push did not list %s", o.Device)
	}
	t0 := time.Now()
	nd2, err := node.Start(ctx, o)
	if err != nil {
		return err
	}
	defer nd2.Shutdown(ctx)
	var linkUp time.Duration
	for time.Since(t0) < time.Minute {
		if linkUp == 0 && nd2.Broker.LeafNodes() > 0 {
			linkUp = time.Since(t0)
		}
		if j, err := nd2.Jobs.Get(want); err == nil && j.State == "succeeded" {
			fmt.Printf("reconnect: started→link up %s, started→converged %s (link up→converged %s)\n", linkUp.Round(time.Millisecond),
				time.Since(t0).Round(time.Millisecond), (time.Since(t0) - linkUp).Round(time.Millisecond))
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("the restarted device did not converge on %s within a minute", want)
}

// devLog counts the devices' log records by level, message and error (first 80 bytes).
var devLog = &countingHandler{counts: map[string]int{}}

type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelDebug }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *countingHandler) WithGroup(string) slog.Handler                { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	k := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			e := a.Value.String()
			k += ": " + e[:min(len(e), 80)]
		}
		return true
	})
	h.mu.Lock()
	h.counts[k]++
	h.mu.Unlock()
	return nil
}

// report prints the counts of records at Info and above (and Debug ones with an error)
// logged more than twice since the last report (the fleet's, not one device's).
func (h *countingHandler) report() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, n := range h.counts {
		if n > 2 && (!strings.HasPrefix(k, "DEBUG") || strings.Contains(k, ": ")) {
			fmt.Printf("    device log ×%d: %s\n", n, k)
		}
	}
	clear(h.counts)
}

// printReasons prints why devices did not succeed, counted.
func printReasons(sum fleet.Summary) {
	reasons := map[string]int{}
	for _, d := range sum.Devices {
		if d.State != fleet.StateSucceeded {
			reasons[d.State+": "+d.Error[:min(len(d.Error), 160)]]++
		}
	}
	for r, k := range reasons {
		fmt.Printf("  %d× %s\n", k, r)
	}
}

// phases returns a push progress callback that prints when the first device reached
// each state, and every hundredth device a final one (-phases).
func phases(t0 time.Time) func(fleet.DeviceState) {
	if !showPhases {
		return nil
	}
	var mu sync.Mutex
	first, count := map[string]time.Duration{}, map[string]int{}
	return func(s fleet.DeviceState) {
		mu.Lock()
		defer mu.Unlock()
		at := time.Since(t0)
		if _, ok := first[s.State]; !ok {
			first[s.State] = at
			fmt.Printf("    %s: first device %s\n", at.Round(time.Millisecond), s.State)
		}
		count[s.State]++
		if s.Final() && count[s.State]%100 == 0 {
			fmt.Printf("    %s: %d devices %s\n", at.Round(time.Millisecond), count[s.State], s.State)
		}
	}
}

func peakRSS() string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			return strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return "?"
}
