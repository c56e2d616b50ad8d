package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
)

// runEnv runs the publisher with HOME and the given extra environment.
func runEnv(t *testing.T, home string, env map[string]string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(context.Background(), args, cli.IO{Stdout: &out, Stderr: &out, Env: envOf(home, env)})
	return code, out.String()
}

// fleetHub is an operator's machine (home, with its environment) after 'publisher nats
// init --fleet prod', and the hub running on the hub.conf that init wrote.
type fleetHub struct {
	home string
	env  map[string]string
	dir  string // the fleet's NATS dir in home
	hub  *broker.Broker
}

// initFleetHub runs nats init for fleet prod in a fresh home and starts the hub on its
// hub.conf (JetStream on, operator mode), stopped with the test.
func initFleetHub(t *testing.T) *fleetHub {
	t.Helper()
	f := &fleetHub{home: t.TempDir()}
	f.env = map[string]string{"FLEETPROV_KNOWN_DEVICES": filepath.Join(f.home, "known_devices")}
	if code, out := f.run(t, "nats", "init", "--fleet", "prod"); code != 0 || !strings.Contains(out, "hub.conf") {
		t.Fatalf("nats init = %d\n%s", code, out)
	}
	f.dir = filepath.Join(f.home, ".config", "fleetprov", "nats", "prod")
	return f
}

// start starts the hub on the hub.conf init wrote.
func (f *fleetHub) start(t *testing.T) {
	t.Helper()
	hub, err := broker.Start(context.Background(), broker.Options{Name: "hub", ConfigFile: filepath.Join(f.dir, natsauth.HubConfFile),
		Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Shutdown)
	f.hub = hub
}

func (f *fleetHub) run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return runEnv(t, f.home, f.env, args...)
}

// deviceCreds mints device id's hub credentials (in groups, comma-separated) into a file.
func (f *fleetHub) deviceCreds(t *testing.T, id, groups string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), id+".creds")
	args := []string{"nats", "creds", "--fleet", "prod", "--device", id, "-o", p}
	if groups != "" {
		args = append(args, "--groups", groups)
	}
	if code, out := f.run(t, args...); code != 0 {
		t.Fatalf("nats creds = %d\n%s", code, out)
	}
	return p
}

// adminKey writes a new signing key and returns its path and its authorized-key line.
func adminKey(t *testing.T) (path, line string) {
	t.Helper()
	path = writeKey(t)
	raw, _ := os.ReadFile(path)
	signer, err := ssh.ParsePrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return path, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
}

// TestNATSInitEnrolOfflineAndConnect walks the authenticated fleet's setup as an operator
// does it: nats init, a hub on its hub.conf, a device enrolled offline from the key
// 'worker identity' printed, with hub credentials from --creds-out; then ls reaches the
// device through the hub with the publisher.creds that init made, and no flag for it.
func TestNATSInitEnrolOfflineAndConnect(t *testing.T) {
	fh := initFleetHub(t)
	home, env, dir := fh.home, fh.env, fh.dir
	for _, f := range []string{natsauth.OperatorSeedFile, natsauth.AccountSeedFile, natsauth.PublisherCreds} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode())
		}
	}
	if code, out := runEnv(t, home, env, "nats", "init", "--fleet", "prod"); code == 0 || !strings.Contains(out, "already holds") {
		t.Errorf("a second init = %d (must refuse to replace the keys)\n%s", code, out)
	}
	if code, out := runEnv(t, home, env, "nats", "creds", "--fleet", "prod"); code != 2 || !strings.Contains(out, "exactly one of --device or --publisher") {
		t.Errorf("creds without --device/--publisher = %d\n%s", code, out)
	}
	if code, out := runEnv(t, home, env, "nats", "creds", "--fleet", "other", "--nats-dir", dir, "--device", "x"); code != 2 || !strings.Contains(out, `holds fleet "prod"'s keys, not "other"`) {
		t.Errorf("creds from another fleet's keys = %d\n%s", code, out)
	}

	fh.start(t)
	hub := fh.hub

	// The device's key, as 'worker identity' prints it on its console.
	stateDev := t.TempDir()
	key, _, err := identity.LoadOrCreate(filepath.Join(stateDev, "id"), "gw1")
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(t.TempDir(), "gw1.creds")
	code, out := runEnv(t, home, env, "enroll", "--fleet", "prod", "--device", "gw1", "--pubkey", string(identity.AuthorizedKey(key.PublicKey())),
		"--groups", "edge", "--creds-out", creds)
	if code != 0 || !strings.Contains(out, "enrolled") || !strings.Contains(out, creds) {
		t.Fatalf("offline enroll = %d\n%s", code, out)
	}
	dev := provisiontest.New(t, func(o *provision.Options) { o.IdentityKey = filepath.Join(stateDev, "id") })
	nodetest.StartDevice(t, dev, "gw1", func(o *node.Options) {
		o.Fleet, o.Groups = "prod", []string{"edge"}
		o.Broker = broker.Options{Listen: "127.0.0.1:-1", Hub: []string{hub.LeafURL()}, HubCreds: creds, ReconnectInterval: 100 * time.Millisecond}
	})
	fptest.WaitFor(t, 10*time.Second, "gw1's hub link", func() bool { return hub.LeafNodes() == 1 })
	// The link is up before the device's interest has crossed it: ask until it answers.
	fptest.Eventually(10*time.Second, func() bool {
		code, out = runEnv(t, home, env, "ls", "--fleet", "prod", "--group", "edge", "--server", hub.ClientURL())
		return code == 0
	})
	if code != 0 || fptest.Cell(out, "gw1", -1) != "enrolled" {
		t.Errorf("ls through the authenticated hub = %d\n%s", code, out)
	}
	// Any other machine (a HOME with no fleet keys) passes them like any flag: FLEETPROV_CREDS.
	elsewhere := map[string]string{"FLEETPROV_KNOWN_DEVICES": env["FLEETPROV_KNOWN_DEVICES"], "FLEETPROV_CREDS": filepath.Join(dir, natsauth.PublisherCreds)}
	if code, out := runEnv(t, t.TempDir(), elsewhere, "ls", "--fleet", "prod", "--all", "--server", hub.ClientURL()); code != 0 {
		t.Errorf("ls with FLEETPROV_CREDS = %d\n%s", code, out)
	}
	// Without credentials the hub refuses, and says what to do.
	code, out = runEnv(t, t.TempDir(), env, "ls", "--fleet", "prod", "--all", "--server", hub.ClientURL())
	if code != cli.ExitUnreachable || !strings.Contains(out, "refused a connection without credentials") || !strings.Contains(out, "publisher nats creds") {
		t.Errorf("ls without credentials = %d\n%s", code, out)
	}
}
