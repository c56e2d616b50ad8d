package bench

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// signedFixture returns an envelope-sized message, its armored signature and the
// allowed_signers text.
func signedFixture(b *testing.B) ([]byte, []byte, []byte) {
	signer, line := configtest.NewKey(b)
	env := &envelope.Envelope{V: 1, ID: "x", Op: "apply", Fleet: "f", Target: "all", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute),
		PayloadSHA256: envelope.Digest(nil), ContentType: envelope.TypeTOML, Payload: configtest.Fixture(b, "vm-full.config.toml")}
	msg, _ := env.Encode()
	sig, err := auth.Sign(msg, signer, auth.NamespaceEnvelope)
	if err != nil {
		b.Fatal(err)
	}
	return msg, sig, []byte("admin " + line + "\n")
}

// BenchmarkVerifyInProcess verifies an envelope signature with core/auth.
func BenchmarkVerifyInProcess(b *testing.B) {
	msg, sig, allowed := signedFixture(b)
	signers, _ := auth.ParseAllowedSigners(allowed)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := signers.Verify(msg, sig, auth.NamespaceEnvelope, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifySSHKeygen verifies the same signature with an `ssh-keygen -Y verify`
// subprocess per signature: the obvious alternative.
func BenchmarkVerifySSHKeygen(b *testing.B) {
	bin := fptest.RequireTool(b, "openssh-client", "ssh-keygen")
	msg, sig, allowed := signedFixture(b)
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "allowed"), allowed, 0o600)
	os.WriteFile(filepath.Join(dir, "sig"), sig, 0o600)
	for b.Loop() {
		cmd := exec.Command(bin, "-Y", "verify", "-f", filepath.Join(dir, "allowed"), "-I", "admin", "-n", auth.NamespaceEnvelope, "-s", filepath.Join(dir, "sig"))
		cmd.Stdin = bytes.NewReader(msg)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// validateRig starts one provisioned device node and a client on its TCP listener.
func validateRig(b *testing.B) (*fleet.Client, *nats.Conn, []byte) {
	signer, line := configtest.NewKey(b)
	cfg := configtest.FixtureWithAdmin(b, "vm-full.config.toml", line)
	n, _ := nodetest.Start(b, "d1", func(o *node.Options) { o.Fleet, o.Logger = "f", slog.New(slog.DiscardHandler) })
	nc := nodetest.Connect(b, n)
	c, _ := fleet.New(nc, "f", fleet.WithSigner(signer))
	if sum, err := c.Push(context.Background(), fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}}, Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML}}, nil); err != nil || !sum.OK() {
		b.Fatalf("provisioning: %+v %v", sum, err)
	}
	return c, nc, cfg
}

// BenchmarkSignedValidateRoundTrip is a signed validate of vm-full through a device's
// embedded server: sign, send, verify, replay record, validate + render, reply.
func BenchmarkSignedValidateRoundTrip(b *testing.B) {
	c, _, cfg := validateRig(b)
	subj := subjects.Subject{Fleet: "f", Kind: subjects.Device, Name: "d1", Op: "validate"}.String()
	b.ReportAllocs()
	for b.Loop() {
		env := c.NewEnvelope("validate", "d1", "", fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML})
		env.Payload = cfg
		r, err := c.Send(context.Background(), subj, env, 10*time.Second)
		if err != nil || !r.Accepted {
			b.Fatalf("%+v %v", r, err)
		}
	}
}

// BenchmarkRawRequestReply sends the same payload as a plain NATS request to an echo
// responder on the same server: the transport floor the signed round trip compares with.
func BenchmarkRawRequestReply(b *testing.B) {
	_, nc, cfg := validateRig(b)
	sub, _ := nc.Subscribe("bench.echo", func(m *nats.Msg) { m.Respond([]byte(`{"accepted":true}`)) })
	defer sub.Unsubscribe()
	nc.Flush()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := nc.Request("bench.echo", cfg, 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignedCurrentRoundTrip is a signed `current` of a provisioned device as the
// publisher sends it: sign, bind to the inbox, send, verify (no replay record for a
// read-only request bound to its inbox), read the active config and its drift, sign the
// reply, check the device's signature against its enrolled key.
func BenchmarkSignedCurrentRoundTrip(b *testing.B) {
	c, nc, _ := validateRig(b)
	known, _ := fleet.LoadKnownDevices(filepath.Join(b.TempDir(), "known_devices"))
	verified, _ := fleet.New(nc, "f", fleet.WithSigner(c.Signer()), fleet.WithKnownDevices(known, true, nil))
	subj := subjects.Subject{Fleet: "f", Kind: subjects.Device, Name: "d1", Op: "current"}.String()
	b.ReportAllocs()
	for b.Loop() {
		r, err := verified.Send(context.Background(), subj, verified.NewEnvelope("current", "d1", "", fleet.Payload{}), 10*time.Second)
		if err != nil || !r.Accepted {
			b.Fatalf("%+v %v", r, err)
		}
	}
}

// BenchmarkRawCurrentSizedRequestReply is the floor for the signed current: a plain NATS
// request answered by an echo responder with a reply of the same size.
func BenchmarkRawCurrentSizedRequestReply(b *testing.B) {
	c, nc, _ := validateRig(b)
	subj := subjects.Subject{Fleet: "f", Kind: subjects.Device, Name: "d1", Op: "current"}.String()
	env := c.NewEnvelope("current", "d1", "", fleet.Payload{})
	inbox := nc.NewRespInbox()
	env.ReplyTo = inbox[:strings.LastIndexByte(inbox, '.')+1]
	raw, _ := env.Encode()
	sig, _ := envelope.Sign(raw, c.Signer())
	msg := nats.NewMsg(subj)
	msg.Data = raw
	msg.Header.Set(envelope.SignatureHeader, sig)
	real, err := nc.RequestMsg(msg, 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	sub, _ := nc.Subscribe("bench.echo", func(m *nats.Msg) { m.Respond(real.Data) })
	defer sub.Unsubscribe()
	nc.Flush()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := nc.Request("bench.echo", raw, 10*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}
