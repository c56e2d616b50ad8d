package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/wire"
	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
)

// TestDurablePushAndStatus is the operator's view of durable desired state: a push to a
// group with one device stopped succeeds with that device offline, 'status' shows it
// pending and why, and once it starts again it converges with no second push.
func TestDurablePushAndStatus(t *testing.T) {
	fh := initFleetHub(t)
	fh.start(t)
	home, env, hub := fh.home, fh.env, fh.hub
	keyPath, admin := adminKey(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", admin)
	cfgA, cfgB := filepath.Join(t.TempDir(), "a.toml"), filepath.Join(t.TempDir(), "b.toml")
	os.WriteFile(cfgA, append(append([]byte{}, cfg...), "\n# variant A\n"...), 0o600)
	os.WriteFile(cfgB, append(append([]byte{}, cfg...), "\n# variant B\n"...), 0o600)

	// gw3 is in another group: a group's status must not list it.
	groupOf := map[string]string{"gw1": "edge", "gw2": "edge", "gw3": "core"}
	devs := map[string]*provisiontest.Device{}
	nodes := map[string]*node.Node{}
	creds := map[string]string{}
	start := func(id string) {
		nodes[id] = nodetest.StartDevice(t, devs[id], id, func(o *node.Options) {
			o.Fleet, o.Groups, o.LinkPoll = "prod", []string{groupOf[id]}, 50*time.Millisecond
			o.Broker = broker.Options{Listen: "127.0.0.1:-1", Hub: []string{hub.LeafURL()}, HubCreds: creds[id], ReconnectInterval: 100 * time.Millisecond}
		})
	}
	for _, id := range []string{"gw1", "gw2", "gw3"} {
		creds[id] = fh.deviceCreds(t, id, groupOf[id])
		devs[id] = provisiontest.New(t)
		start(id)
	}
	fptest.WaitFor(t, 10*time.Second, "the hub links", func() bool { return hub.LeafNodes() == 3 })
	if code, out := runEnv(t, home, env, "status", "--fleet", "prod", "--server", hub.ClientURL()); code != cli.ExitFailed || !strings.Contains(out, "no desired state of this fleet yet") {
		t.Errorf("status before any durable push = %d\n%s", code, out)
	}
	hubFlags := []string{"--fleet", "prod", "--server", hub.ClientURL(), "--reply-timeout", "5s"}
	pub := func(args ...string) (int, string) { return runEnv(t, home, env, append(args, hubFlags...)...) }

	code, out := pub("push", cfgA, "--group", "edge", "--key", keyPath, "--tofu", "--wait", "100%")
	if code != 0 || !strings.Contains(out, "stored as desired state on the hub") {
		t.Fatalf("first durable push = %d\n%s", code, out)
	}
	if code, out := pub("status", "--group", "edge"); code != 0 || strings.Count(out, " converged ") != 2 {
		t.Fatalf("status after the push = %d\n%s", code, out)
	}

	// --all targets the devices the hub's status stream knows, online or not (a group's
	// are the ones that answer its discovery; its offline members take the group's key).
	nodes["gw2"].Shutdown(context.Background())
	code, out = pub("push", cfgB, "--all", "--key", keyPath, "--tofu")
	if code != 0 || !strings.Contains(out, "1 offline device(s) converge when they come back") {
		t.Fatalf("push with gw2 stopped = %d (offline is not a failure)\n%s", code, out)
	}
	code, out = pub("status", "--all")
	t.Logf("publisher status --all:\n%s", out)
	if code != cli.ExitFailed || !strings.Contains(out, "behind: 1 pending") || fptest.Cell(out, "gw2", 1) != "pending" || fptest.Cell(out, "gw1", 1) != "converged" {
		t.Fatalf("status with gw2 stopped = %d\n%s", code, out)
	}
	code, out = pub("push", cfgB, "--all", "--key", keyPath, "--wait", "100%", "--timeout", "1s")
	if code != cli.ExitFailed || !strings.Contains(out, "--wait asked for 3") {
		t.Fatalf("push --wait 100%% with gw2 stopped = %d\n%s", code, out)
	}

	// status --watch, running while gw2 comes back, redraws its row from the status
	// record gw2 signs once it converged.
	var watched fptest.Buffer
	wctx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan int)
	go func() {
		watchDone <- run(wctx, append([]string{"status", "--watch", "--device", "gw2"}, hubFlags...),
			cli.IO{Stdout: &watched, Stderr: &watched, Env: envOf(home, env)})
	}()
	fptest.WaitFor(t, 10*time.Second, "status --watch to show gw2 pending", func() bool { return strings.Contains(watched.String(), "pending") })
	start("gw2")
	fptest.WaitFor(t, 30*time.Second, "gw2 to converge with no second push", func() bool {
		code, out = pub("status", "--device", "gw2")
		return code == 0 && fptest.Cell(out, "gw2", 1) == "converged"
	})
	fptest.WaitFor(t, 10*time.Second, "status --watch to show gw2 converged", func() bool {
		return strings.Contains(watched.String(), " converged ")
	})
	stopWatch()
	if code := <-watchDone; code != 0 {
		t.Errorf("status --watch ended with %d\n%s", code, watched.String())
	}
	code, out = pub("status", "--group", "edge")
	if code != 0 || fptest.Cell(out, "gw1", 1) != "converged" || fptest.Cell(out, "gw3", 1) != "" {
		t.Errorf("status --group edge (gw3, converged, is in core) = %d\n%s", code, out)
	}
	b, _ := os.ReadFile(filepath.Join(devs["gw2"].Prov.State().Active(), "config.toml"))
	if !strings.Contains(string(b), "# variant B") {
		t.Error("gw2 reports converged but runs another config")
	}

	// --wait holds the push open past the rollout: gw2 is off while it runs, comes back
	// once it is reported offline, and the push ends when it converged.
	nodes["gw2"].Shutdown(context.Background())
	var pushed fptest.Buffer
	pushDone := make(chan int)
	go func() {
		pushDone <- run(context.Background(), append([]string{"push", cfgA, "--all", "--key", keyPath, "--wait", "100%", "--timeout", "2m"}, hubFlags...),
			cli.IO{Stdout: &pushed, Stderr: &pushed, Env: envOf(home, env)})
	}()
	fptest.WaitFor(t, 30*time.Second, "the push to report gw2 offline", func() bool {
		return strings.Contains(pushed.String(), "offline    gw2")
	})
	start("gw2")
	if code := <-pushDone; code != 0 || !strings.Contains(pushed.String(), "3 device(s): succeeded=3") {
		t.Errorf("push --wait 100%% with gw2 back during the wait = %d\n%s", code, pushed.String())
	}

	// A client with the fleet's publisher credentials forges gw2's status, signed by a key
	// of its own: status shows an impostor, not a converged device.
	forger, err := nats.Connect(hub.ClientURL(), nats.UserCredentials(filepath.Join(fh.dir, natsauth.PublisherCreds)))
	if err != nil {
		t.Fatal(err)
	}
	defer forger.Close()
	fake, _ := json.Marshal(wire.Status{Device: "gw2", Fleet: "prod", Groups: []string{"edge"}, Applied: "x", JobState: record.Succeeded, Time: time.Now()})
	other, _, err := identity.LoadOrCreate(filepath.Join(t.TempDir(), "other"), "other")
	if err != nil {
		t.Fatal(err)
	}
	sig, err := auth.Sign(fake, other, auth.NamespaceDevice)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg("fleetprov.prod.status.gw2")
	msg.Data = fake
	msg.Header.Set(wire.DeviceSignatureHeader, base64.StdEncoding.EncodeToString(sig))
	if _, err := forger.RequestMsg(msg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if code, out := pub("status", "--device", "gw2"); code != cli.ExitFailed || fptest.Cell(out, "gw2", 1) != "impostor" {
		t.Errorf("status after a forged record = %d\n%s", code, out)
	}

	// A device's own server keeps no durable state: --durable on says so.
	local := nodes["gw1"]
	code, out = runEnv(t, home, env, "push", cfgB, "--device", "gw1", "--key", keyPath, "--durable", "on", "--fleet", "prod",
		"--server", local.Broker.ClientURL(), "--creds", local.AdminKey)
	if code != cli.ExitUnreachable || !strings.Contains(out, "no JetStream") {
		t.Errorf("--durable on against a device's own server = %d\n%s", code, out)
	}
}

// envOf is the environment runEnv gives the publisher: HOME and env.
func envOf(home string, env map[string]string) cli.Env {
	return func(k string) (string, bool) {
		if k == "HOME" {
			return home, true
		}
		v, ok := env[k]
		return v, ok
	}
}
