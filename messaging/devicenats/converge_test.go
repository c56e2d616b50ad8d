package devicenats_test

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/devicenats"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// durableRig is a provisioned device d1, its admin key, and a hub played by the test:
// it answers the desired-state reads (and object reads) the test's handlers choose.
type durableRig struct {
	*rig
	admin ssh.Signer
}

func newDurableRig(t *testing.T) *durableRig {
	admin, line := newKey(t)
	r := start(t, "d1", nil, nil).withAdmin(admin, line)
	sum, err := r.client.Push(context.Background(), fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}},
		Payload: fleet.Payload{Data: r.cfg, ContentType: envelope.TypeTOML}}, nil)
	if err != nil || !sum.OK() {
		t.Fatalf("provisioning push = %+v, %v", sum, err)
	}
	return &durableRig{rig: r, admin: admin}
}

// desired is a signed durable envelope for d1 of the rig's config marked with mark, and
// its signature; object makes it reference the payload in the hub's object store.
func (r *durableRig) desired(mark string, object bool) (env *envelope.Envelope, raw []byte, sig string, payload []byte) {
	payload = append(append([]byte{}, r.cfg...), "\n# "+mark+"\n"...)
	env = r.client.NewEnvelope("apply", "d1", "", fleet.Payload{Data: payload, ContentType: envelope.TypeTOML})
	env.Durable, env.Payload = true, payload
	if object {
		env.Payload, env.PayloadRef = nil, &wire.PayloadRef{Object: env.PayloadSHA256, Size: int64(len(payload))}
	}
	raw, err := env.Encode()
	if err != nil {
		r.t.Fatal(err)
	}
	if sig, err = envelope.Sign(raw, r.admin); err != nil {
		r.t.Fatal(err)
	}
	return env, raw, sig, payload
}

// hub answers direct gets of d1's keys: own (nil: dropped) for its own key, 404 for the others.
func (r *durableRig) hub(own func() *nats.Msg) {
	sub, err := r.nc.Subscribe(subjects.DirectGet(subjects.Domain, "test", ">"), func(m *nats.Msg) {
		a := nats.NewMsg(m.Reply)
		a.Header.Set("Status", "404")
		if m.Subject == subjects.DirectGet(subjects.Domain, "test", subjects.DeviceKey("d1")) {
			if a = own(); a == nil {
				return // dropped: the device's read times out
			}
			a.Subject = m.Reply
		}
		m.RespondMsg(a)
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { sub.Unsubscribe() })
	r.nc.Flush()
}

func (r *durableRig) converger() *devicenats.Converger {
	c := devicenats.NewConverger(devicenats.ConvergerOptions{Conn: r.nc, Service: r.node.Service, LinkUp: func() bool { return true },
		Resync: time.Hour, Timeout: 100 * time.Millisecond, Retry: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err := c.Start(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(c.Stop)
	return c
}

func (r *durableRig) waitSucceeded(id string) {
	r.t.Helper()
	fptest.WaitFor(r.t, 20*time.Second, "the device to take its desired state", func() bool {
		j, err := r.node.Jobs.Get(id)
		return err == nil && j.State == record.Succeeded
	})
}

func value(raw []byte, sig string) *nats.Msg {
	a := nats.NewMsg("")
	a.Data = raw
	a.Header.Set(envelope.SignatureHeader, sig)
	return a
}

// A hub too busy to answer a device's desired-state read (1,000 devices reading at once,
// measured: a third of the reads timed out) must not leave the device behind until the
// next resync: the read is tried again, with backoff, until it gets an answer. Here the
// hub drops the first three reads of the device's key and never sends a change
// notification; the device converges all the same.
func TestFailedDesiredReadIsRetried(t *testing.T) {
	r := newDurableRig(t)
	env, raw, sig, _ := r.desired("desired", false)
	var reads atomic.Int32
	r.hub(func() *nats.Msg {
		if reads.Add(1) <= 3 {
			return nil
		}
		return value(raw, sig)
	})
	r.converger()
	r.waitSucceeded(env.ID)
	if n := reads.Load(); n < 4 {
		t.Errorf("the device's key was read %d times; want at least 4 (3 dropped)", n)
	}
}

// A read that got some keys and not others is acted on but not kept as the device's
// view: a change notification of another key must not pass the partial view off as
// complete and cancel the retry of the key that did not answer.
func TestPartialReadIsNotTakenForComplete(t *testing.T) {
	r := newDurableRig(t)
	env, raw, sig, _ := r.desired("desired", false)
	var reads atomic.Int32
	open := make(chan struct{})
	r.hub(func() *nats.Msg {
		reads.Add(1)
		select {
		case <-open:
			return value(raw, sig)
		default:
			return nil
		}
	})
	r.converger()
	// Several reads of its own key dropped (the fleet key answered), so the next retry
	// is a while off; then the fleet key changes.
	fptest.WaitFor(t, 20*time.Second, "five dropped reads", func() bool { return reads.Load() >= 5 })
	del := nats.NewMsg(subjects.DesiredNotify("test", subjects.AllKey))
	del.Header.Set(subjects.KVOperationHeader, "DEL")
	if err := r.nc.PublishMsg(del); err != nil {
		t.Fatal(err)
	}
	r.nc.Flush()
	close(open)
	r.waitSucceeded(env.ID)
}

// A durable payload in the hub's object store that the hub fails to serve (busy) is read
// again, like a key, not refused until the next resync.
func TestFailedObjectReadIsRetried(t *testing.T) {
	r := newDurableRig(t)
	env, raw, sig, payload := r.desired("object", true)
	r.hub(func() *nats.Msg { return value(raw, sig) })
	var infos atomic.Int32
	info, err := r.nc.Subscribe(subjects.ObjectInfoGet(subjects.Domain, "test", env.PayloadSHA256), func(m *nats.Msg) {
		a := nats.NewMsg(m.Reply)
		if infos.Add(1) == 1 {
			a.Header.Set("Status", "503")
		} else {
			a.Data = []byte(`{"nuid":"N1","size":` + strconv.Itoa(len(payload)) + `}`)
		}
		m.RespondMsg(a)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer info.Unsubscribe()
	chunk, err := r.nc.Subscribe(subjects.ObjectDirectGet(subjects.Domain, "test"), func(m *nats.Msg) {
		a := nats.NewMsg(m.Reply)
		a.Data = payload
		a.Header.Set("Nats-Sequence", "7")
		m.RespondMsg(a)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer chunk.Unsubscribe()
	r.nc.Flush()
	r.converger()
	r.waitSucceeded(env.ID)
	if n := infos.Load(); n < 2 {
		t.Errorf("the object was asked for %d times; want a second try after the 503", n)
	}
}
