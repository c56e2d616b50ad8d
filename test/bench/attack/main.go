// Command attack measures a worker under the resource attacks of the hardening work, each
// against the same worker unattacked in the same run:
//
//   - RSS of the worker while 16 clients each send a 32 MiB first-boot upload and stall
//     (goal: < 64 MB above idle);
//   - latency of a ping and of a valid signed `current` (the device is provisioned with
//     the signer as admin; every answer must be accepted) while 3 NATS clients flood the
//     device's request subjects with junk (goal: p99 < 100 ms), against the same requests
//     with no flood, with the share of requests that needed a retry. The flooders hold
//     the device listener's admin key: the worst case, a client allowed to publish on the
//     device's subjects (an anonymous one is refused at connect; a device's hub
//     credentials cannot publish there at all).
//
// go run ./test/bench/attack [-pings 200] [-flood 3] [-config FILE]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"

	"crypto/ed25519"
	"crypto/rand"
)

func main() {
	pings := flag.Int("pings", 200, "requests measured per scenario")
	flooders := flag.Int("flood", 3, "junk-flooding NATS clients")
	fixture := flag.String("config", "test/testdata/atomixos/vm-full.config.toml", "config the device is provisioned with (its admin key is replaced by the bench's)")
	floodTo := flag.String("flood-to", "", "internal: be a flooder of this NATS URL until stdin closes, then print how many messages were sent")
	floodKey := flag.String("flood-key", "", "internal: the flooder's nkey seed file")
	floodID := flag.Int("flood-id", 0, "internal: the flooder's number")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the flood phase to this file")
	flag.Parse()
	if *floodTo != "" {
		if err := flood(*floodTo, *floodKey, *floodID); err != nil {
			fmt.Fprintln(os.Stderr, "attack flooder:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*pings, *flooders, *fixture, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "attack:", err)
		os.Exit(1)
	}
}

func rssMB() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

func start(ctx context.Context, root string) (*node.Node, error) {
	log := slog.New(slog.DiscardHandler)
	sim := simulate.New(simulate.Options{Home: filepath.Join(root, "home")})
	prov := provision.New(provision.Options{State: state.Dir{Root: filepath.Join(root, "state")}, Backend: sim.Backend(),
		Quadlet: quadlet.Dirs{Rootful: filepath.Join(root, "q"), Rootless: filepath.Join(root, "home", "q")}, Logger: log})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return node.Start(ctx, node.Options{Device: "d1", Fleet: "bench", Prov: prov, HeartbeatInterval: time.Hour, Logger: log,
		Broker: broker.Options{Listen: "127.0.0.1:-1"}, HTTP: l})
}

// fixtureAdmin is the admin key line of the AtomixOS fixtures, replaced by the bench's.
const fixtureAdmin = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfm/RhPyisFyBAwigDt2AnnOU1fMAVk4XaCj3S/k/3Z admin@example"

func run(pings, flooders int, fixture, profile string) error {
	ctx := context.Background()
	raw, err := os.ReadFile(fixture)
	if err != nil {
		return fmt.Errorf("%w (run from the repository root, or pass -config)", err)
	}
	root, err := os.MkdirTemp("", "fleetprov-attack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	n, err := start(ctx, root)
	if err != nil {
		return err
	}
	defer n.Shutdown(ctx)

	// 1. Stalled uploads.
	idle := rssMB()
	addr := n.HTTPAddr()
	const size = 32 << 20
	chunk := make([]byte, 1<<20)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			fmt.Fprintf(c, "POST /api/config HTTP/1.1\r\nHost: %s\r\n%s: 1\r\nContent-Length: %d\r\n\r\n", addr, wire.FirstBootHeader, size)
			for range size/len(chunk) - 1 {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond) // let the last writes land before measuring (a benchmark, not a test)
	attacked := rssMB()
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("stalled uploads: RSS idle %.1f MB, under 16 stalled 32 MiB uploads %.1f MB (+%.1f MB; goal < 64)\n", idle, attacked, attacked-idle)

	// 2. Junk flood on NATS.
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	admin, err := nats.NkeyOptionFromSeed(n.AdminKey)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(n.Broker.ClientURL(), admin)
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := fleet.New(nc, "bench", fleet.WithSigner(signer))
	if err != nil {
		return err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	cfg := bytes.ReplaceAll(raw, []byte(fixtureAdmin), []byte(line))
	sum, err := client.Push(ctx, fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}}, Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML}}, nil)
	if err != nil || !sum.OK() {
		return fmt.Errorf("provisioning the device: %+v %v", sum, err)
	}
	// measure fails the run when a valid request was refused, or lost after 5 tries.
	measure := func(label string) error {
		var lat []time.Duration
		retries, lost, refused := 0, 0, 0
		for i := range pings {
			t0 := time.Now()
			ok := false
			for try := range 5 {
				if try > 0 {
					retries++
				}
				if i%2 == 0 {
					_, err := client.Ping(ctx, "d1", time.Second)
					ok = err == nil
				} else {
					// A valid signed request, as the publisher sends it: signed by an
					// admin, bound to this connection's inbox, answered with the device's
					// signed current.
					subj := subjects.Subject{Fleet: "bench", Kind: subjects.Device, Name: "d1", Op: "current"}.String()
					r, err := client.Send(ctx, subj, client.NewEnvelope("current", "d1", "", fleet.Payload{}), time.Second)
					if err == nil && !r.Accepted {
						refused++
					}
					ok = err == nil && r.Accepted
				}
				if ok {
					break
				}
			}
			if !ok {
				lost++
				continue
			}
			lat = append(lat, time.Since(t0))
		}
		sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
		pct := func(p float64) time.Duration {
			if len(lat) == 0 {
				return 0
			}
			return lat[min(len(lat)-1, int(float64(len(lat))*p))]
		}
		fmt.Printf("%s: %d requests (ping and signed current), p50 %s, p99 %s, max %s, retried %d, refused %d, lost after 5 tries %d\n", label, len(lat)+lost,
			pct(0.5).Round(10*time.Microsecond), pct(0.99).Round(10*time.Microsecond), pct(1).Round(10*time.Microsecond), retries, refused, lost)
		if refused > 0 || lost > 0 {
			return fmt.Errorf("%s: %d valid requests refused, %d lost", label, refused, lost)
		}
		return nil
	}
	if err := measure("no flood"); err != nil {
		return err
	}
	// The flooders are other processes, as on a network: in this one, their busy loops
	// would share the Go scheduler's 10 ms slices with the worker and measure that.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bytes.Buffer
	}
	var children []child
	for c := range flooders {
		cmd := exec.Command(self, "-flood-to", n.Broker.ClientURL(), "-flood-key", n.AdminKey, "-flood-id", strconv.Itoa(c))
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return err
		}
		children = append(children, child{cmd, stdin, out})
	}
	time.Sleep(time.Second) // the flood is under way
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	flooded := measure(fmt.Sprintf("%d-client junk flood", flooders))
	pprof.StopCPUProfile()
	total := 0
	for _, c := range children {
		c.stdin.Close()
		if err := c.cmd.Wait(); err != nil {
			return fmt.Errorf("flooder: %w", err)
		}
		k, _ := strconv.Atoi(strings.TrimSpace(c.out.String()))
		total += k
	}
	fmt.Printf("junk sent: %d messages; dropped by the worker: %d; worker connected: %v (reconnects %d, server-side slow consumers %d); RSS %.1f MB\n",
		total, n.NATS.Dropped(), n.Conn.IsConnected(), n.Conn.Stats().Reconnects, n.Broker.SlowConsumers(), rssMB())
	return flooded
}

// flood sends junk requests to the device's subjects as fast as it can until stdin
// closes, then prints how many it sent. The junk is what a client allowed to publish there
// can send: 2 KiB of garbage as apply and current (no signature), garbage and empty pings
// (an empty ping is a valid request: the device answers it with its signed presence), and
// garbage job queries.
func flood(url, key string, id int) error {
	opt, err := nats.NkeyOptionFromSeed(key)
	if err != nil {
		return err
	}
	fc, err := nats.Connect(url, opt)
	if err != nil {
		return err
	}
	defer fc.Close()
	var stopped atomic.Bool
	go func() {
		io.Copy(io.Discard, os.Stdin)
		stopped.Store(true)
	}()
	junk := make([]byte, 2048)
	rand.Read(junk)
	type req struct {
		subj string
		body []byte
	}
	subj := func(op string) string {
		return subjects.Subject{Fleet: "bench", Kind: subjects.Device, Name: "d1", Op: op}.String()
	}
	reqs := []req{{subj("apply"), junk}, {subj("ping"), junk}, {subj("current"), junk}, {subj("job"), junk}, {subj("ping"), nil}}
	sent := 0
	for i := id; !stopped.Load(); i++ {
		r := reqs[i%len(reqs)]
		if err := fc.PublishRequest(r.subj, "_INBOX.junk", r.body); err != nil {
			return err
		}
		sent++
	}
	fc.Flush()
	fmt.Println(sent)
	return nil
}
