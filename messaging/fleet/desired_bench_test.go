package fleet

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// BenchmarkReadStatuses reads 1,000 devices' status records the way Statuses does (one
// ordered consumer, last per subject) against the obvious alternative, one
// last-message-for-subject API call per device. Local hub: the gap only grows with the
// round-trip time to a remote one.
func BenchmarkReadStatuses(b *testing.B) {
	hub, f := brokertest.AuthHub(b, "bench")
	nc := brokertest.PublisherConn(b, hub.ClientURL(), f)
	c, _ := New(nc, "bench")
	ctx := context.Background()
	d, err := c.OpenDesired(ctx)
	if err != nil {
		b.Fatal(err)
	}
	const n = 1000
	for i := range n {
		if _, err := d.js.Publish(ctx, subjects.StatusOf("bench", fmt.Sprintf("dev-%04d", i)), []byte(`{}`)); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("ordered_consumer", func(b *testing.B) {
		for b.Loop() {
			got := 0
			if err := lastPerSubject(ctx, d.status, subjects.StatusOf("bench", "*"), func(jetstream.Msg) error { got++; return nil }); err != nil || got != n {
				b.Fatal(got, err)
			}
		}
	})
	b.Run("get_per_device", func(b *testing.B) {
		for b.Loop() {
			for i := range n {
				if _, err := d.status.GetLastMsgForSubject(ctx, subjects.StatusOf("bench", fmt.Sprintf("dev-%04d", i))); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
