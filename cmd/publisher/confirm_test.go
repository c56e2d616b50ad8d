package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
)

// TestCommitConfirm: through a real hub with JetStream, a firewall change with confirm =
// "auto" is confirmed by the device's own round trip through the hub; one with confirm =
// "operator" waits for 'publisher confirm', which a key the new config does not trust
// cannot give.
func TestCommitConfirm(t *testing.T) {
	fh := initFleetHub(t)
	fh.start(t)
	home, env, hub := fh.home, fh.env, fh.hub
	keyPath, admin := adminKey(t)
	stranger := writeKey(t)
	creds := fh.deviceCreds(t, "gw1", "")
	dev := provisiontest.NewWithHost(t)
	nodetest.StartDevice(t, dev, "gw1", func(o *node.Options) {
		o.Fleet, o.LinkPoll = "prod", 50*time.Millisecond
		o.Broker = broker.Options{Listen: "127.0.0.1:-1", Hub: []string{hub.LeafURL()}, HubCreds: creds, ReconnectInterval: 100 * time.Millisecond}
	})
	fptest.WaitFor(t, 10*time.Second, "the hub link", func() bool { return hub.LeafNodes() == 1 })
	write := func(name, mode string, port int) string {
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, fmt.Appendf(nil, `version = 1
[users.admin]
isAdmin = true
ssh_key = %q
[network.firewall.inbound.wan]
tcp = [%d]
[activation]
required = ["web"]
confirm = %q
confirm_seconds = 60
[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "docker.io/library/nginx:1"
`, admin, port, mode), 0o600)
		return p
	}
	pub := func(args ...string) (int, string) {
		return runEnv(t, home, env, append(args, "--fleet", "prod", "--server", hub.ClientURL(), "--reply-timeout", "5s")...)
	}
	// A durable push makes the fleet's bucket: from then on a direct get of the device's
	// key is a round trip through the hub's JetStream.
	if code, out := pub("push", write("a.toml", "auto", 443), "--device", "gw1", "--key", keyPath, "--tofu", "--durable", "on", "--wait", "100%", "--timeout", "30s"); code != 0 {
		t.Fatalf("push with confirm = auto = %d\n%s", code, out)
	}
	if code, out := pub("push", write("a2.toml", "auto", 4443), "--device", "gw1", "--key", keyPath, "--durable", "off", "--timeout", "30s"); code != 0 {
		t.Fatalf("push with confirm = auto = %d\n%s", code, out)
	}
	if !strings.Contains(lastJobEvents(t, dev), "confirm confirmed") {
		t.Errorf("the change was not confirmed through the hub: %s", lastJobEvents(t, dev))
	}
	if strings.Count(dev.Sim.Transcript(), "host: nft -f -") < 2 {
		t.Errorf("the firewall was not loaded:\n%s", dev.Sim.Transcript())
	}
	if _, _, ok := dev.Prov.AwaitingConfirm(); ok {
		t.Errorf("still awaiting confirmation after the push")
	}

	done := make(chan struct{})
	var code int
	var out string
	go func() {
		defer close(done)
		code, out = pub("push", write("b.toml", "operator", 8443), "--device", "gw1", "--key", keyPath, "--durable", "off", "--timeout", "50s")
	}()
	fptest.WaitFor(t, 20*time.Second, "the operator confirm window", func() bool { _, _, ok := dev.Prov.AwaitingConfirm(); return ok })
	if c, o := pub("confirm", "--device", "gw1", "--key", stranger); c != cli.ExitUnauthorized {
		t.Errorf("confirm by a key the config does not trust = %d; want %d\n%s", c, cli.ExitUnauthorized, o)
	}
	if _, _, ok := dev.Prov.AwaitingConfirm(); !ok {
		t.Fatal("a stranger's confirm ended the window")
	}
	if c, o := pub("confirm", "--device", "gw1", "--key", keyPath); c != 0 || !strings.Contains(o, "gw1: network change confirmed") {
		t.Errorf("confirm = %d\n%s", c, o)
	}
	<-done
	if code != 0 || !strings.Contains(out, "succeeded") {
		t.Errorf("the operator-confirmed push = %d\n%s", code, out)
	}
	if c, o := pub("confirm", "--device", "gw1", "--key", keyPath); c != cli.ExitFailed || !strings.Contains(o, "no network change awaits confirmation") {
		t.Errorf("confirm with nothing waiting = %d\n%s", c, o)
	}
}

// lastJobEvents reads the newest job record of a simulated device's state as "step
// status" pairs.
func lastJobEvents(t *testing.T, dev *provisiontest.Device) string {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(dev.StateDir, "jobs", "*.json"))
	var newest string
	var when time.Time
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.ModTime().After(when) {
			newest, when = p, st.ModTime()
		}
	}
	raw, _ := os.ReadFile(newest)
	var j record.Job
	json.Unmarshal(raw, &j)
	var b strings.Builder
	for _, e := range j.Events {
		fmt.Fprintf(&b, "%s %s; ", e.Step, e.Status)
	}
	return b.String()
}
