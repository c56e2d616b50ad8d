package fleet_test

import (
	"context"
	"net"
	"testing"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
)

// TestPushViaHTTP pushes through a device's HTTP bridge with no broker reachable: the
// same envelope, the same checks, events over SSE.
func TestPushViaHTTP(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	nodetest.Start(t, "gw1", func(o *node.Options) { o.Fleet, o.Broker, o.HTTP = "f", broker.Options{}, l })
	admin, line := configtest.NewKey(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
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
