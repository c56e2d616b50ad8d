// Package brokertest starts embedded NATS servers for tests: random ports, temp stores,
// an in-process connection, and cleanup registered with t.Cleanup.
package brokertest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/messaging/broker"
)

// Start starts a broker listening on a random loopback port and returns it with an
// in-process connection. mutate adjusts the options first.
func Start(t testing.TB, mutate ...func(*broker.Options)) (*broker.Broker, *nats.Conn) {
	t.Helper()
	o := broker.Options{Listen: "127.0.0.1:-1", Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))}
	for _, m := range mutate {
		m(&o)
	}
	b, err := broker.Start(context.Background(), o)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	nc, err := b.Connect()
	if err != nil {
		b.Shutdown()
		t.Fatalf("brokertest: %v", err)
	}
	t.Cleanup(func() {
		nc.Close()
		b.Shutdown()
	})
	return b, nc
}

// Hub starts a hub: client and leafnode listeners on random loopback ports.
func Hub(t testing.TB) (*broker.Broker, *nats.Conn) {
	t.Helper()
	return Start(t, func(o *broker.Options) { o.Name = "hub"; o.LeafListen = "127.0.0.1:-1" })
}
