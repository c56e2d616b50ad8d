package fleet_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/node"
)

// TestPushViaHTTP pushes through a device's HTTP bridge with no broker reachable: the
// same envelope, the same checks, events over SSE.
func TestPushViaHTTP(t *testing.T) {
	dev := provisiontest.New(t)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	n, err := node.Start(context.Background(), node.Options{Device: "gw1", Fleet: "f", Prov: dev.Prov, Broker: broker.Options{}, HTTP: l,
		HeartbeatInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown(context.Background())
	admin, line := configtest.NewKey(t)
	cfg := bytes.ReplaceAll(configtest.Fixture(t, "vm-full.config.toml"), []byte(configtest.AdminKey), []byte(line))
	c, err := fleet.NewHTTP("http://"+l.Addr().String(), "f", fleet.WithSigner(admin))
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	sum, err := c.Push(context.Background(), fleet.PushOptions{Target: fleet.Target{All: true}, Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML}},
		func(s fleet.DeviceState) { stages = append(stages, s.Stage) })
	if err != nil || !sum.OK() || sum.Devices[0].Device != "gw1" {
		t.Fatalf("push via HTTP = %+v, %v", sum, err)
	}
	if len(stages) < 10 {
		t.Errorf("saw %d progress updates; want the job's events", len(stages))
	}
	// A stranger's envelope is refused with the same code as over NATS.
	stranger, _ := configtest.NewKey(t)
	sc, _ := fleet.NewHTTP("http://"+l.Addr().String(), "f", fleet.WithSigner(stranger))
	sum, _ = sc.Push(context.Background(), fleet.PushOptions{Target: fleet.Target{Devices: []string{"gw1"}}, Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML}}, nil)
	if sum.Devices[0].State != fleet.StateRejected || sum.Devices[0].Code != "unauthorized" {
		t.Errorf("stranger via HTTP = %+v", sum.Devices[0])
	}
	if _, err := fleet.NewHTTP("ftp://x", "f"); err == nil {
		t.Error("NewHTTP accepted an ftp URL")
	}
}
