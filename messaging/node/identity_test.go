package node_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
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
