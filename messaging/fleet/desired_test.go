package fleet

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// TestStatusRecordsAreBoundToTheirDevice: a status record counts for the device whose
// subject it is on, signed by that device's enrolled key, and names that device. A device
// signing, on its own subject, a record in another device's name (to make a push report
// that one converged) is an impostor for its own id and says nothing about the other; a
// record signed by another key is an impostor; an unknown device's is unenrolled. None of
// them becomes a target of --all.
func TestStatusRecordsAreBoundToTheirDevice(t *testing.T) {
	hub, f := brokertest.AuthHub(t, "f")
	nc := brokertest.PublisherConn(t, hub.ClientURL(), f)
	known, err := LoadKnownDevices(filepath.Join(t.TempDir(), "known_devices"))
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := configtest.NewKey(t)
	d2, _ := configtest.NewKey(t)
	stranger, _ := configtest.NewKey(t)
	for dev, k := range map[string]ssh.Signer{"d1": d1, "d2": d2} {
		if err := known.Add("f", dev, k.PublicKey(), nil); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(nc, "f", WithKnownDevices(known, false, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ds, err := c.OpenDesired(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var watched []DeviceStatus
	stop, err := ds.WatchStatus(func(s DeviceStatus) { mu.Lock(); watched = append(watched, s); mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	record := func(subjectDev, bodyDev string, key ssh.Signer) {
		b, _ := json.Marshal(wire.Status{Device: bodyDev, Fleet: "f", Desired: "x", Applied: "x", JobState: record.Succeeded, Time: time.Now()})
		sig, err := auth.Sign(b, key, auth.NamespaceDevice)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(subjects.StatusOf("f", subjectDev))
		m.Data = b
		m.Header.Set(wire.DeviceSignatureHeader, base64.StdEncoding.EncodeToString(sig))
		if _, err := nc.RequestMsg(m, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	record("d1", "d2", d1)       // d1 speaks for d2, on its own subject, with its own key
	record("d3", "d3", stranger) // an unknown device
	record("d4", "d4", stranger) // ...
	record("d2", "d2", stranger) // another key in d2's name
	record("d5", "d5", d1)       // d1's key for an id it does not hold
	fptest.WaitFor(t, 5*time.Second, "the watch to see all five records", func() bool { mu.Lock(); defer mu.Unlock(); return len(watched) == 5 })
	sts, err := ds.Statuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"d1": EnrollmentImpostor, "d2": EnrollmentImpostor, "d3": EnrollmentUnenrolled, "d4": EnrollmentUnenrolled, "d5": EnrollmentUnenrolled}
	for dev, enr := range want {
		if s := sts[dev]; s.Device != dev || s.Enrollment != enr || (enr == EnrollmentImpostor && s.JobState != "") {
			t.Errorf("status of %s = %+v; want %s", dev, s, enr)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if w := watched[0]; w.Device != "d1" || w.Enrollment != EnrollmentImpostor {
		t.Errorf("the watch took d1's record in d2's name as %+v", w)
	}
	if got := durableTargets(PushOptions{Target: Target{All: true}}, nil, sts); len(got) != 0 {
		t.Errorf("--all would target %v", got)
	}
}

// A group's key is what devices that join later take, so a rollout writes it only when the
// rollout proved it: not when a canary rollout reached no device, nor when a device failed.
func TestGroupKeyNeedsProof(t *testing.T) {
	signer, _ := configtest.NewKey(t)
	c, ds, _ := openStore(t, signer)
	ctx := context.Background()
	o := PushOptions{Target: Target{Group: "edge"}, Canary: 1, Desired: ds, Payload: Payload{Data: []byte("version = 1\n"), ContentType: "toml"},
		ReplyTimeout: 200 * time.Millisecond, Timeout: time.Second}
	sum, err := c.Push(ctx, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ds.Get(ctx, subjects.GroupKey("edge")); err != nil || ok {
		t.Errorf("a canary rollout that reached nobody wrote the group key (%v); note %q", err, sum.Note)
	}
	if !strings.Contains(sum.Note, "canary rollout needs one that did") {
		t.Errorf("note = %q", sum.Note)
	}
	if why := unproven(PushOptions{}, []DeviceState{{Device: "a", State: StateSucceeded}, {Device: "b", State: StateFailed}}); !strings.Contains(why, "b (failed)") {
		t.Errorf("a failed device: %q", why)
	}
	if why := unproven(PushOptions{MaxFailures: &Count{N: 1}}, []DeviceState{{Device: "a", State: StateSucceeded}, {Device: "b", State: StateFailed}}); why != "" {
		t.Errorf("a failure within --max-failures: %q", why)
	}
	if why := unproven(PushOptions{}, []DeviceState{{Device: "a", State: StateOffline}}); why != "" {
		t.Errorf("an offline device without a canary: %q", why)
	}
}

// A watched record older than the one the view read (queued while it was read) does not
// take the row back; a forged one does show.
func TestViewUpdateKeepsTheNewer(t *testing.T) {
	now := time.Now()
	v := &View{Statuses: map[string]DeviceStatus{"d1": {Status: wire.Status{Device: "d1", Desired: "new", Time: now}}}}
	v.Update(DeviceStatus{Status: wire.Status{Device: "d1", Desired: "old", Time: now.Add(-time.Second)}})
	if v.Statuses["d1"].Desired != "new" {
		t.Errorf("an older record replaced a newer one: %+v", v.Statuses["d1"])
	}
	v.Update(DeviceStatus{Status: wire.Status{Device: "d1", Desired: "newer", Time: now.Add(time.Second)}})
	if v.Statuses["d1"].Desired != "newer" {
		t.Errorf("a newer record was ignored: %+v", v.Statuses["d1"])
	}
	// A forged record (deviceStatus gives it no time) is shown, not hidden behind the last
	// genuine one: a full read would show it too.
	v.Update(DeviceStatus{Status: wire.Status{Device: "d1"}, Enrollment: EnrollmentImpostor})
	if v.Statuses["d1"].Enrollment != EnrollmentImpostor {
		t.Errorf("a forged record was hidden: %+v", v.Statuses["d1"])
	}
}

// openStore is a publisher client of fleet f signing with signer, and its durable store,
// on an authenticated hub (a second signer shares the hub with the returned open).
func openStore(t *testing.T, signer ssh.Signer) (*Client, *DesiredStore, func(ssh.Signer) (*Client, *DesiredStore)) {
	t.Helper()
	hub, f := brokertest.AuthHub(t, "f")
	open := func(s ssh.Signer) (*Client, *DesiredStore) {
		c, err := New(brokertest.PublisherConn(t, hub.ClientURL(), f), "f", WithSigner(s))
		if err != nil {
			t.Fatal(err)
		}
		ds, err := c.OpenDesired(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return c, ds
	}
	c, ds := open(signer)
	return c, ds, open
}

// Anyone with publisher credentials can write the bucket: a revert (which re-signs what
// it returns to) and a resume (which trusts what it finds) keep only the values this
// publisher's key signed.
func TestRevertAndResumeKeepOnlyTheirOwnSignatures(t *testing.T) {
	admin, _ := configtest.NewKey(t)
	mallory, _ := configtest.NewKey(t)
	c, ds, open := openStore(t, admin)
	_, mds := open(mallory)
	ctx := context.Background()
	put := func(d *DesiredStore, dev, body string) {
		env, err := d.Stamp(subjects.DeviceKey(dev), Payload{Data: []byte(body), ContentType: envelope.TypeTOML})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Put(ctx, subjects.DeviceKey(dev), env); err != nil {
			t.Fatal(err)
		}
	}
	put(ds, "d1", "version = 1\n")
	put(mds, "d2", "evil = true\n")
	all, err := ds.All(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("All = %d entries, %v; want 2", len(all), err)
	}
	c.keepSigned(all)
	if _, ok := all[subjects.DeviceKey("d1")]; !ok || len(all) != 1 {
		t.Errorf("kept %v; want only d1's, signed by this publisher", all)
	}
}

// An object swapped on the hub under the payload's name and size (which devices refuse
// by its digest) is written again by the next push, not trusted by name and size.
func TestOffloadRepairsASwappedObject(t *testing.T) {
	admin, _ := configtest.NewKey(t)
	c, ds, open := openStore(t, admin)
	ctx := context.Background()
	big := []byte(strings.Repeat("# a payload too large for a KV value\n", c.inlineLimit()/30))
	p := Payload{Data: big, ContentType: envelope.TypeTOML}
	if err := ds.offload(ctx, p); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(c.nc)
	obs, err := js.ObjectStore(ctx, subjects.PayloadBucket("f"))
	if err != nil {
		t.Fatal(err)
	}
	name := envelope.Digest(big)
	evil := bytes.Repeat([]byte("x"), len(big))
	if _, err := obs.PutBytes(ctx, name, evil); err != nil {
		t.Fatal(err)
	}
	_, ds2 := open(admin) // the next push: a fresh store, no memory of the first
	if err := ds2.offload(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, err := obs.GetBytes(ctx, name); err != nil || !bytes.Equal(got, big) {
		t.Errorf("after the next push the object is %d bytes, the payload: %v (%v)", len(got), bytes.Equal(got, big), err)
	}
}

// Put sends a write the hub did not acknowledge in time again (seen with 1,000 at once);
// the same envelope written twice is stored once, so a retry never doubles a revision.
func TestPutTwiceStoresOnce(t *testing.T) {
	admin, _ := configtest.NewKey(t)
	c, ds, _ := openStore(t, admin)
	ctx := context.Background()
	env, err := ds.Stamp(subjects.DeviceKey("d1"), Payload{Data: []byte("version = 1\n"), ContentType: envelope.TypeTOML})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := ds.Put(ctx, subjects.DeviceKey("d1"), env); err != nil {
			t.Fatal(err)
		}
	}
	js, _ := jetstream.New(c.nc)
	st, err := js.Stream(ctx, "KV_"+subjects.DesiredBucket("f"))
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("the stream holds %v messages (%v); want 1", info.State.Msgs, err)
	}
}
