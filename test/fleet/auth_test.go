package fleet_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/blob"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// violation reports the server's answer to what the client just did: the permission
// violation it sent back (a -ERR arrives before the PONG that ends Flush), or nil.
func violation(t *testing.T, nc *nats.Conn) error {
	t.Helper()
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	err := nc.LastError()
	if err != nil && !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("unexpected error %v", err)
	}
	return err
}

// confinedDevice mounts the attacks of a client holding dev-01's credentials against a
// hub at url: each must be refused by the hub, while dev-01's own subjects work.
func confinedDevice(t *testing.T, url string, auth *natsauth.Fleet) {
	if _, err := nats.Connect(url); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Errorf("anonymous client on the hub: err = %v; want an authorization violation", err)
	}
	foreign, _ := natsauth.Create("fleet")
	if _, err := nats.Connect(url, nats.UserCredentials(brokertest.DeviceCreds(t, foreign, "dev-01", "edge"))); err == nil {
		t.Errorf("credentials of another fleet's account were accepted")
	}
	attacks := []struct {
		name string
		do   func(nc *nats.Conn)
	}{
		{"answer dev-00's requests", func(nc *nats.Conn) { nc.Subscribe("fleetprov.fleet.dev.dev-00.*", func(*nats.Msg) {}) }},
		{"read everything", func(nc *nats.Conn) { nc.Subscribe(">", func(*nats.Msg) {}) }},
		{"read operators' replies (exports)", func(nc *nats.Conn) { nc.Subscribe("_INBOX.>", func(*nats.Msg) {}) }},
		{"read dev-00's events", func(nc *nats.Conn) { nc.Subscribe("fleetprov.fleet.evt.dev-00.*", func(*nats.Msg) {}) }},
		{"read another group's requests", func(nc *nats.Conn) { nc.Subscribe("fleetprov.fleet.grp.core.*", func(*nats.Msg) {}) }},
		{"read dev-00's fetched payloads", func(nc *nats.Conn) { nc.Subscribe("fleetprov.fleet.inbox.dev-00.>", func(*nats.Msg) {}) }},
		{"ask for chunks on dev-00's inbox", func(nc *nats.Conn) { nc.Publish("fleetprov.fleet.inbox.dev-00.blob.x", []byte(`{}`)) }},
		{"forge dev-00's job event", func(nc *nats.Conn) { nc.Publish("fleetprov.fleet.evt.dev-00.job1", []byte(`{"state":"succeeded"}`)) }},
		{"forge dev-00's presence", func(nc *nats.Conn) { nc.Publish("fleetprov.fleet.presence.dev-00", []byte(`{}`)) }},
		{"send requests to devices", func(nc *nats.Conn) { nc.Publish("fleetprov.fleet.all.apply", []byte(`{}`)) }},
		// Durable state: its own status, no writes, no consumers (reads of desired state go
		// through a leaf link: TestDeviceReadsOnlyItsOwnDesiredState).
		{"forge dev-00's status", func(nc *nats.Conn) { nc.Publish(subjects.StatusOf("fleet", "dev-00"), []byte(`{}`)) }},
		{"hear dev-00's desired-state changes", func(nc *nats.Conn) {
			nc.Subscribe(subjects.DesiredNotify("fleet", subjects.DeviceKey("dev-00")), func(*nats.Msg) {})
		}},
		{"write a desired state", func(nc *nats.Conn) {
			nc.Publish(subjects.DesiredKV("fleet", subjects.DeviceKey("dev-01")), []byte(`{}`))
		}},
		{"create a consumer", func(nc *nats.Conn) {
			nc.Publish("$JS."+subjects.Domain+".API.CONSUMER.CREATE.KV_"+subjects.DesiredBucket("fleet"), []byte(`{}`))
		}},
	}
	creds := brokertest.DeviceCreds(t, auth, "dev-01", "edge")
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			nc, err := nats.Connect(url, nats.UserCredentials(creds), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			a.do(nc)
			if err := violation(t, nc); err == nil {
				t.Errorf("dev-01's credentials may %s", a.name)
			}
		})
	}
	t.Run("own subjects", func(t *testing.T) {
		nc, err := nats.Connect(url, nats.UserCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		for _, s := range []string{"fleetprov.fleet.dev.dev-01.*", "fleetprov.fleet.grp.edge.*", "fleetprov.fleet.all.*", "fleetprov.fleet.inbox.dev-01.>",
			subjects.DesiredNotify("fleet", subjects.DeviceKey("dev-01")), subjects.DesiredNotify("fleet", subjects.GroupKey("edge")),
			subjects.DesiredNotify("fleet", subjects.AllKey)} {
			nc.Subscribe(s, func(*nats.Msg) {})
		}
		nc.Publish("fleetprov.fleet.evt.dev-01.job1", []byte(`{}`))
		nc.Publish("fleetprov.fleet.presence.dev-01", []byte(`{}`))
		nc.Publish(subjects.StatusOf("fleet", "dev-01"), []byte(`{}`))
		if err := violation(t, nc); err != nil {
			t.Errorf("dev-01's own subjects refused: %v", err)
		}
	})
}

func TestDeviceCredentialsConfinedOnEmbeddedHub(t *testing.T) {
	hub, auth := brokertest.AuthHub(t, "fleet")
	confinedDevice(t, hub.ClientURL(), auth)
}

func TestDeviceCredentialsConfinedOnStockHub(t *testing.T) {
	hub := startStockHub(t)
	confinedDevice(t, hub.url(), hub.auth)
}

// TestDeviceListenerRefusesAnonymous: a device's own NATS listener takes its admin key
// and nobody else: neither anonymous clients nor the fleet's credentials (the hub's).
func TestDeviceListenerRefusesAnonymous(t *testing.T) {
	auth, _ := natsauth.Create("fleet")
	n, _ := nodetest.Start(t, "dev-00", func(o *node.Options) { o.Fleet = "fleet" })
	url := n.Broker.ClientURL()
	for name, opts := range map[string][]nats.Option{
		"anonymous":              nil,
		"a fleet publisher":      {nats.UserCredentials(brokertest.PublisherCreds(t, auth))},
		"another device's creds": {nats.UserCredentials(brokertest.DeviceCreds(t, auth, "dev-01"))},
		"a stranger's nkey":      {nkeyOption(t)},
	} {
		if _, err := nats.Connect(url, opts...); err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
			t.Errorf("%s on the device's listener: err = %v; want an authorization violation", name, err)
		}
	}
	nodetest.Connect(t, n) // the admin key
}

func nkeyOption(t *testing.T) nats.Option {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return nats.Nkey(pub, kp.Sign)
}

// TestLargeExportThroughAuthenticatedHub: an export too large for one message is served
// by the device in chunks under its own inbox, the one subject space its credentials may
// subscribe to, and fetched by the publisher through the hub.
func TestLargeExportThroughAuthenticatedHub(t *testing.T) {
	// 4 KiB messages: the push and the export both travel in chunks.
	hub, auth := brokertest.AuthHub(t, "fleet", func(o *broker.Options) { o.MaxPayload = 4096 })
	r := newFleet(t, hub.LeafURL(), auth, 0, groupHalf)
	nodetest.Start(t, "dev-00", func(o *node.Options) {
		o.Fleet, o.Groups, o.Logger = "fleet", []string{"edge"}, logger(t)
		o.Broker = broker.Options{Listen: "127.0.0.1:-1", Hub: []string{hub.LeafURL()}, HubCreds: brokertest.DeviceCreds(t, auth, "dev-00", "edge"),
			ReconnectInterval: 100 * time.Millisecond, MaxPayload: 4096}
	})
	nc := brokertest.PublisherConn(t, hub.ClientURL(), auth)
	c := r.client(nc)
	waitDiscover(t, c, fleet.Target{All: true}, 1)
	// Incompressible bytes make the export larger than half a message.
	noise := make([]byte, 4000)
	rand.Read(noise)
	cfg := append(append([]byte{}, r.cfg...), []byte("\n# "+hex.EncodeToString(noise)+"\n")...)
	if sum := r.push(c, fleet.PushOptions{Target: fleet.Target{Devices: []string{"dev-00"}}, Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML}}); !sum.OK() {
		t.Fatalf("push = %+v", sum)
	}
	subj := subjects.Subject{Fleet: "fleet", Kind: subjects.Device, Name: "dev-00", Op: "export"}.String()
	reply, err := c.Send(context.Background(), subj, c.NewEnvelope("export", "dev-00", "", fleet.Payload{}), 10*time.Second)
	if err != nil || !reply.Accepted {
		t.Fatalf("export = %+v, %v", reply, err)
	}
	var res wire.ExportResult
	if err := json.Unmarshal(reply.Data, &res); err != nil || res.Payload == nil {
		t.Fatalf("export result = %+v, %v; want a chunked payload", res, err)
	}
	if !strings.HasPrefix(res.Payload.Subject, subjects.InboxPrefix("fleet", "dev-00")+".") {
		t.Errorf("export served on %s, outside the device's inbox", res.Payload.Subject)
	}
	var buf bytes.Buffer
	if err := blob.Fetch(context.Background(), nc, res.Payload.Subject, res.Payload.Size, 1<<30, 0, &buf); err != nil {
		t.Fatalf("fetching the export through the hub: %v", err)
	}
	if envelope.Digest(buf.Bytes()) != res.SHA256 {
		t.Errorf("export digest mismatch")
	}
}

// TestDeviceReadsOnlyItsOwnDesiredState mounts, through a leaf link as a device makes
// one, what a holder of dev-01's credentials tries against the hub's durable state: read
// another device's or group's desired state, write one, forge another's status, create a
// consumer, hear another device's changes. The same requests for its own keys and status
// are answered, so a refusal is the hub's, not a broken link.
func TestDeviceReadsOnlyItsOwnDesiredState(t *testing.T) {
	hub, auth := brokertest.AuthHub(t, "fleet")
	admin, _ := configtest.NewKey(t)
	pc, err := fleet.New(brokertest.PublisherConn(t, hub.ClientURL(), auth), "fleet", fleet.WithSigner(admin))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := pc.OpenDesired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string) {
		env, err := d.Stamp(key, fleet.Payload{Data: []byte("x"), ContentType: envelope.TypeTOML})
		if err == nil {
			_, err = d.Put(ctx, key, env)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{subjects.DeviceKey("dev-00"), subjects.DeviceKey("dev-01"), subjects.GroupKey("core"), subjects.GroupKey("edge")} {
		put(k)
	}
	leaf, _ := brokertest.Start(t, func(o *broker.Options) {
		o.Name, o.Hub, o.HubCreds = "dev-01", []string{hub.LeafURL()}, brokertest.DeviceCreds(t, auth, "dev-01", "edge")
	})
	nc, err := leaf.Connect(nats.CustomInboxPrefix(subjects.InboxPrefix("fleet", "dev-01")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fptest.WaitFor(t, 10*time.Second, "the leaf link", func() bool { return leaf.LeafNodes() == 1 })
	ask := func(subj string, data []byte) (*nats.Msg, error) {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return nc.RequestWithContext(rctx, subj, data)
	}
	// Its own: answered (the interest takes a moment to cross the link).
	fptest.WaitFor(t, 10*time.Second, "dev-01's own desired state", func() bool {
		m, err := ask(subjects.DirectGet(subjects.Domain, "fleet", subjects.DeviceKey("dev-01")), nil)
		return err == nil && m.Header.Get("Status") == ""
	})
	for _, k := range []string{subjects.GroupKey("edge"), subjects.AllKey} {
		if _, err := ask(subjects.DirectGet(subjects.Domain, "fleet", k), nil); err != nil {
			t.Errorf("dev-01 reading its own key %s: %v", k, err)
		}
	}
	if _, err := ask(subjects.StatusOf("fleet", "dev-01"), []byte(`{}`)); err != nil {
		t.Errorf("dev-01 recording its own status: %v", err)
	}
	attacks := map[string]func() (*nats.Msg, error){
		"read dev-00's desired state": func() (*nats.Msg, error) {
			return ask(subjects.DirectGet(subjects.Domain, "fleet", subjects.DeviceKey("dev-00")), nil)
		},
		"read another group's desired state": func() (*nats.Msg, error) {
			return ask(subjects.DirectGet(subjects.Domain, "fleet", subjects.GroupKey("core")), nil)
		},
		"forge dev-00's status": func() (*nats.Msg, error) { return ask(subjects.StatusOf("fleet", "dev-00"), []byte(`{}`)) },
		"write its own desired state": func() (*nats.Msg, error) {
			return ask(subjects.DesiredKV("fleet", subjects.DeviceKey("dev-01")), []byte(`{}`))
		},
		"create a consumer": func() (*nats.Msg, error) {
			return ask("$JS."+subjects.Domain+".API.CONSUMER.CREATE.KV_"+subjects.DesiredBucket("fleet"), []byte(`{}`))
		},
		"use the JetStream API": func() (*nats.Msg, error) { return ask("$JS."+subjects.Domain+".API.INFO", nil) },
	}
	for name, do := range attacks {
		if m, err := do(); err == nil {
			t.Errorf("dev-01 may %s: answered %q %v", name, m.Data, m.Header)
		}
	}
	// Change notifications: dev-00's change is published before dev-01's; when dev-01's
	// arrives, dev-00's must not have.
	other, _ := nc.SubscribeSync(subjects.DesiredNotify("fleet", subjects.DeviceKey("dev-00")))
	own, _ := nc.SubscribeSync(subjects.DesiredNotify("fleet", subjects.DeviceKey("dev-01")))
	nc.Flush()
	fptest.WaitFor(t, 10*time.Second, "dev-01 to hear its own key's changes", func() bool {
		put(subjects.DeviceKey("dev-00"))
		put(subjects.DeviceKey("dev-01"))
		_, err := own.NextMsg(500 * time.Millisecond)
		return err == nil
	})
	if n, _, _ := other.Pending(); n != 0 {
		t.Errorf("dev-01 heard %d change(s) of dev-00's desired state", n)
	}
}

// TestDeviceCredentialsConfinedOverLeafLink mounts the attacks of a stolen device's
// credentials the way a thief would use them: as a device does, through a leaf link of
// its own server. Whatever it publishes for another device (events, presence, status,
// requests) never reaches the operator, and nothing meant for another device, group or
// the operator's inboxes reaches it; its own subjects cross the link both ways (a
// refusal is the hub's, not a dead link).
func TestDeviceCredentialsConfinedOverLeafLink(t *testing.T) {
	t.Run("embedded hub", func(t *testing.T) {
		hub, auth := brokertest.AuthHub(t, "fleet")
		confinedOverLeaf(t, hub.ClientURL(), hub.LeafURL(), auth)
	})
	t.Run("stock nats-server", func(t *testing.T) {
		hub := startStockHub(t)
		confinedOverLeaf(t, hub.url(), hub.leafURL(), hub.auth)
	})
}

func confinedOverLeaf(t *testing.T, clientURL, leafURL string, auth *natsauth.Fleet) {
	op := brokertest.PublisherConn(t, clientURL, auth)
	leaf, _ := brokertest.Start(t, func(o *broker.Options) {
		o.Name, o.Hub, o.HubCreds = "thief", []string{leafURL}, brokertest.DeviceCreds(t, auth, "dev-01", "edge")
	})
	thief, err := leaf.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer thief.Close()
	fptest.WaitFor(t, 10*time.Second, "the leaf link", func() bool { return leaf.LeafNodes() == 1 })

	// Down the link: the thief listens to everything its server hears.
	heard, err := thief.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	thief.Flush()
	own := "fleetprov.fleet.dev.dev-01.ping"
	forbiddenDown := []string{"fleetprov.fleet.dev.dev-00.apply", "fleetprov.fleet.grp.core.apply", "fleetprov.fleet.evt.dev-00.job1",
		"_INBOX.operator.1", "fleetprov.fleet.inbox.dev-00.blob.x", subjects.StatusOf("fleet", "dev-00")}
	fptest.WaitFor(t, 10*time.Second, "dev-01's own requests to cross the link", func() bool {
		for _, s := range forbiddenDown {
			op.Publish(s, []byte("secret"))
		}
		op.Publish(own, nil)
		op.Flush()
		m, err := heard.NextMsg(300 * time.Millisecond)
		for ; err == nil; m, err = heard.NextMsg(50 * time.Millisecond) {
			if m.Subject == own {
				return true
			}
			t.Fatalf("the thief heard %s", m.Subject)
		}
		return false
	})

	// Up the link: the operator listens to the fleet and the inboxes.
	seen, err := op.SubscribeSync("fleetprov.fleet.>")
	if err != nil {
		t.Fatal(err)
	}
	op.Flush()
	ownEvent := "fleetprov.fleet.evt.dev-01.job1"
	forbiddenUp := []string{"fleetprov.fleet.evt.dev-00.job1", "fleetprov.fleet.presence.dev-00", subjects.StatusOf("fleet", "dev-00"),
		"fleetprov.fleet.all.apply", "fleetprov.fleet.dev.dev-00.apply", "fleetprov.fleet.grp.edge.apply"}
	fptest.WaitFor(t, 10*time.Second, "dev-01's own event to cross the link", func() bool {
		for _, s := range forbiddenUp {
			thief.Publish(s, []byte(`{"state":"succeeded"}`))
		}
		thief.Publish(ownEvent, []byte(`{}`))
		thief.Flush()
		m, err := seen.NextMsg(300 * time.Millisecond)
		for ; err == nil; m, err = seen.NextMsg(50 * time.Millisecond) {
			if m.Subject == ownEvent {
				return true
			}
			t.Fatalf("the operator received %s from dev-01's credentials", m.Subject)
		}
		return false
	})
}
