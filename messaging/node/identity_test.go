package node_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// signedBy checks that body carries the device's signature (namespace
// fleetprov-device-v1) by key, and fails the test otherwise.
func signedBy(t *testing.T, what string, body []byte, sig64 string, key ssh.PublicKey) {
	t.Helper()
	sig, err := base64.StdEncoding.DecodeString(sig64)
	if err != nil || sig64 == "" {
		t.Fatalf("%s: no device signature (%q)", what, sig64)
	}
	pub, err := auth.VerifySelf(body, sig, auth.NamespaceDevice)
	if err != nil || !bytes.Equal(pub.Marshal(), key.Marshal()) {
		t.Fatalf("%s: signature %v by %v; want the device's key", what, err, pub)
	}
	if _, err := auth.VerifySelf(append(append([]byte{}, body...), ' '), sig, auth.NamespaceDevice); err == nil {
		t.Fatalf("%s: the signature also verifies a changed body", what)
	}
}

// TestDeviceSignsWhatItSays: replies (bound to their request), presence, and every job
// event (numbered, the final record last) carry the device's identity signature, over
// NATS and HTTP; the key survives a restart.
func TestDeviceSignsWhatItSays(t *testing.T) {
	admin, line := configtest.NewKey(t)
	dev := provisiontest.New(t)
	b := startBoth(t, dev, nil)
	key := b.node.Identity.PublicKey()

	msg, err := b.nc.Request(subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: "ping"}.String(), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	signedBy(t, "ping reply", msg.Data, msg.Header.Get(wire.DeviceSignatureHeader), key)
	var reply wire.Reply
	var p wire.Presence
	json.Unmarshal(msg.Data, &reply)
	json.Unmarshal(reply.Data, &p)
	if p.Identity != identity.Fingerprint(key) {
		t.Errorf("presence identity = %q; want %s", p.Identity, identity.Fingerprint(key))
	}

	// A job: its events are signed and numbered, the final record last.
	events, err := b.nc.SubscribeSync(subjects.Events("test", "d1", "*"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	raw, sig := b.env(admin, "apply", cfg, nil)
	req := nats.NewMsg(subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: "apply"}.String())
	req.Data, req.Header = raw, nats.Header{envelope.SignatureHeader: []string{sig}}
	res, err := b.nc.RequestMsg(req, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	signedBy(t, "apply reply", res.Data, res.Header.Get(wire.DeviceSignatureHeader), key)
	json.Unmarshal(res.Data, &reply)
	var env envelope.Envelope
	json.Unmarshal(raw, &env)
	if !reply.Accepted || reply.Request != env.ID || reply.Fleet != "test" || reply.Device != "d1" {
		t.Fatalf("apply reply = %+v; want accepted, bound to request %s", reply, env.ID)
	}
	for seq := 1; ; seq++ {
		m, err := events.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("event %d: %v", seq, err)
		}
		signedBy(t, "event", m.Data, m.Header.Get(wire.DeviceSignatureHeader), key)
		var em wire.EventMsg
		json.Unmarshal(m.Data, &em)
		if em.Seq != seq || em.JobID != reply.JobID || em.Fleet != "test" {
			t.Fatalf("event = %+v; want seq %d of job %s", em, seq, reply.JobID)
		}
		if em.Done {
			break
		}
	}

	// Over HTTP, the reply to an envelope carries the same signature.
	raw, sig = b.env(admin, "current", nil, nil)
	hreq, _ := http.NewRequest("POST", b.base+"/api/envelopes", bytes.NewReader(raw))
	hreq.Header.Set(envelope.SignatureHeader, sig)
	hres, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hres.Body)
	hres.Body.Close()
	signedBy(t, "HTTP envelope reply", body, hres.Header.Get(wire.DeviceSignatureHeader), key)

	// The key is the device's for good: the same after a restart.
	b.node.Shutdown(t.Context())
	again := nodetest.StartDevice(t, dev, "d1", func(o *node.Options) {})
	if !bytes.Equal(again.Identity.PublicKey().Marshal(), key.Marshal()) {
		t.Error("the identity key changed across a restart")
	}
}

// publisherFor is a fleet client with its own known-devices file, as the publisher CLI.
func publisherFor(t *testing.T, nc *nats.Conn, signer ssh.Signer, tofu bool) (*fleet.Client, *fleet.KnownDevices) {
	t.Helper()
	known, err := fleet.LoadKnownDevices(filepath.Join(t.TempDir(), "known_devices"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleet.New(nc, "test", fleet.WithSigner(signer), fleet.WithKnownDevices(known, tofu, nil))
	if err != nil {
		t.Fatal(err)
	}
	return c, known
}

// attackerConn is another client of the device's NATS server, closed with the test. It
// holds the admin key, every NATS permission: the signatures must hold even then.
func attackerConn(t *testing.T, b *both) *nats.Conn {
	t.Helper()
	return nodetest.Connect(t, b.node)
}

// deviceSigned is body as a device says it: signed by key in the device namespace (no
// signature when key is nil).
func deviceSigned(key ssh.Signer, body []byte) *nats.Msg {
	m := &nats.Msg{Data: body, Header: nats.Header{}}
	if key != nil {
		sig, _ := auth.Sign(body, key, auth.NamespaceDevice)
		m.Header.Set(wire.DeviceSignatureHeader, base64.StdEncoding.EncodeToString(sig))
	}
	return m
}

// fakeDevice answers every request on device id's subjects like a device that accepts
// and succeeds, signed by its own key (or unsigned).
func fakeDevice(t *testing.T, nc *nats.Conn, id string, key ssh.Signer) {
	t.Helper()
	sub, err := nc.Subscribe(subjects.DeviceRequests("test", id), func(m *nats.Msg) {
		var env envelope.Envelope
		json.Unmarshal(m.Data, &env)
		b, _ := json.Marshal(wire.Reply{Accepted: true, JobID: env.ID, Device: id, Fleet: "test", Request: env.ID})
		m.RespondMsg(deviceSigned(key, b))
		if key != nil && env.ID != "" {
			j := record.Job{ID: env.ID, Op: env.Op, State: record.Succeeded}
			ev, _ := json.Marshal(wire.EventMsg{JobID: env.ID, Device: id, Fleet: "test", Seq: 1, Done: true, Job: &j})
			out := deviceSigned(key, ev)
			out.Subject = subjects.Events("test", id, env.ID)
			nc.PublishMsg(out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	nc.Flush()
}

// TestPublisherRefusesFakeDevices mounts the impostor attacks: a client on the hub that
// answers for a device. An unknown device is not trusted without enrolment; a device
// that signs with another key than its enrolled one, or not at all, is an impostor.
// None of them shows as succeeded.
func TestPublisherRefusesFakeDevices(t *testing.T) {
	b := startBoth(t, provisiontest.New(t), nil)
	admin, line := configtest.NewKey(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	ghostKey, _ := configtest.NewKey(t)
	enrolledKey, _ := configtest.NewKey(t)
	attacker := attackerConn(t, b)
	push := func(c *fleet.Client, dev string) fleet.DeviceState {
		sum, err := c.Push(t.Context(), fleet.PushOptions{Target: fleet.Target{Devices: []string{dev}},
			Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML}, Timeout: 10 * time.Second, ReplyTimeout: 5 * time.Second}, nil)
		if err != nil || len(sum.Devices) != 1 {
			t.Fatalf("push = %+v, %v", sum, err)
		}
		return sum.Devices[0]
	}

	fakeDevice(t, attacker, "ghost", ghostKey)
	c, known := publisherFor(t, b.nc, admin, false)
	if d := push(c, "ghost"); d.State != fleet.StateUnenrolled {
		t.Errorf("push to an unknown fake device = %s (%s); want unenrolled", d.State, d.Error)
	}
	known.Add("test", "ghost", enrolledKey.PublicKey(), nil)
	if d := push(c, "ghost"); d.State != fleet.StateImpostor {
		t.Errorf("push to a fake device with another key than the enrolled one = %s; want impostor", d.State)
	}
	fakeDevice(t, attacker, "mute", nil)
	known.Add("test", "mute", enrolledKey.PublicKey(), nil)
	if d := push(c, "mute"); d.State != fleet.StateImpostor {
		t.Errorf("push to a device answering unsigned = %s; want impostor", d.State)
	}
	// The real device, enrolled on first use, works.
	tofu, _ := publisherFor(t, b.nc, admin, true)
	if d := push(tofu, "d1"); d.State != fleet.StateSucceeded {
		t.Errorf("push to the real device = %s (%s); want succeeded", d.State, d.Error)
	}
}

// TestPublisherDropsForgedAndReplayedEvents: while a real job fails and rolls back, an
// attacker publishes a forged "succeeded" record for it, and replays a real, signed
// "succeeded" event of an earlier job; the push reports what the device really did.
func TestPublisherDropsForgedAndReplayedEvents(t *testing.T) {
	b := startBoth(t, provisiontest.New(t), nil)
	admin, line := configtest.NewKey(t)
	good := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	bad := bytes.Replace(good, []byte(`Image = "ghcr.io/example/myapp:latest"`), []byte(`Image = "ghcr.io/example/myapp:latest"`+"\nLabel = \"fleetprov.simulate=fail\""), 1)
	c, _ := publisherFor(t, b.nc, admin, true)
	attacker := attackerConn(t, b)
	// The attacker records the device's real events.
	var mu sync.Mutex
	var captured []*nats.Msg
	attacker.Subscribe(subjects.Events("test", "d1", "*"), func(m *nats.Msg) {
		mu.Lock()
		captured = append(captured, m)
		mu.Unlock()
	})
	attacker.Flush()
	opts := fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}}, Timeout: 20 * time.Second, ReplyTimeout: 5 * time.Second}
	opts.Payload = fleet.Payload{Data: good, ContentType: envelope.TypeTOML}
	if sum, err := c.Push(t.Context(), opts, nil); err != nil || sum.Devices[0].State != fleet.StateSucceeded {
		t.Fatalf("first push = %+v, %v", sum, err)
	}
	var oldDone *nats.Msg
	fptest.WaitFor(t, 10*time.Second, "the attacker to capture the final event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range captured {
			if bytes.Contains(m.Data, []byte(`"done":true`)) {
				oldDone = m
			}
		}
		return oldDone != nil
	})
	forger, _ := configtest.NewKey(t)
	// As soon as the next envelope shows on the device's subject, forge and replay.
	attacker.Subscribe(subjects.DeviceRequests("test", "d1"), func(m *nats.Msg) {
		var env envelope.Envelope
		if json.Unmarshal(m.Data, &env) != nil || env.ID == "" {
			return
		}
		evSubj := subjects.Events("test", "d1", env.ID)
		attacker.PublishMsg(&nats.Msg{Subject: evSubj, Data: oldDone.Data, Header: oldDone.Header}) // replayed, signed by d1
		j := record.Job{ID: env.ID, State: record.Succeeded}
		forged, _ := json.Marshal(wire.EventMsg{JobID: env.ID, Device: "d1", Fleet: "test", Seq: 1, Done: true, Job: &j})
		out := deviceSigned(forger, forged)
		out.Subject = evSubj
		attacker.PublishMsg(out)
	})
	attacker.Flush()
	opts.Payload = fleet.Payload{Data: bad, ContentType: envelope.TypeTOML}
	sum, err := c.Push(t.Context(), opts, nil)
	if err != nil || sum.Devices[0].State != fleet.StateRolledBack {
		t.Errorf("push of a failing config with forged and replayed events = %+v, %v; want rolled-back", sum.Devices, err)
	}
}

// TestCapturedReadOnlyEnvelopeBoundToItsInbox: an attacker who captured an operator's
// signed export request sends it again with its own reply inbox; the device refuses it
// (the envelope names the operator's inbox), and answers the operator as before.
func TestCapturedReadOnlyEnvelopeBoundToItsInbox(t *testing.T) {
	admin, line := configtest.NewKey(t)
	dev := provisiontest.New(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	dev.Provision(t, cfg)
	b := startBoth(t, dev, nil)
	attacker := attackerConn(t, b)
	captured := make(chan *nats.Msg, 1)
	attacker.Subscribe(subjects.DeviceRequests("test", "d1"), func(m *nats.Msg) {
		select {
		case captured <- m:
		default:
		}
	})
	attacker.Flush()
	c, _ := publisherFor(t, b.nc, admin, true)
	env := c.NewEnvelope("export", "d1", "", fleet.Payload{})
	subj := subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: "export"}.String()
	if r, err := c.Send(t.Context(), subj, env, 5*time.Second); err != nil || !r.Accepted {
		t.Fatalf("the operator's export = %+v, %v", r, err)
	}
	m := <-captured
	replay := nats.NewMsg(m.Subject)
	replay.Data, replay.Header = m.Data, m.Header
	res, err := attacker.RequestMsg(replay, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r wire.Reply
	json.Unmarshal(res.Data, &r)
	if r.Accepted || r.Code != "wrong-target" || len(r.Data) != 0 {
		t.Errorf("the captured export sent from another inbox = %+v; want wrong-target and no bundle", r)
	}
	if entries, _ := os.ReadDir(filepath.Join(dev.StateDir, "replay")); len(entries) != 0 {
		t.Errorf("read-only requests bound to their inbox left %d replay records; want 0", len(entries))
	}
}

// TestReplayedJobRecordRefused: the publisher falls back to asking for a job's record
// when it missed the final event; an attacker answering with a genuine signed record of
// another job (an old "succeeded") must not be taken for this job's.
func TestReplayedJobRecordRefused(t *testing.T) {
	b := startBoth(t, provisiontest.New(t), nil)
	admin, _ := configtest.NewKey(t)
	deviceKey, _ := configtest.NewKey(t)
	attacker := attackerConn(t, b)
	// "ghost" is enrolled with deviceKey; its signed record of job "old-job" was captured.
	old, _ := json.Marshal(record.Job{ID: "old-job", Op: "apply", State: record.Succeeded})
	reply, _ := json.Marshal(wire.Reply{Accepted: true, Device: "ghost", Fleet: "test", Data: old})
	sub, err := attacker.Subscribe(subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "ghost", Op: "job"}.String(), func(m *nats.Msg) {
		m.RespondMsg(deviceSigned(deviceKey, reply))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	attacker.Flush()
	c, known := publisherFor(t, b.nc, admin, false)
	known.Add("test", "ghost", deviceKey.PublicKey(), nil)
	if j, err := c.Job(t.Context(), "ghost", "old-job", 5*time.Second); err != nil || j.State != record.Succeeded {
		t.Fatalf("the record asked for = %+v, %v", j, err)
	}
	if j, err := c.Job(t.Context(), "ghost", "new-job", 5*time.Second); !errors.Is(err, fleet.ErrImpostor) {
		t.Errorf("another job's record as the answer for new-job = %+v, %v; want ErrImpostor", j, err)
	}
}

// TestEnrolmentSeesAnImpostorNextToTheDevice: while an operator enrols d1, another
// client answers d1's ping with its own key. Enrolment must not take whichever answer
// came first (or last): it sees both keys and reports the conflict.
func TestEnrolmentSeesAnImpostorNextToTheDevice(t *testing.T) {
	b := startBoth(t, provisiontest.New(t), nil)
	impostor, _ := configtest.NewKey(t)
	fakeDevice(t, attackerConn(t, b), "d1", impostor)
	c, err := fleet.New(b.nc, "test")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := c.Identities(t.Context(), fleet.Target{Devices: []string{"d1"}}, 300*time.Millisecond, 5*time.Second)
	if err != nil || len(ids) != 1 {
		t.Fatalf("Identities = %+v, %v", ids, err)
	}
	real := ssh.FingerprintSHA256(b.node.Identity.PublicKey())
	fake := ssh.FingerprintSHA256(impostor.PublicKey())
	if !strings.Contains(ids[0].Conflict, real) || !strings.Contains(ids[0].Conflict, fake) {
		t.Errorf("d1 = %+v; want a conflict naming %s and %s", ids[0], real, fake)
	}
}
