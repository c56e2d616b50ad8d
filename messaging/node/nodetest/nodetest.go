// Package nodetest boots worker nodes for tests: a simulated device in temp dirs, its
// embedded NATS server, the device service, shut down with t.Cleanup.
package nodetest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/node"
)

// Start boots node id on a fresh simulated device. Defaults: fleet "test", a client
// listener on a random loopback port, no heartbeats, warnings logged to the test.
func Start(t testing.TB, id string, mutate ...func(*node.Options)) (*node.Node, *provisiontest.Device) {
	t.Helper()
	dev := provisiontest.New(t)
	return StartDevice(t, dev, id, mutate...), dev
}

// StartDevice boots node id on an existing simulated device (a restart).
func StartDevice(t testing.TB, dev *provisiontest.Device, id string, mutate ...func(*node.Options)) *node.Node {
	t.Helper()
	o := node.Options{Device: id, Fleet: "test", Version: "test", Prov: dev.Prov,
		Broker: broker.Options{Listen: "127.0.0.1:-1"}, HeartbeatInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, m := range mutate {
		m(&o)
	}
	n, err := node.Start(context.Background(), o)
	if err != nil {
		t.Fatalf("nodetest: starting %s: %v", id, err)
	}
	t.Cleanup(func() { n.Shutdown(context.Background()) })
	return n
}

// Connect opens a client connection to n's NATS listener with its local admin key (a
// client with every permission: what the signature checks must hold against), closed
// with the test.
func Connect(t testing.TB, n *node.Node) *nats.Conn {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(n.AdminKey)
	if err != nil {
		t.Fatalf("nodetest: admin key: %v", err)
	}
	nc, err := nats.Connect(n.Broker.ClientURL(), opt)
	if err != nil {
		t.Fatalf("nodetest: connecting to %s: %v", n.Broker.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}
