package node_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// both is a worker reachable over NATS and over its HTTP bridge.
type both struct {
	t    *testing.T
	node *node.Node
	dev  *provisiontest.Device
	nc   *nats.Conn
	base string
}

func startBoth(t *testing.T, dev *provisiontest.Device, mutate func(*node.Options)) *both {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := nodetest.StartDevice(t, dev, "d1", func(o *node.Options) {
		o.HTTP = l
		if mutate != nil {
			mutate(o)
		}
	})
	nc := nodetest.Connect(t, n)
	return &both{t: t, node: n, dev: dev, nc: nc, base: "http://" + n.HTTPAddr()}
}

// env builds an envelope for d1 signed by s (mutate may change it before signing).
func (b *both) env(s ssh.Signer, op string, payload []byte, mutate func(*envelope.Envelope)) (raw []byte, sig string) {
	b.t.Helper()
	now := time.Now().UTC()
	e := &envelope.Envelope{V: envelope.Version, ID: jobs.NewID(), Op: op, Fleet: "test", Target: envelope.TargetDevice,
		Device: "d1", IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute), PayloadSHA256: envelope.Digest(payload),
		ContentType: envelope.TypeTOML, Payload: payload}
	if len(payload) == 0 {
		e.ContentType = envelope.TypeNone
	}
	if envelope.ReadOnly(op) {
		// Bound to this connection's inbox, as the publisher does (ignored over HTTP).
		inbox := b.nc.NewRespInbox()
		e.ReplyTo = inbox[:strings.LastIndexByte(inbox, '.')+1]
	}
	if mutate != nil {
		mutate(e)
	}
	raw, err := e.Encode()
	if err != nil {
		b.t.Fatal(err)
	}
	sig, err = envelope.Sign(raw, s)
	if err != nil {
		b.t.Fatal(err)
	}
	return raw, sig
}

// overNATS sends on the device's own subject and returns the reply's code.
func (b *both) overNATS(op string, raw []byte, sig string) wire.Reply {
	b.t.Helper()
	msg := nats.NewMsg(subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: op}.String())
	msg.Data = raw
	msg.Header.Set(envelope.SignatureHeader, sig)
	res, err := b.nc.RequestMsg(msg, 10*time.Second)
	if err != nil {
		b.t.Fatalf("NATS request: %v", err)
	}
	var r wire.Reply
	if err := json.Unmarshal(res.Data, &r); err != nil {
		b.t.Fatalf("NATS reply %q: %v", res.Data, err)
	}
	return r
}

// overHTTP posts the same bytes to POST /api/envelopes (publisher --via).
func (b *both) overHTTP(raw []byte, sig string) (wire.Reply, int) {
	b.t.Helper()
	req, _ := http.NewRequest("POST", b.base+"/api/envelopes", bytes.NewReader(raw))
	req.Header.Set(envelope.SignatureHeader, sig)
	req.Header.Set(wire.FirstBootHeader, "1") // as the publisher sends it
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatalf("HTTP request: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var r wire.Reply
	if err := json.Unmarshal(body, &r); err != nil {
		b.t.Fatalf("HTTP body %q: %v", body, err)
	}
	return r, res.StatusCode
}

var httpStatus = map[string]int{"busy": 409, "unauthorized": 401, "forbidden": 403, "expired": 401, "replayed": 401,
	"invalid": 400, "wrong-target": 403, "not-found": 404, "too-large": 413, "internal": 500}

// TestSameCodeOnBothTransports sends the same failing request over NATS and over HTTP
// and asserts the same wire code for every sentinel (and the HTTP status of that code).
func TestSameCodeOnBothTransports(t *testing.T) {
	admin, adminLine := configtest.NewKey(t)
	ops, opsLine := configtest.NewKey(t)
	stranger, _ := configtest.NewKey(t)
	gate := filepath.Join(t.TempDir(), "gate")
	os.WriteFile(gate, nil, 0o600)
	hook := filepath.Join(t.TempDir(), "hook")
	// The activation hook waits while the gate is closed: a job that stays running.
	os.WriteFile(hook, []byte("#!/bin/sh\nwhile [ ! -e "+gate+" ]; do sleep 0.02; done\n"), 0o755)
	cfg := append(configtest.FixtureWithAdmin(t, "vm-full.config.toml", adminLine),
		[]byte("\n[users.ops]\nisAdmin = true\nssh_key = \""+opsLine+"\"\n\n[fleet.signers.ops]\nops = [\"validate\"]\n")...)
	dev := provisiontest.New(t, func(o *provision.Options) { o.Hook = hook })
	dev.Provision(t, cfg)
	limit := int64(64 << 10)
	b := startBoth(t, dev, func(o *node.Options) { o.Limits = bundle.Limits{MaxCompressed: limit} })

	// Unprovisioned, with a fleet trust file: not-found for what needs an active config.
	fleetTrust := filepath.Join(t.TempDir(), "allowed_signers")
	os.WriteFile(fleetTrust, []byte("fleet-op "+adminLine+"\n"), 0o600)
	fresh := startBoth(t, provisiontest.New(t), func(o *node.Options) { o.FleetTrustFile = fleetTrust })
	// Unprovisioned, no fleet trust file: a self-signed key proves possession only, for
	// apply alone.
	open := startBoth(t, provisiontest.New(t), nil)

	type send func() (raw []byte, sig string)
	cases := []struct {
		name string
		want string
		rig  *both
		op   string
		make send
		// before runs once per transport before the request (replayed sends it first).
		before func(op string, raw []byte, sig string, viaHTTP bool)
	}{
		{name: "unauthorized_stranger", want: "unauthorized", rig: b, op: "current",
			make: func() ([]byte, string) { return b.env(stranger, "current", nil, nil) }},
		{name: "unauthorized_bad_signature", want: "unauthorized", rig: b, op: "current",
			make: func() ([]byte, string) {
				raw, _ := b.env(admin, "current", nil, nil)
				return raw, "bm90IGEgc2lnbmF0dXJl"
			}},
		{name: "forbidden_narrowed_signer", want: "forbidden", rig: b, op: "current",
			make: func() ([]byte, string) { return b.env(ops, "current", nil, nil) }},
		{name: "expired", want: "expired", rig: b, op: "current",
			make: func() ([]byte, string) {
				return b.env(admin, "current", nil, func(e *envelope.Envelope) {
					e.IssuedAt, e.ExpiresAt = time.Now().Add(-9*time.Minute), time.Now().Add(-3*time.Minute) // past the 2 min skew
				})
			}},
		// A mutating request is remembered (a read-only one bound to its requester's inbox
		// needs no record: sent again, it answers the same requester).
		{name: "replayed", want: "replayed", rig: b, op: "apply",
			make: func() ([]byte, string) { return b.env(admin, "apply", cfg, nil) },
			before: func(op string, raw []byte, sig string, viaHTTP bool) {
				var r wire.Reply
				if viaHTTP {
					r, _ = b.overHTTP(raw, sig)
				} else {
					r = b.overNATS(op, raw, sig)
				}
				if !r.Accepted {
					t.Fatalf("first send refused: %+v", r)
				}
				fptest.WaitFor(t, 30*time.Second, "the first job to finish", func() bool { return b.node.Jobs.Active() == "" })
			}},
		{name: "invalid_digest", want: "invalid", rig: b, op: "validate",
			make: func() ([]byte, string) {
				return b.env(admin, "validate", []byte("version = 1\n"), func(e *envelope.Envelope) { e.PayloadSHA256 = strings.Repeat("0", 64) })
			}},
		// Durable desired state is read from the hub's store; sent as a request it would
		// skip the replay guard and the anti-rollback check.
		{name: "invalid_durable_as_request", want: "invalid", rig: b, op: "apply",
			make: func() ([]byte, string) {
				return b.env(admin, "apply", cfg, func(e *envelope.Envelope) { e.Durable = true })
			}},
		{name: "invalid_patch", want: "invalid", rig: b, op: "patch",
			make: func() ([]byte, string) {
				return b.env(admin, "patch", []byte(`{"kind":"users","name":"bob","op":"put","value":{"isAdmin":"yes"}}`), nil)
			}},
		{name: "wrong_target", want: "wrong-target", rig: b, op: "current",
			make: func() ([]byte, string) {
				return b.env(admin, "current", nil, func(e *envelope.Envelope) { e.Device = "d2" })
			}},
		{name: "not_found_export_unprovisioned", want: "not-found", rig: fresh, op: "export",
			make: func() ([]byte, string) { return fresh.env(admin, "export", nil, nil) }},
		{name: "not_found_patch_unprovisioned", want: "not-found", rig: fresh, op: "patch",
			make: func() ([]byte, string) {
				return fresh.env(admin, "patch", []byte(`{"kind":"users","name":"bob","op":"delete"}`), nil)
			}},
		{name: "unauthorized_possession_beyond_apply", want: "unauthorized", rig: open, op: "validate",
			make: func() ([]byte, string) { return open.env(stranger, "validate", []byte("version = 1\n"), nil) }},
		{name: "too_large", want: "too-large", rig: b, op: "validate",
			make: func() ([]byte, string) { return b.env(admin, "validate", bytes.Repeat([]byte("#"), int(limit)+1), nil) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw, sig := tc.make()
			if tc.before != nil {
				tc.before(tc.op, raw, sig, false)
			}
			nr := tc.rig.overNATS(tc.op, raw, sig)
			raw, sig = tc.make()
			if tc.before != nil {
				tc.before(tc.op, raw, sig, true)
			}
			hr, status := tc.rig.overHTTP(raw, sig)
			if nr.Accepted || nr.Code != tc.want {
				t.Errorf("NATS reply = %+v; want code %s", nr, tc.want)
			}
			if hr.Code != tc.want || status != httpStatus[tc.want] {
				t.Errorf("HTTP reply = %d %+v; want %d with code %s", status, hr, httpStatus[tc.want], tc.want)
			}
		})
	}

	t.Run("busy", func(t *testing.T) {
		idle := func() bool { return b.node.Jobs.Active() == "" }
		fptest.WaitFor(t, 30*time.Second, "no job running", idle)
		os.Remove(gate)
		defer func() {
			os.WriteFile(gate, nil, 0o600)
			fptest.WaitFor(t, 30*time.Second, "the blocking job to finish", idle)
		}()
		raw, sig := b.env(admin, "apply", cfg, nil)
		first := b.overNATS("apply", raw, sig)
		if !first.Accepted {
			t.Fatalf("blocking apply refused: %+v", first)
		}
		raw, sig = b.env(admin, "apply", cfg, nil)
		nr := b.overNATS("apply", raw, sig)
		raw, sig = b.env(admin, "apply", cfg, nil)
		hr, status := b.overHTTP(raw, sig)
		if nr.Code != "busy" || hr.Code != "busy" || status != 409 {
			t.Errorf("busy: NATS %+v, HTTP %d %+v; want busy on both", nr, status, hr)
		}
	})

	t.Run("internal", func(t *testing.T) {
		// The replay record cannot be written: the device fails closed, says internal,
		// and keeps the cause (a path on the device) to its log.
		replay := filepath.Join(dev.StateDir, "replay")
		os.RemoveAll(replay)
		os.WriteFile(replay, []byte("not a directory"), 0o600)
		defer os.Remove(replay)
		raw, sig := b.env(admin, "apply", cfg, nil)
		nr := b.overNATS("apply", raw, sig)
		raw, sig = b.env(admin, "apply", cfg, nil)
		hr, status := b.overHTTP(raw, sig)
		for name, r := range map[string]wire.Reply{"NATS": nr, "HTTP": hr} {
			if r.Code != "internal" || strings.Contains(r.Error, dev.StateDir) {
				t.Errorf("%s reply = %+v; want internal with no device path in it", name, r)
			}
		}
		if status != 500 {
			t.Errorf("HTTP status = %d; want 500", status)
		}
	})
}
