package fleet_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// variant is cfg marked with name (a comment): a config a device's state can tell apart.
func (r *fleetRig) variant(name string) []byte { return r.variantOf(r.cfg, name) }

// variantOf is base (cfg, or cfg2 with its required container "extra") marked with name.
func (r *fleetRig) variantOf(base []byte, name string) []byte {
	return append(bytes.Clone(base), []byte("\n# variant "+name+"\n")...)
}

// activeHas reports whether w's active config is the variant name.
func activeHas(w *worker, name string) bool {
	b, err := os.ReadFile(filepath.Join(w.dev.Prov.State().Active(), "config.toml"))
	return err == nil && bytes.Contains(b, []byte("# variant "+name+"\n"))
}

// waitStatus waits until dev's status record on the hub satisfies cond.
func waitStatus(t *testing.T, d *fleet.DesiredStore, dev, what string, cond func(fleet.DeviceStatus) bool) fleet.DeviceStatus {
	t.Helper()
	var last fleet.DeviceStatus
	fptest.WaitFor(t, 30*time.Second, dev+": "+what, func() bool {
		sts, err := d.Statuses(context.Background())
		if err != nil {
			return false
		}
		last = sts[dev]
		return cond(last)
	})
	return last
}

// restart starts w again on its own state (same device, same credentials).
func (r *fleetRig) restart(w *worker, hubURL, creds string, groups ...string) {
	r.t.Helper()
	w.node = nodetest.StartDevice(r.t, w.dev, w.id, func(o *node.Options) {
		o.Fleet, o.Groups, o.Logger = "fleet", append([]string{"edge"}, groups...), logger(r.t)
		o.Broker.Hub, o.Broker.HubCreds, o.Broker.ReconnectInterval = []string{hubURL}, creds, 100*time.Millisecond
		o.LinkPoll = 50 * time.Millisecond
	})
}

// TestDurableDesiredState runs the durable half of the fleet against the stock
// nats-server with JetStream, as 'publisher nats init' configures it: devices converge on
// the desired state stored on the hub whenever they come online, never go back to an
// older one, resolve group against device keys by age, and a stopped rollout can give the
// early devices their previous state back.
func TestDurableDesiredState(t *testing.T) {
	hub := startStockHub(t)
	r := newFleet(t, hub.leafURL(), hub.auth, 3, func(int) string { return "edge" })
	nc := brokertest.PublisherConn(t, hub.url(), hub.auth, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	c := r.client(nc)
	ctx := context.Background()
	waitDiscover(t, c, fleet.Target{All: true}, 3)
	d, err := c.OpenDesired(ctx)
	if err != nil {
		t.Fatalf("OpenDesired on a JetStream hub: %v", err)
	}
	durable := func(group string, cfg []byte, mutate ...func(*fleet.PushOptions)) fleet.Summary {
		o := fleet.PushOptions{Target: fleet.Target{Group: group}, Desired: d, ReplyTimeout: 6 * time.Second,
			Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML}}
		for _, m := range mutate {
			m(&o)
		}
		return r.push(c, o)
	}

	sum := durable("edge", r.variant("a-"))
	if !sum.OK() || !sum.Durable || sum.Counts[fleet.StateSucceeded] != 3 {
		t.Fatalf("first durable push = %+v", sum)
	}
	if e, ok, err := d.Get(ctx, subjects.GroupKey("edge")); err != nil || !ok || e.Env.Group != "edge" {
		t.Fatalf("the group key after a complete rollout = %+v, %v, %v", e, ok, err)
	}

	t.Run("a_stopped_device_converges_when_it_starts_again", func(t *testing.T) {
		w := r.byID["dev-02"]
		w.node.Shutdown(ctx)
		// --all: the hub's status stream makes the stopped device a target too.
		sum := durable("", r.variant("b-"), func(o *fleet.PushOptions) { o.Target = fleet.Target{All: true} })
		states := map[string]string{}
		for _, ds := range sum.Devices {
			states[ds.Device] = ds.State
		}
		// The hub knows dev-02 from its status record: it is targeted while offline.
		if states["dev-00"] != fleet.StateSucceeded || states["dev-02"] != fleet.StateOffline || !sum.OK() {
			t.Fatalf("push with dev-02 stopped = %+v", sum)
		}
		r.restart(w, hub.leafURL(), w.creds)
		id := sum.Devices[2].JobID
		waitStatus(t, d, "dev-02", "converge on "+id, func(s fleet.DeviceStatus) bool {
			return s.Applied == id && s.JobState == record.Succeeded
		})
		if !activeHas(w, "b-") {
			t.Error("dev-02 reports success but its active config is not the new one")
		}
	})

	t.Run("the_hub_restarts_and_devices_converge_from_its_disk", func(t *testing.T) {
		w := r.byID["dev-01"]
		w.node.Shutdown(ctx)
		sum := durable("edge", r.variant("c-"))
		if !sum.OK() {
			t.Fatalf("push = %+v", sum)
		}
		hub.stop() // SIGKILL: what JetStream acknowledged must survive it
		hub.start()
		// It comes back in a group its hub credentials do not carry: the hub drops the
		// direct gets of that group's key, and its other keys still count.
		r.restart(w, hub.leafURL(), w.creds, "not-in-creds")
		fptest.WaitFor(t, 30*time.Second, "dev-01 to converge after the hub came back", func() bool { return activeHas(w, "c-") })
	})

	t.Run("an_older_envelope_written_later_is_ignored", func(t *testing.T) {
		w := r.byID["dev-00"]
		// dev-00's only key becomes its group's (its own and the fleet's are deleted),
		// holding an envelope issued an hour ago:
		// newest among its keys, older than what it applied.
		for _, k := range []string{subjects.DeviceKey("dev-00"), subjects.AllKey} {
			if err := d.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		older, err := d.Stamp(subjects.GroupKey("edge"), fleet.Payload{Data: r.variant("old-"), ContentType: envelope.TypeTOML})
		if err != nil {
			t.Fatal(err)
		}
		older.IssuedAt = older.IssuedAt.Add(-time.Hour)
		older.ExpiresAt = older.IssuedAt.Add(5 * time.Minute)
		if _, err := d.Put(ctx, subjects.GroupKey("edge"), older); err != nil {
			t.Fatal(err)
		}
		s := waitStatus(t, d, "dev-00", "read the older envelope", func(s fleet.DeviceStatus) bool { return s.Desired == older.ID })
		if s.Applied == older.ID || activeHas(w, "old-") || !activeHas(w, "c-") {
			t.Fatalf("anti-rollback: status %+v; the device took an older state", s.Status)
		}
	})

	t.Run("durable_or_older_envelopes_sent_as_requests_are_refused", func(t *testing.T) {
		w := r.byID["dev-00"]
		// A group member that heard the group's durable envelope sends it to a device as
		// a request, hoping to take it back to that state.
		e, ok, err := d.Get(ctx, subjects.GroupKey("edge"))
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		msg := nats.NewMsg(subjects.Subject{Fleet: "fleet", Kind: subjects.Group, Name: "edge", Op: "apply"}.String())
		msg.Data = e.Raw
		msg.Header.Set(envelope.SignatureHeader, e.Sig)
		res, err := nc.RequestMsg(msg, 5*time.Second)
		if err != nil || !bytes.Contains(res.Data, []byte(`"code":"invalid"`)) || !bytes.Contains(res.Data, []byte("durable desired state")) {
			t.Fatalf("a durable envelope as a request: %v %s", err, res.Data)
		}
		// A one-shot push signed by the operator but issued before what the device runs
		// (a publisher whose clock is behind) is refused when its job starts.
		behind, err := fleet.New(nc, "fleet", fleet.WithSigner(r.admin), fleet.WithClock(func() time.Time { return time.Now().Add(-3 * time.Minute) }))
		if err != nil {
			t.Fatal(err)
		}
		sum := r.push(behind, fleet.PushOptions{Target: fleet.Target{Devices: []string{"dev-00"}}, Payload: fleet.Payload{Data: r.variant("stale-"), ContentType: envelope.TypeTOML}})
		if sum.OK() || !strings.Contains(sum.Devices[0].Error, "older than the state this device applied") || activeHas(w, "stale-") {
			t.Fatalf("an older one-shot push = %+v", sum)
		}
	})

	t.Run("a_newer_device_key_beats_its_group_and_a_newer_group_key_beats_both", func(t *testing.T) {
		dev0, dev1 := r.byID["dev-00"], r.byID["dev-01"]
		env, _ := d.Stamp(subjects.DeviceKey("dev-00"), fleet.Payload{Data: r.variant("dev-"), ContentType: envelope.TypeTOML})
		if _, err := d.Put(ctx, subjects.DeviceKey("dev-00"), env); err != nil {
			t.Fatal(err)
		}
		fptest.WaitFor(t, 30*time.Second, "dev-00 to take its device key", func() bool { return activeHas(dev0, "dev-") })
		if activeHas(dev1, "dev-") {
			t.Error("dev-01 took dev-00's key")
		}
		genv, _ := d.Stamp(subjects.GroupKey("edge"), fleet.Payload{Data: r.variant("grp-"), ContentType: envelope.TypeTOML})
		if _, err := d.Put(ctx, subjects.GroupKey("edge"), genv); err != nil {
			t.Fatal(err)
		}
		for _, w := range []*worker{dev0, dev1} {
			fptest.WaitFor(t, 30*time.Second, w.id+" to take the newer group key", func() bool { return activeHas(w, "grp-") })
		}
	})

	t.Run("revert_on_failure_returns_the_early_devices", func(t *testing.T) {
		waitDiscover(t, c, fleet.Target{Group: "edge"}, 3)
		r.byID["dev-01"].dev.Sim.SetFail("extra.service", true)
		defer r.byID["dev-01"].dev.Sim.SetFail("extra.service", false)
		zero := fleet.Count{}
		bad := r.variantOf(r.cfg2, "rev-")
		sum := durable("edge", bad, func(o *fleet.PushOptions) { o.Batch, o.MaxFailures, o.RevertOnFailure = fleet.Count{N: 1}, &zero, true })
		if sum.OK() || sum.Stopped == "" || len(sum.Reverted) != 2 || sum.Counts[fleet.StateSkipped] != 1 {
			t.Fatalf("summary = %+v", sum)
		}
		// dev-00 took the new state and succeeded: it is returned to grp-, by a new envelope.
		fptest.WaitFor(t, 30*time.Second, "dev-00 back on its previous desired state", func() bool {
			return activeHas(r.byID["dev-00"], "grp-")
		})
		if activeHas(r.byID["dev-02"], "rev-") {
			t.Error("the skipped device took the new state")
		}
		sts, err := d.Statuses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, dev := range []string{"dev-00", "dev-01", "dev-02"} {
			if sts[dev].Enrollment == fleet.EnrollmentImpostor || sts[dev].Device != dev {
				t.Errorf("status of %s = %+v", dev, sts[dev])
			}
		}
	})

	t.Run("a_stopped_rollout_resumes_where_it_stopped", func(t *testing.T) {
		fail := r.byID["dev-01"].dev.Sim
		fail.SetFail("extra.service", true)
		zero := fleet.Count{}
		x := r.variantOf(r.cfg2, "resume-")
		sum := durable("edge", x, func(o *fleet.PushOptions) { o.Batch, o.MaxFailures = fleet.Count{N: 1}, &zero })
		if sum.Stopped == "" || sum.Devices[0].State != fleet.StateSucceeded || sum.Devices[2].State != fleet.StateSkipped {
			t.Fatalf("first run = %+v", sum)
		}
		first := sum.Devices[0].JobID
		fail.SetFail("extra.service", false) // the cause is fixed; the same push again
		sum = durable("edge", x, func(o *fleet.PushOptions) { o.Batch, o.MaxFailures, o.Resume = fleet.Count{N: 1}, &zero, true })
		if !sum.OK() || sum.Devices[0].Stage != "already converged" || sum.Devices[0].JobID != first {
			t.Fatalf("resumed run = %+v", sum)
		}
		for _, w := range r.workers {
			if !activeHas(w, "resume-") {
				t.Errorf("%s is not on the resumed rollout's config", w.id)
			}
		}
		// --resume with another payload is a new rollout: no device took it already.
		y := r.variantOf(r.cfg2, "resume2-")
		sum = durable("edge", y, func(o *fleet.PushOptions) { o.Resume = true })
		if !sum.OK() || len(sum.Devices) == 0 {
			t.Fatalf("--resume of another payload = %+v", sum)
		}
		for _, d := range sum.Devices {
			if d.Stage == "already converged" || d.State != fleet.StateSucceeded {
				t.Errorf("--resume of another payload: %s %s %q", d.Device, d.State, d.Stage)
			}
		}
	})

	t.Run("a_payload_too_large_for_a_value_goes_through_the_object_store", func(t *testing.T) {
		w := r.byID["dev-02"]
		w.node.Shutdown(ctx)
		big := append(r.variantOf(r.cfg2, "big-"), bytes.Repeat([]byte("# padding past the hub's max payload\n"), 40000)...)
		sum := durable("", big, func(o *fleet.PushOptions) { o.Target = fleet.Target{All: true} })
		if len(sum.Devices) != 3 || sum.Devices[0].State != fleet.StateSucceeded || sum.Devices[1].State != fleet.StateSucceeded || sum.Devices[2].State != fleet.StateOffline {
			t.Fatalf("push of %d bytes with dev-02 stopped = %+v", len(big), sum)
		}
		e, ok, err := d.Get(ctx, subjects.DeviceKey("dev-02"))
		if err != nil || !ok || e.Env.PayloadRef == nil || e.Env.PayloadRef.Object != e.Env.PayloadSHA256 || e.Env.Payload != nil {
			t.Fatalf("dev-02's desired state = %+v, %v, %v; want a reference to the object store", e.Env, ok, err)
		}
		// Started again later: the object is still read.
		r.restart(w, hub.leafURL(), w.creds)
		fptest.WaitFor(t, 30*time.Second, "dev-02 to converge on the large payload", func() bool { return activeHas(w, "big-") })
		if b, err := w.dev.Prov.State().ReadActive(); err != nil || len(b) != len(big) {
			t.Errorf("dev-02's active config is %d bytes (%v); want %d", len(b), err, len(big))
		}

		// Whoever can write the hub's object store swaps the object under the device's
		// feet, same name and size: the device checks the signed digest and refuses it.
		w.node.Shutdown(ctx)
		big2 := append(r.variantOf(r.cfg2, "big2-"), bytes.Repeat([]byte("# padding past the hub's max payload\n"), 40000)...)
		sum = durable("", big2, func(o *fleet.PushOptions) { o.Target = fleet.Target{All: true} })
		if len(sum.Devices) != 3 || sum.Devices[0].State != fleet.StateSucceeded || sum.Devices[1].State != fleet.StateSucceeded || sum.Devices[2].State != fleet.StateOffline {
			t.Fatalf("push of big2 with dev-02 stopped = %+v", sum)
		}
		if e, ok, err = d.Get(ctx, subjects.DeviceKey("dev-02")); err != nil || !ok || e.Env.PayloadRef == nil {
			t.Fatalf("dev-02's desired state after big2 = %+v, %v, %v; want a reference to the object store", e.Env, ok, err)
		}
		js, _ := jetstream.New(nc)
		obs, err := js.ObjectStore(ctx, subjects.PayloadBucket("fleet"))
		if err != nil {
			t.Fatal(err)
		}
		evil := append(r.variantOf(r.cfg2, "evil"), bytes.Repeat([]byte("# padding past the hub's max payload\n"), 40000)...)
		evil = append(evil, bytes.Repeat([]byte("#"), len(big2)-len(evil))...)
		if _, err := obs.PutBytes(ctx, e.Env.PayloadRef.Object, evil); err != nil {
			t.Fatal(err)
		}
		r.restart(w, hub.leafURL(), w.creds)
		st := waitStatus(t, d, "dev-02", "refuse the swapped object", func(s fleet.DeviceStatus) bool { return s.Desired == e.Env.ID && s.Code != "" })
		if !strings.Contains(st.Error, "sha256") || !activeHas(w, "big-") {
			t.Errorf("dev-02 with a swapped object: status %+v; active still big-: %v", st, activeHas(w, "big-"))
		}
	})
}
