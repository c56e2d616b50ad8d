// Package brokertest starts embedded NATS servers for tests: random ports, temp stores,
// an in-process connection, and cleanup registered with t.Cleanup.
package brokertest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
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

// AuthHub starts a hub the way 'publisher nats init' configures one: operator mode with
// the fleet's account (its hub.conf, listen addresses replaced by random loopback ports).
// It returns the hub and the fleet's NATS authority, to mint credentials with; mutate
// adjusts the options first.
func AuthHub(t testing.TB, fleet string, mutate ...func(*broker.Options)) (*broker.Broker, *natsauth.Fleet) {
	t.Helper()
	f, err := natsauth.Create(fleet)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := f.Save(dir, "127.0.0.1:-1", "127.0.0.1:-1"); err != nil {
		t.Fatal(err)
	}
	o := broker.Options{Name: "hub", ConfigFile: filepath.Join(dir, natsauth.HubConfFile),
		Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1",
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))}
	for _, m := range mutate {
		m(&o)
	}
	b, err := broker.Start(context.Background(), o)
	if err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	t.Cleanup(b.Shutdown)
	return b, f
}

// DeviceCreds mints device's hub credentials into a temp file and returns its path.
func DeviceCreds(t testing.TB, f *natsauth.Fleet, device string, groups ...string) string {
	t.Helper()
	creds, err := f.DeviceCreds(device, groups, 0)
	return writeCreds(t, creds, err)
}

// PublisherCreds mints a publisher's credentials into a temp file and returns its path.
func PublisherCreds(t testing.TB, f *natsauth.Fleet) string {
	t.Helper()
	creds, err := f.Creds("publisher", natsauth.PublisherPermissions(f.Name), 0)
	return writeCreds(t, creds, err)
}

// PublisherConn connects to url (a hub's client URL) as a fleet publisher; the connection
// closes with the test.
func PublisherConn(t testing.TB, url string, f *natsauth.Fleet, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, append(opts, nats.UserCredentials(PublisherCreds(t, f)))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func writeCreds(t testing.TB, creds []byte, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(p, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
