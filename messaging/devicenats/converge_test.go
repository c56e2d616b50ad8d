package devicenats_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/devicenats"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// A hub too busy to answer a device's desired-state read (1,000 devices reading at once,
// measured: a third of the reads timed out) must not leave the device behind until the
// next resync: the read is tried again, with backoff, until it gets an answer. Here the
// hub drops the first three reads of the device's key and never sends a change
// notification; the device converges all the same.
func TestFailedDesiredReadIsRetried(t *testing.T) {
	admin, line := newKey(t)
	r := start(t, "d1", nil, nil).withAdmin(admin, line)
	sum, err := r.client.Push(context.Background(), fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}},
		Payload: fleet.Payload{Data: r.cfg, ContentType: envelope.TypeTOML}}, nil)
	if err != nil || !sum.OK() {
		t.Fatalf("provisioning push = %+v, %v", sum, err)
	}
	next := append(append([]byte{}, r.cfg...), "\n# desired\n"...)
	env := r.client.NewEnvelope("apply", "d1", "", fleet.Payload{Data: next, ContentType: envelope.TypeTOML})
	env.Durable, env.Payload = true, next
	raw, _ := env.Encode()
	sig, err := envelope.Sign(raw, admin)
	if err != nil {
		t.Fatal(err)
	}
	// The busy hub: it answers the device's own key only from the fourth read on, and
	// has nothing under the fleet's key.
	var reads atomic.Int32
	hub, err := r.nc.Subscribe(subjects.DirectGet(subjects.Domain, "test", ">"), func(m *nats.Msg) {
		if m.Subject != subjects.DirectGet(subjects.Domain, "test", subjects.DeviceKey("d1")) {
			a := nats.NewMsg(m.Reply)
			a.Header.Set("Status", "404")
			m.RespondMsg(a)
			return
		}
		if reads.Add(1) <= 3 {
			return // dropped: the device's read times out
		}
		a := nats.NewMsg(m.Reply)
		a.Data = raw
		a.Header.Set(envelope.SignatureHeader, sig)
		m.RespondMsg(a)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Unsubscribe()
	r.nc.Flush()
	c := devicenats.NewConverger(devicenats.ConvergerOptions{Conn: r.nc, Service: r.node.Service, LinkUp: func() bool { return true },
		Resync: time.Hour, Timeout: 100 * time.Millisecond, Retry: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	fptest.WaitFor(t, 20*time.Second, "the device to take its desired state", func() bool {
		j, err := r.node.Jobs.Get(env.ID)
		return err == nil && j.State == record.Succeeded
	})
	if n := reads.Load(); n < 4 {
		t.Errorf("the device's key was read %d times; want at least 4 (3 dropped)", n)
	}
}
