package node_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// stalledBlob serves data on a blob subject the way messaging/blob does, but answers
// nothing until release is called; asked is closed at the first chunk request. It is
// the attacker's slow payload.
func stalledBlob(t *testing.T, nc *nats.Conn, name string, data []byte) (subject string, asked <-chan struct{}, release func()) {
	t.Helper()
	subject = subjects.Subject{Fleet: "test", Kind: subjects.Blob, Name: name}.String()
	gate, first := make(chan struct{}), make(chan struct{})
	var once bool
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if !once {
			once = true
			close(first)
		}
		<-gate
		off, _ := strconv.Atoi(string(m.Data))
		m.Respond(data[off:min(off+64<<10, len(data))])
	})
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	var released bool
	release = func() {
		if !released {
			released = true
			close(gate)
		}
	}
	t.Cleanup(func() { release(); sub.Unsubscribe() })
	return subject, first, release
}

// slowApply sends an apply whose payload is a stalled blob; the reply arrives on the
// returned channel once the blob is released.
func (b *both) slowApply(s ssh.Signer, name string, cfg []byte) (asked <-chan struct{}, release func(), reply <-chan wire.Reply) {
	subject, asked, release := stalledBlob(b.t, b.nc, name, cfg)
	raw, sig := b.env(s, "apply", nil, func(e *envelope.Envelope) {
		e.Payload, e.ContentType, e.PayloadSHA256 = nil, envelope.TypeTOML, envelope.Digest(cfg)
		e.PayloadRef = &wire.PayloadRef{Subject: subject, Size: int64(len(cfg))}
	})
	out := make(chan wire.Reply, 1)
	go func() { out <- b.overNATS("apply", raw, sig) }()
	return asked, release, out
}

// applyNow sends an inline apply and waits for its job to finish.
func (b *both) applyNow(s ssh.Signer, cfg []byte) record.Job {
	b.t.Helper()
	raw, sig := b.env(s, "apply", cfg, nil)
	r := b.overNATS("apply", raw, sig)
	if !r.Accepted {
		b.t.Fatalf("apply refused: %+v", r)
	}
	return b.waitJob(r.JobID)
}

func (b *both) waitJob(id string) record.Job {
	b.t.Helper()
	var j record.Job
	fptest.WaitFor(b.t, 30*time.Second, "job "+id+" to finish", func() bool {
		var err error
		j, err = b.node.Jobs.Get(id)
		return err == nil && j.State.Finished()
	})
	return j
}

// checkRefused passes when the slow request was refused, or its job failed as
// unauthorized; either way the active config must be want.
func (b *both) checkRefused(reply wire.Reply, want []byte) {
	b.t.Helper()
	if reply.Accepted {
		j := b.waitJob(reply.JobID)
		if j.State != record.Failed || j.Code != record.CodeUnauthorized {
			b.t.Errorf("the stale request's job = %s/%s (%s); want failed/unauthorized", j.State, j.Code, j.Error)
		}
	} else if reply.Code != "unauthorized" {
		b.t.Errorf("the stale request = %+v; want unauthorized", reply)
	}
	got, err := os.ReadFile(filepath.Join(b.dev.StateDir, "config", "config.toml"))
	if err != nil || !bytes.Equal(got, want) {
		b.t.Errorf("active config changed by a request its signer was no longer trusted for (err %v)", err)
	}
}

// TestAuthorityCheckedAgainAtJobStart mounts the slow-payload attack: an envelope that
// was valid when it arrived must not be applied after the state that authorized it has
// changed.
func TestAuthorityCheckedAgainAtJobStart(t *testing.T) {
	t.Run("first_boot_takeover", func(t *testing.T) {
		b := startBoth(t, provisiontest.New(t), nil)
		attacker, attLine := configtest.NewKey(t)
		operator, opLine := configtest.NewKey(t)
		attCfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", attLine)
		opCfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", opLine)

		// The attacker's possession-signed apply is valid now: the device is fresh.
		asked, release, reply := b.slowApply(attacker, "takeover", attCfg)
		<-asked
		// Meanwhile the operator provisions the device.
		if j := b.applyNow(operator, opCfg); j.State != record.Succeeded {
			t.Fatalf("operator's apply = %s: %s", j.State, j.Error)
		}
		release()
		b.checkRefused(<-reply, opCfg)
	})
	t.Run("removed_admin", func(t *testing.T) {
		a, aLine := configtest.NewKey(t)
		bKey, bLine := configtest.NewKey(t)
		withB := append(configtest.FixtureWithAdmin(t, "vm-full.config.toml", aLine),
			[]byte("\n[users.bob]\nisAdmin = true\nssh_key = \""+bLine+"\"\n")...)
		withoutB := configtest.FixtureWithAdmin(t, "vm-full.config.toml", aLine)
		dev := provisiontest.New(t)
		if _, err := dev.Prov.Apply(t.Context(), provision.Input{Reader: bytes.NewReader(withB)}, nil); err != nil {
			t.Fatal(err)
		}
		b := startBoth(t, dev, nil)
		bobsCfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", bLine)

		asked, release, reply := b.slowApply(bKey, "bob", bobsCfg)
		<-asked
		// Bob is removed while his payload trickles in.
		if j := b.applyNow(a, withoutB); j.State != record.Succeeded {
			t.Fatalf("removing bob = %s: %s", j.State, j.Error)
		}
		release()
		b.checkRefused(<-reply, withoutB)
	})
}
