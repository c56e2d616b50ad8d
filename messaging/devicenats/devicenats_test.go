package devicenats_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

type rig struct {
	t      *testing.T
	dev    *provisiontest.Device
	node   *node.Node
	nc     *nats.Conn
	admin  ssh.Signer
	client *fleet.Client
	cfg    []byte
}

// start boots a worker node named id on the simulate backend and connects a client over
// TCP. The config it is meant to receive makes admin's key the admin.
func start(t *testing.T, id string, groups []string, dev *provisiontest.Device) *rig {
	t.Helper()
	if dev == nil {
		dev = provisiontest.New(t)
	}
	n := nodetest.StartDevice(t, dev, id, func(o *node.Options) { o.Groups = groups })
	nc := nodetest.Connect(t, n)
	return &rig{t: t, dev: dev, node: n, nc: nc}
}

func (r *rig) withAdmin(s ssh.Signer, line string) *rig {
	r.admin = s
	r.cfg = configtest.FixtureWithAdmin(r.t, "vm-full.config.toml", line)
	c, err := fleet.New(r.nc, "test", fleet.WithSigner(s))
	if err != nil {
		r.t.Fatal(err)
	}
	r.client = c
	return r
}

func (r *rig) send(subject string, env *envelope.Envelope, signer ssh.Signer, mutate func(raw []byte, msg *nats.Msg)) wire.Reply {
	r.t.Helper()
	raw, _ := env.Encode()
	msg := nats.NewMsg(subject)
	msg.Data = raw
	if signer != nil {
		h, _ := envelope.Sign(raw, signer)
		msg.Header.Set(envelope.SignatureHeader, h)
	}
	if mutate != nil {
		mutate(raw, msg)
	}
	reply, err := r.nc.RequestMsg(msg, 10*time.Second)
	if err != nil {
		r.t.Fatalf("request %s: %v", subject, err)
	}
	var out wire.Reply
	json.Unmarshal(reply.Data, &out)
	return out
}

func (r *rig) devSubject(op string) string {
	return subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: op}.String()
}

func (r *rig) applyEnv(payload []byte) *envelope.Envelope {
	e := r.client.NewEnvelope("apply", "d1", "", fleet.Payload{Data: payload, ContentType: envelope.TypeTOML})
	e.Payload = payload
	return e
}

func newKey(t *testing.T) (ssh.Signer, string) { return configtest.NewKey(t) }

func TestProvisionOverNATSAndRejections(t *testing.T) {
	admin, line := newKey(t)
	r := start(t, "d1", []string{"edge"}, nil).withAdmin(admin, line)

	// First boot: signed by the key the config makes admin (proof of possession).
	env := r.applyEnv(r.cfg)
	events, stopWatch, err := r.client.WatchJob("d1", env.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer stopWatch()
	rep := r.send(r.devSubject("apply"), env, admin, nil)
	if !rep.Accepted || rep.JobID != env.ID {
		t.Fatalf("first-boot apply reply = %+v", rep)
	}
	var steps []string
	for m := range events {
		if m.Event != nil {
			steps = append(steps, m.Event.Step)
		}
		if m.Done && m.Job.State != "succeeded" {
			t.Fatalf("job = %+v", m.Job)
		}
	}
	if len(steps) < 10 || steps[0] != "running" || steps[len(steps)-1] != "completed" {
		t.Errorf("events = %v", steps)
	}
	before := provisiontest.Tree(t, r.dev.StateDir+"/config")

	other, _ := newKey(t)
	big := bytes.Repeat([]byte("#"), 2<<20)
	tests := []struct {
		name    string
		subject string
		env     func() *envelope.Envelope
		signer  ssh.Signer
		mutate  func(raw []byte, msg *nats.Msg)
		want    *wire.Error
	}{
		{"unsigned", r.devSubject("apply"), func() *envelope.Envelope { return r.applyEnv(r.cfg) }, nil, nil, wire.ErrUnauthorized},
		{"wrong_key", r.devSubject("apply"), func() *envelope.Envelope { return r.applyEnv(r.cfg) }, other, nil, wire.ErrUnauthorized},
		{"tampered_payload", r.devSubject("apply"), func() *envelope.Envelope { return r.applyEnv(r.cfg) }, admin, func(raw []byte, msg *nats.Msg) {
			var e envelope.Envelope
			json.Unmarshal(raw, &e)
			e.Payload = []byte("version = 1\n")
			msg.Data, _ = e.Encode()
		}, wire.ErrUnauthorized},
		{"tampered_field", r.devSubject("apply"), func() *envelope.Envelope { return r.applyEnv(r.cfg) }, admin, func(raw []byte, msg *nats.Msg) {
			msg.Data = bytes.Replace(raw, []byte(`"expires_at":"`), []byte(`"expires_at":"2`), 1)
			var e envelope.Envelope
			if json.Unmarshal(msg.Data, &e) != nil {
				e2 := envelope.Envelope{}
				json.Unmarshal(raw, &e2)
				e2.ExpiresAt = e2.ExpiresAt.Add(time.Minute)
				msg.Data, _ = e2.Encode()
			}
		}, wire.ErrUnauthorized},
		{"expired", r.devSubject("apply"), func() *envelope.Envelope {
			e := r.applyEnv(r.cfg)
			e.IssuedAt, e.ExpiresAt = e.IssuedAt.Add(-20*time.Minute), e.IssuedAt.Add(-15*time.Minute)
			return e
		}, admin, nil, wire.ErrExpired},
		{"issued_in_future", r.devSubject("apply"), func() *envelope.Envelope {
			e := r.applyEnv(r.cfg)
			e.IssuedAt, e.ExpiresAt = e.IssuedAt.Add(5*time.Minute), e.IssuedAt.Add(10*time.Minute)
			return e
		}, admin, nil, wire.ErrExpired},
		{"replayed", r.devSubject("apply"), func() *envelope.Envelope { e := r.applyEnv(r.cfg); e.ID = env.ID; return e }, admin, nil, wire.ErrReplayed},
		{"other_devices_envelope", r.devSubject("apply"), func() *envelope.Envelope {
			e := r.applyEnv(r.cfg)
			e.Device = "d2"
			return e
		}, admin, nil, wire.ErrWrongTarget},
		{"group_not_joined", subjects.Subject{Fleet: "test", Kind: subjects.Group, Name: "edge", Op: "apply"}.String(), func() *envelope.Envelope {
			e := r.applyEnv(r.cfg)
			e.Target, e.Device, e.Group = envelope.TargetGroup, "", "core"
			return e
		}, admin, nil, wire.ErrWrongTarget},
		{"wrong_namespace", r.devSubject("apply"), func() *envelope.Envelope { return r.applyEnv(r.cfg) }, admin, func(raw []byte, msg *nats.Msg) {
			sig, _ := signNS(raw, admin, "git")
			msg.Header.Set(envelope.SignatureHeader, sig)
		}, wire.ErrUnauthorized},
		{"oversize_wrong_digest", r.devSubject("apply"), func() *envelope.Envelope {
			e := r.applyEnv(nil)
			e.Payload = nil
			prep, _ := r.client.Prepare(context.Background(), fleet.Payload{Data: big})
			prep.Attach(e)
			e.PayloadSHA256 = envelope.Digest([]byte("something else"))
			return e
		}, admin, nil, wire.ErrInvalid},
		{"op_on_wrong_subject", r.devSubject("validate"), func() *envelope.Envelope { return r.applyEnv(r.cfg) }, admin, nil, wire.ErrWrongTarget},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rep := r.send(tc.subject, tc.env(), tc.signer, tc.mutate)
			if rep.Accepted || !errors.Is(rep.Err(), tc.want) {
				t.Errorf("reply = %+v; want code %s", rep, tc.want.Code)
			}
			if after := provisiontest.Tree(t, r.dev.StateDir+"/config"); after != before {
				t.Errorf("state changed after a rejected request")
			}
		})
	}

	// Replay protection survives a restart of the worker.
	r.node.Shutdown(context.Background())
	r2 := start(t, "d1", []string{"edge"}, r.dev).withAdmin(admin, line)
	again := r.applyEnv(r.cfg)
	again.ID = env.ID
	if rep := r2.send(r2.devSubject("apply"), again, admin, nil); !errors.Is(rep.Err(), wire.ErrReplayed) {
		t.Errorf("replay after restart: %+v", rep)
	}
	// Read-only queries need no signature; the old job is still there.
	j, err := r2.client.Job(context.Background(), "d1", env.ID, 5*time.Second)
	if err != nil || j.State != "succeeded" {
		t.Errorf("job after restart = %+v, %v", j, err)
	}
	p, err := r2.client.Ping(context.Background(), "d1", 5*time.Second)
	if err != nil || !p.Provisioned || p.Drift || p.LastJob == nil || p.LastJob.State != "succeeded" {
		t.Errorf("ping = %+v, %v", p, err)
	}
}

func signNS(raw []byte, s ssh.Signer, ns string) (string, error) {
	sig, err := authSign(raw, s, ns)
	return sig, err
}

func TestFirstBootPossessionAndLargePayload(t *testing.T) {
	admin, line := newKey(t)
	r := start(t, "d1", nil, nil).withAdmin(admin, line)
	// A stranger's key may sign a first-boot apply only of a config that makes it admin.
	stranger, _ := newKey(t)
	sc, _ := fleet.New(r.nc, "test", fleet.WithSigner(stranger))
	sum, err := sc.Push(context.Background(), fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}}, Payload: fleet.Payload{Data: r.cfg, ContentType: envelope.TypeTOML}}, nil)
	if err != nil || sum.Devices[0].State != fleet.StateFailed || !strings.Contains(sum.Devices[0].Error, "admin") {
		t.Fatalf("stranger's first-boot push = %+v, %v", sum, err)
	}
	if r.dev.Prov.State().HasActive() {
		t.Fatal("provisioned by a stranger")
	}
	// A payload over the NATS max payload travels as a blob; the digest is checked.
	padded := append(append([]byte{}, r.cfg...), bytes.Repeat([]byte("# padding to pass one message\n"), 100000)...)
	sum, err = r.client.Push(context.Background(), fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}}, Payload: fleet.Payload{Data: padded, ContentType: envelope.TypeTOML}}, nil)
	if err != nil || !sum.OK() {
		t.Fatalf("large push = %+v, %v", sum, err)
	}
	if b, _ := r.dev.Prov.State().ReadActive(); len(b) != len(padded) {
		t.Errorf("active config is %d bytes; want %d", len(b), len(padded))
	}
}

func TestPatchOverNATS(t *testing.T) {
	admin, line := newKey(t)
	r := start(t, "d1", nil, nil).withAdmin(admin, line)
	push := func(op string, data []byte, ct string) fleet.Summary {
		t.Helper()
		sum, err := r.client.Push(context.Background(), fleet.PushOptions{Op: op, Target: fleet.Target{Devices: []string{"d1"}}, Payload: fleet.Payload{Data: data, ContentType: ct}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return sum
	}
	if sum := push("apply", r.cfg, envelope.TypeTOML); !sum.OK() {
		t.Fatalf("apply = %+v", sum)
	}
	if sum := push("patch", []byte(`{"kind":"activation","op":"merge","value":{"timeout_seconds":77}}`), envelope.TypeJSON); !sum.OK() {
		t.Fatalf("patch = %+v", sum)
	}
	m, _ := r.dev.Prov.ActiveModel()
	if m.Activation.TimeoutSeconds != 77 {
		t.Errorf("timeout = %d; want 77", m.Activation.TimeoutSeconds)
	}
	before := provisiontest.Tree(t, r.dev.StateDir+"/config")
	sum := push("patch", []byte(`{"kind":"activation","op":"merge","value":{"timeout_seconds":0,"required":["ghost"]}}`), envelope.TypeJSON)
	d := sum.Devices[0]
	if d.State != fleet.StateRejected || d.Code != "invalid" || !strings.Contains(d.Error, "activation.timeout_seconds") || !strings.Contains(d.Error, "unknown unit: ghost") {
		t.Errorf("invalid patch = %+v; want every error, synchronously", d)
	}
	if after := provisiontest.Tree(t, r.dev.StateDir+"/config"); after != before {
		t.Errorf("an invalid patch changed the state")
	}
}

// TestPingFloodSignsOnce: a flood of empty pings (valid requests anyone allowed on the
// subject can send) is answered with one signed presence, not a signature each (that
// starved the device's callback); a finished job makes the next ping answer anew.
func TestPingFloodSignsOnce(t *testing.T) {
	r := start(t, "d1", nil, nil)
	admin, line := newKey(t)
	r.withAdmin(admin, line)
	ping := func() wire.Presence {
		t.Helper()
		m, err := r.nc.Request(r.devSubject("ping"), nil, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var reply wire.Reply
		var p wire.Presence
		if json.Unmarshal(m.Data, &reply) != nil || json.Unmarshal(reply.Data, &p) != nil {
			t.Fatalf("ping reply %s", m.Data)
		}
		return p
	}
	// Each presence carries the time it was made: 100 pings see at most two (one when the
	// reuse window ends mid-flood), not 100.
	times := map[time.Time]bool{}
	for range 100 {
		times[ping().Time] = true
	}
	if len(times) > 2 {
		t.Errorf("100 pings were answered with %d presences; want one reused", len(times))
	}
	if ping().Provisioned {
		t.Fatal("provisioned before the push")
	}
	sum, err := r.client.Push(context.Background(), fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}},
		Payload: fleet.Payload{Data: r.cfg, ContentType: envelope.TypeTOML}}, nil)
	if err != nil || !sum.OK() {
		t.Fatalf("push = %+v, %v", sum, err)
	}
	if !ping().Provisioned {
		t.Error("the ping after the job's end answers with the presence from before it")
	}
}
