package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/secrets"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

func secretConfig(adminLine string) []byte {
	return []byte(fmt.Sprintf(`version = 1

[users.admin]
isAdmin = true
ssh_key = %q

[activation]
required = ["web", "app"]

[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "localhost/web:latest"
Secret = ["db-password,type=mount"]

[containers.container.app]
privileged = false
[containers.container.app.Container]
Image = "localhost/app:latest"
Secret = ["db-password,type=env,target=DB_PASSWORD"]

[secrets.db-password]
description = "database"
`, adminLine))
}

// TestSecretsNeverInTheClear pushes a secret through a real embedded hub to a
// leaf-linked device, and rotates it, while a client subscribed to ">" on the hub records
// everything. The value reaches the device's Podman store, and appears nowhere else: not
// on the hub, not in the state dir, job records, debug logs, current or export. A device
// that is not enrolled receives nothing.
func TestSecretsNeverInTheClear(t *testing.T) {
	const v1, v2 = "s3cret-value-one", "s3cret-value-two"
	hub, hubConn := brokertest.Hub(t)
	var spied [][]byte
	var spyMu sync.Mutex
	spy, err := hubConn.Subscribe(">", func(m *nats.Msg) {
		spyMu.Lock()
		defer spyMu.Unlock()
		b := bytes.Clone(m.Data)
		for k, vs := range m.Header {
			for _, v := range vs {
				b = append(b, []byte(k+": "+v)...)
			}
		}
		spied = append(spied, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Unsubscribe()
	// One debug log for the node and its provisioner (where secrets are opened and put).
	var logs fptest.Buffer
	debug := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	leaf := func(o *node.Options) {
		o.Broker = broker.Options{Listen: "127.0.0.1:-1", Hub: []string{hub.LeafURL()}, ReconnectInterval: 100 * time.Millisecond}
		o.Logger = debug
	}
	dev := provisiontest.New(t, func(o *provision.Options) { o.Logger = debug })
	n1 := nodetest.StartDevice(t, dev, "d1", leaf)
	other := provisiontest.New(t, func(o *provision.Options) { o.Logger = debug })
	nodetest.StartDevice(t, other, "d2", leaf)
	fptest.WaitFor(t, 10*time.Second, "leaf links", func() bool { return hub.LeafNodes() == 2 })

	admin, line := configtest.NewKey(t)
	c, known := publisherFor(t, hubConn, admin, false)
	if err := known.Add("test", "d1", n1.Identity.PublicKey(), nil); err != nil {
		t.Fatal(err)
	}
	push := func(op string, payload []byte, ct string, v secrets.Values, devs ...string) fleet.Summary {
		t.Helper()
		var sum fleet.Summary
		fptest.WaitFor(t, 10*time.Second, "devices reachable through the hub", func() bool {
			var err error
			sum, err = c.Push(t.Context(), fleet.PushOptions{Op: op, Target: fleet.Target{Devices: devs}, Secrets: v,
				Payload: fleet.Payload{Data: payload, ContentType: ct}, Timeout: 20 * time.Second, ReplyTimeout: time.Second}, nil)
			return err == nil && sum.Devices[0].State != fleet.StateNoReply
		})
		return sum
	}
	sum := push("apply", secretConfig(line), envelope.TypeTOML, secrets.Values{"db-password": []byte(v1)}, "d1", "d2")
	if d := sum.Devices[0]; d.Device != "d1" || d.State != fleet.StateSucceeded {
		t.Fatalf("d1 = %+v", d)
	}
	if d := sum.Devices[1]; d.State != fleet.StateUnenrolled {
		t.Errorf("d2 (not enrolled) = %+v; want unenrolled", d)
	}
	if got, _ := dev.Sim.Secret("system", "db-password"); string(got) != v1 {
		t.Fatalf("the device's Podman store holds %q; want the pushed value", got)
	}
	if got, _ := dev.Sim.Secret("user(appsvc)", "db-password"); string(got) != v1 {
		t.Fatalf("the app user's Podman store holds %q; want the pushed value", got)
	}
	if _, ok := other.Sim.Secret("system", "db-password"); ok || other.Prov.State().HasActive() {
		t.Error("the unenrolled device was provisioned")
	}

	// Rotation without the config.
	body, _ := json.Marshal(config.Patch{Kind: "secrets", Op: "set"})
	if sum := push("patch", body, envelope.TypeJSON, secrets.Values{"db-password": []byte(v2)}, "d1"); sum.Devices[0].State != fleet.StateSucceeded {
		t.Fatalf("rotation = %+v", sum.Devices[0])
	}
	if got, _ := dev.Sim.Secret("user(appsvc)", "db-password"); string(got) != v2 {
		t.Fatalf("after rotation the store holds %q", got)
	}

	cur, err := n1.Service.Current(context.Background())
	if err != nil || len(cur.Secrets) != 1 || cur.Secrets[0].Digest == "" {
		t.Fatalf("current = %+v, %v", cur.Secrets, err)
	}
	curJSON, _ := json.Marshal(cur)
	export, err := n1.Service.Export(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	hubConn.Flush()
	spyMu.Lock()
	defer spyMu.Unlock()
	if len(spied) < 10 {
		t.Fatalf("the spy saw only %d messages", len(spied))
	}
	where := map[string][]byte{"current": curJSON, "export": export, "logs (debug)": []byte(logs.String())}
	for i, m := range spied {
		where[fmt.Sprintf("hub message %d", i)] = m
	}
	filepath.WalkDir(dev.StateDir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			where[p] = b
		}
		return nil
	})
	for name, b := range where {
		for _, v := range []string{v1, v2} {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("%s contains the secret %q", name, v)
			}
		}
	}
}

// TestSecretsNotSealedToFirstUseImpostor: with --tofu, a hostile NATS client answers the
// fleet-wide discovery as device "evil", signing with its own key. First use trusts it,
// but secrets go only to keys enrolled before the push: evil gets no envelope with
// secrets, and is reported unenrolled.
func TestSecretsNotSealedToFirstUseImpostor(t *testing.T) {
	b := startBoth(t, provisiontest.New(t), nil)
	admin, line := configtest.NewKey(t)
	evilKey, _ := configtest.NewKey(t)
	attacker := attackerConn(t, b)
	reply := func(m *nats.Msg, r wire.Reply) {
		body, _ := json.Marshal(r)
		m.RespondMsg(deviceSigned(evilKey, body))
	}
	attacker.Subscribe(subjects.Subject{Fleet: "test", Kind: subjects.All, Op: "ping"}.String(), func(m *nats.Msg) {
		p, _ := json.Marshal(wire.Presence{Device: "evil"})
		reply(m, wire.Reply{Accepted: true, Device: "evil", Fleet: "test", Data: p})
	})
	var leaked sync.Mutex
	var got [][]byte
	attacker.Subscribe(subjects.DeviceRequests("test", "evil"), func(m *nats.Msg) {
		var env envelope.Envelope
		json.Unmarshal(m.Data, &env)
		leaked.Lock()
		got = append(got, env.Secrets)
		leaked.Unlock()
		reply(m, wire.Reply{Accepted: true, JobID: env.ID, Device: "evil", Fleet: "test", Request: env.ID})
	})
	attacker.Flush()
	c, known := publisherFor(t, b.nc, admin, true)
	known.Add("test", "d1", b.node.Identity.PublicKey(), nil)
	sum, err := c.Push(t.Context(), fleet.PushOptions{Target: fleet.Target{All: true}, Secrets: secrets.Values{"db-password": []byte("x")},
		Payload: fleet.Payload{Data: secretConfig(line), ContentType: envelope.TypeTOML}, Timeout: 10 * time.Second, ReplyTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]fleet.DeviceState{}
	for _, d := range sum.Devices {
		states[d.Device] = d
	}
	if states["evil"].State != fleet.StateUnenrolled || states["d1"].State != fleet.StateSucceeded {
		t.Errorf("push = %+v", sum.Devices)
	}
	leaked.Lock()
	defer leaked.Unlock()
	for _, s := range got {
		if s != nil {
			t.Error("the impostor received sealed secrets")
		}
	}
}
