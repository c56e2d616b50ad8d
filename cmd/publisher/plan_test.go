package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/system"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
)

// TestPushPlan: push --plan asks the device itself, through a real hub, what an apply
// would change (units against its active ones, host steps against its host) and applies
// nothing; a config its host refuses is reported as refused, exit 1.
func TestPushPlan(t *testing.T) {
	fh := initFleetHub(t)
	fh.start(t)
	home, env, hub := fh.home, fh.env, fh.hub
	keyPath, admin := adminKey(t)
	creds := fh.deviceCreds(t, "gw1", "")
	dev := provisiontest.NewWithHost(t)
	dev.Sim.AddHostUser(system.HostUser{Name: "opsuser", UID: 1500, GID: 1500, Home: "/home/opsuser", Shell: "/bin/sh"})
	nodetest.StartDevice(t, dev, "gw1", func(o *node.Options) {
		o.Fleet = "prod"
		o.Broker = broker.Options{Listen: "127.0.0.1:-1", Hub: []string{hub.LeafURL()}, HubCreds: creds, ReconnectInterval: 100 * time.Millisecond}
	})
	fptest.WaitFor(t, 10*time.Second, "the hub link", func() bool { return hub.LeafNodes() == 1 })
	viewerKey, viewer := adminKey(t)
	// viewer may only validate: it gets no plan (the plan tells the device's state).
	signers := fmt.Sprintf("[users.viewer]\nisAdmin = true\nssh_key = %q\n[fleet.signers.viewer]\nops = [\"validate\"]\n", viewer)
	write := func(name, user string, port int, confirm, image string, containers ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "version = 1\n%s[users.%s]\nisAdmin = true\nssh_key = %q\n[network.firewall.inbound.wan]\ntcp = [%d]\n[activation]\nrequired = [%q]\nconfirm = %q\n",
			signers, user, admin, port, containers[0], confirm)
		for _, c := range containers {
			fmt.Fprintf(&b, "[containers.container.%s]\nprivileged = true\n[containers.container.%s.Container]\nImage = %q\n", c, c, image)
		}
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, []byte(b.String()), 0o600)
		return p
	}
	const nginx = "docker.io/library/nginx:1"
	pub := func(args ...string) (int, string) {
		if !slices.Contains(args, "--key") {
			args = append(args, "--key", keyPath)
		}
		return runEnv(t, home, env, append(args, "--fleet", "prod", "--server", hub.ClientURL(), "--reply-timeout", "5s")...)
	}
	if code, out := pub("push", write("a.toml", "admin", 443, "none", nginx, "web", "db"), "--device", "gw1", "--tofu", "--timeout", "30s", "--durable", "off"); code != 0 {
		t.Fatalf("push = %d\n%s", code, out)
	}
	before, jobs := dev.Sim.Transcript(), countJobs(t, dev)
	active, _ := os.ReadFile(filepath.Join(dev.StateDir, "config", "config.toml"))

	code, out := pub("push", write("b.toml", "admin", 8443, "auto", nginx, "web", "cache"), "--device", "gw1", "--plan")
	t.Logf("push --plan:\n%s", out)
	for _, want := range []string{
		"gw1: valid; an apply would change:",
		"unit  add     cache.container (rootful)",
		"unit  remove  db.container (rootful)",
		"host  file /etc/fleetprov/firewall.nft: write (firewall)",
		"host  firewall table inet fleetprov: load",
		"the network change must be confirmed by the hub link within 120s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("push --plan misses %q:\n%s", want, out)
		}
	}
	if code != 0 || strings.Contains(out, "web.container") || strings.Contains(out, "user admin") {
		t.Errorf("push --plan = %d (want 0, and nothing about what stays the same)\n%s", code, out)
	}
	code, out = pub("push", write("b2.toml", "admin", 443, "none", "docker.io/library/nginx:2", "web", "db"), "--device", "gw1", "--plan")
	if code != 0 || !strings.Contains(out, "unit  change  db.container (rootful)") || !strings.Contains(out, "unit  change  web.container (rootful)") || strings.Contains(out, "host  ") {
		t.Errorf("push --plan of a new image = %d\n%s", code, out)
	}
	code, out = pub("push", write("c.toml", "admin", 443, "none", nginx, "web", "db"), "--device", "gw1", "--plan", "--json")
	var res struct {
		Devices []devicePlan `json:"devices"`
	}
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || len(res.Devices) != 1 || res.Devices[0].Plan == nil ||
		len(res.Devices[0].Plan.Units)+len(res.Devices[0].Plan.Host) != 0 || !res.Devices[0].Plan.HostManaged {
		t.Errorf("push --plan --json of the active config = %d, %v\n%s", code, err, out)
	}
	// A config whose admin is an account the image made: the device's host refuses it.
	code, out = pub("push", write("d.toml", "opsuser", 443, "none", nginx, "web"), "--device", "gw1", "--plan")
	if code != cli.ExitFailed || !strings.Contains(out, "gw1: refused") || !strings.Contains(out, "not created by fleetprov") {
		t.Errorf("push --plan taking over a foreign account = %d\n%s", code, out)
	}
	e := write("e.toml", "admin", 443, "none", nginx, "web")
	if code, out := pub("push", e, "--group", "g", "--plan"); code != cli.ExitUsage || !strings.Contains(out, "--plan needs --device") {
		t.Errorf("push --plan --group = %d\n%s", code, out)
	}
	if code, out := pub("push", e, "--device", "gw1", "--plan", "--canary", "1"); code != cli.ExitUsage || !strings.Contains(out, "--canary do not go with it") {
		t.Errorf("push --plan --canary = %d\n%s", code, out)
	}
	if code, out := pub("push", e, "--device", "gw1", "--plan", "--key", viewerKey); code != 0 || !strings.Contains(out, "no plan (the signing key may validate but not apply here)") || strings.Contains(out, "host  ") {
		t.Errorf("push --plan by a validate-only signer = %d (want the validation, no plan)\n%s", code, out)
	}
	if code, out := pub("push", e, "--device", "nosuch", "--plan"); code != cli.ExitUnreachable {
		t.Errorf("push --plan to a device that does not answer = %d; want %d\n%s", code, cli.ExitUnreachable, out)
	}
	// Only nft -c (check, loads nothing) ran on the host.
	var changed []string
	for _, line := range strings.Split(strings.TrimPrefix(dev.Sim.Transcript(), before), "\n") {
		if line != "" && !strings.HasPrefix(line, "host: nft -c ") {
			changed = append(changed, line)
		}
	}
	now, _ := os.ReadFile(filepath.Join(dev.StateDir, "config", "config.toml"))
	if len(changed) > 0 || countJobs(t, dev) != jobs || string(now) != string(active) {
		t.Errorf("a plan changed the device: jobs %d -> %d, host: %q", jobs, countJobs(t, dev), changed)
	}
}

func countJobs(t *testing.T, dev *provisiontest.Device) int {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dev.StateDir, "jobs", "*.json"))
	return len(paths)
}
