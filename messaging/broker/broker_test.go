package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	fptest.WaitFor(t, 10*time.Second, what, cond)
}

func TestLeafnodeToHub(t *testing.T) {
	hub, hubConn := brokertest.Hub(t)
	dev, devConn := brokertest.Start(t, func(o *broker.Options) {
		o.Name, o.Hub, o.ReconnectInterval = "dev1", []string{hub.LeafURL()}, 100*time.Millisecond
	})
	waitFor(t, "leaf link", func() bool { return dev.LeafNodes() == 1 && hub.LeafNodes() == 1 })
	sub, _ := devConn.SubscribeSync("fleetprov.f.dev.dev1.ping")
	devConn.Flush()
	waitFor(t, "interest on the hub", func() bool {
		hubConn.Publish("fleetprov.f.dev.dev1.ping", []byte("hi"))
		_, err := sub.NextMsg(50 * time.Millisecond)
		return err == nil
	})
	// Local clients of the device work through its own listener too.
	local, err := nats.Connect(dev.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	local.Close()
}

func TestStartErrors(t *testing.T) {
	if _, err := broker.Start(context.Background(), broker.Options{Listen: "nonsense"}); err == nil {
		t.Error("Start with a bad listen address succeeded")
	}
	if _, err := broker.Start(context.Background(), broker.Options{Hub: []string{"::bad"}}); err == nil || !strings.Contains(err.Error(), "hub URL") {
		t.Errorf("Start with a bad hub URL: %v", err)
	}
	b, _ := brokertest.Start(t)
	// A second server on the same port fails to start and says so.
	port := b.ClientURL()[strings.LastIndex(b.ClientURL(), ":")+1:]
	if _, err := broker.Start(context.Background(), broker.Options{Listen: "127.0.0.1:" + port, ReadyTimeout: 2 * time.Second}); err == nil {
		t.Error("Start on a used port succeeded")
	}
}

// Relink closes the hub link, which the device dials again on its own: a new connection
// that carries messages.
func TestRelinkDialsAgain(t *testing.T) {
	hub, hubConn := brokertest.Hub(t)
	dev, devConn := brokertest.Start(t, func(o *broker.Options) {
		o.Name, o.Hub, o.ReconnectInterval = "dev1", []string{hub.LeafURL()}, 100*time.Millisecond
	})
	waitFor(t, "leaf link", func() bool { return dev.LeafNodes() == 1 && hub.LeafNodes() == 1 })
	before := dev.Leafs()
	if n := dev.Relink(); n != 1 {
		t.Fatalf("Relink closed %d links; want 1", n)
	}
	waitFor(t, "a new leaf link", func() bool {
		now := dev.Leafs()
		return len(now) == 1 && now[0].ID != before[0].ID
	})
	if n := hub.Relink(); n != 0 {
		t.Errorf("a hub's Relink closed %d links; want 0 (it never drops its devices)", n)
	}
	sub, _ := devConn.SubscribeSync("fleetprov.f.dev.dev1.ping")
	devConn.Flush()
	waitFor(t, "messages over the new link", func() bool {
		hubConn.Publish("fleetprov.f.dev.dev1.ping", []byte("hi"))
		_, err := sub.NextMsg(50 * time.Millisecond)
		return err == nil
	})
}

// The hub link is uncompressed unless asked for: each compressed link costs both ends
// megabytes of S2 buffers (1,000 links took the hub 5–8 GB), for small messages.
func TestHubLinkCompression(t *testing.T) {
	hub, _ := brokertest.Hub(t)
	for _, tc := range []struct{ mode, want string }{{"", "off"}, {"s2_fast", "s2_fast"}} {
		dev, _ := brokertest.Start(t, func(o *broker.Options) {
			o.Name, o.Hub, o.HubCompression, o.ReconnectInterval = "dev-"+tc.want, []string{hub.LeafURL()}, tc.mode, 100*time.Millisecond
		})
		waitFor(t, "leaf link", func() bool { return dev.LeafNodes() == 1 })
		if got := dev.Leafs(); len(got) != 1 || got[0].Compression != tc.want {
			t.Errorf("HubCompression %q: the links are %+v; want one with compression %s", tc.mode, got, tc.want)
		}
		dev.Shutdown()
	}
	_, err := broker.Start(context.Background(), broker.Options{Hub: []string{hub.LeafURL()}, HubCompression: "zstd"})
	if err == nil || !strings.Contains(err.Error(), `hub link compression "zstd"`) {
		t.Errorf("an unknown compression mode: %v", err)
	}
}
