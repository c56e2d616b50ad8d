package broker_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
)

// TestHubCredsInstalledLater: a device whose hub credentials are not installed yet starts
// (its local server works) and links to the hub once the file appears, with no restart.
func TestHubCredsInstalledLater(t *testing.T) {
	hub, f := brokertest.AuthHub(t, "fleet")
	creds := filepath.Join(t.TempDir(), "hub.creds")
	dev, _ := brokertest.Start(t, func(o *broker.Options) {
		o.Hub, o.HubCreds, o.ReconnectInterval = []string{hub.LeafURL()}, creds, 50*time.Millisecond
	})
	if dev.LeafNodes() != 0 {
		t.Fatal("linked without credentials")
	}
	raw, err := os.ReadFile(brokertest.DeviceCreds(t, f, "d1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(creds, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	fptest.WaitFor(t, 20*time.Second, "the hub link once the credentials exist", func() bool { return dev.LeafNodes() == 1 })
}
