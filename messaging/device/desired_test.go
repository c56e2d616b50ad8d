package device

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// desiredRig is a provisioned device d1 of fleet f in group edge, its admin key, and
// helpers making desired-state candidates as a publisher writes them.
type desiredRig struct {
	svc   *Service
	jobs  *jobs.Manager
	admin ssh.Signer
	cfg   []byte
	opts  Options // what svc was built with (a restart builds another)
}

func newDesiredRig(t *testing.T) *desiredRig {
	admin, line := configtest.NewKey(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	dev := provisiontest.New(t)
	dev.Provision(t, cfg)
	jm, err := jobs.New(jobs.Options{Dir: filepath.Join(dev.StateDir, "jobs")})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Fleet: "f", Device: "d1", Groups: []string{"edge"}, Prov: dev.Prov, Jobs: jm,
		Trust: &auth.Trust{State: dev.Prov.State()}, MarkFile: filepath.Join(dev.StateDir, "mark.json"),
		Logger: slog.New(slog.DiscardHandler)}
	svc := New(o)
	t.Cleanup(svc.Close)
	return &desiredRig{svc: svc, jobs: jm, admin: admin, cfg: cfg, opts: o}
}

// cand is a durable apply of the rig's config for target under key, issued at issued,
// signed by signer; mutate changes the envelope before it is signed.
func (r *desiredRig) cand(t *testing.T, key string, issued time.Time, signer ssh.Signer, mutate ...func(*envelope.Envelope)) Candidate {
	t.Helper()
	e := &envelope.Envelope{V: 1, ID: jobs.NewID(), Op: "apply", Fleet: "f", Target: envelope.TargetDevice, Device: "d1",
		IssuedAt: issued, ExpiresAt: issued.Add(time.Minute), PayloadSHA256: envelope.Digest(r.cfg), ContentType: envelope.TypeTOML,
		Payload: r.cfg, Durable: true}
	for _, m := range mutate {
		m(e)
	}
	raw, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := envelope.Sign(raw, signer)
	if err != nil {
		t.Fatal(err)
	}
	return Candidate{Key: key, Raw: raw, Sig: sig}
}

func id(t *testing.T, c Candidate) string {
	e, err := envelope.Decode(c.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return e.ID
}

// TestTakeDesiredRefuses: what a device reads from the hub is refused unless it is a
// durable apply for this device, under the key its target names, of this fleet, not
// issued in the future and signed by a key the device trusts; refused or not, nothing
// runs.
func TestTakeDesiredRefuses(t *testing.T) {
	r := newDesiredRig(t)
	stranger, _ := configtest.NewKey(t)
	now := time.Now().UTC()
	dev := subjects.DeviceKey("d1")
	tests := map[string]Candidate{
		"another device's envelope under this device's key": r.cand(t, dev, now, r.admin, func(e *envelope.Envelope) { e.Device = "d2" }),
		"this device's envelope under another key":          r.cand(t, subjects.GroupKey("edge"), now, r.admin),
		"a group it is not in":                              r.cand(t, subjects.GroupKey("core"), now, r.admin, func(e *envelope.Envelope) { e.Target, e.Device, e.Group = envelope.TargetGroup, "", "core" }),
		"another fleet":                                     r.cand(t, dev, now, r.admin, func(e *envelope.Envelope) { e.Fleet = "g" }),
		"issued an hour ahead":                              r.cand(t, dev, now.Add(time.Hour), r.admin),
		"a one-shot envelope":                               r.cand(t, dev, now, r.admin, func(e *envelope.Envelope) { e.Durable = false }),
		"a durable validate (it would run as an apply)":     r.cand(t, dev, now, r.admin, func(e *envelope.Envelope) { e.Op = "validate" }),
		"signed by an unknown key":                          r.cand(t, dev, now, stranger),
		"a signature over other bytes": func() Candidate {
			c := r.cand(t, dev, now, r.admin)
			c.Sig = r.cand(t, dev, now, r.admin).Sig
			return c
		}(),
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			out := r.svc.TakeDesired(context.Background(), []Candidate{c})
			if out.Action != DesiredNone || out.Refused[c.Key] == nil {
				t.Errorf("outcome = %+v; want it refused", out)
			}
			if len(r.jobs.List()) != 0 {
				t.Errorf("a job ran: %+v", r.jobs.List())
			}
		})
	}
}

// TestTakeDesiredOrder: the newest valid candidate is taken once; an older one, or the
// same one read again, is not; a newer one that does not verify does not hide an older
// valid one; a job whose record exists without a mark (a crash between them) is not run
// twice.
func TestTakeDesiredOrder(t *testing.T) {
	r := newDesiredRig(t)
	stranger, _ := configtest.NewKey(t)
	ctx := context.Background()
	now := time.Now().UTC()
	grp := r.cand(t, subjects.GroupKey("edge"), now.Add(-time.Minute), r.admin,
		func(e *envelope.Envelope) { e.Target, e.Device, e.Group = envelope.TargetGroup, "", "edge" })
	forged := r.cand(t, subjects.DeviceKey("d1"), now, stranger)
	out := r.svc.TakeDesired(ctx, []Candidate{forged, grp})
	if out.Action != DesiredStarted || out.Newest.ID != id(t, grp) || out.Refused[forged.Key] == nil {
		t.Fatalf("a forged newer key beside a valid group key: %+v", out)
	}
	if _, err := r.jobs.Wait(ctx, id(t, grp)); err != nil {
		t.Fatal(err)
	}
	if m := r.svc.AppliedMark(); m.ID != id(t, grp) {
		t.Errorf("mark = %+v", m)
	}
	if out := r.svc.TakeDesired(ctx, []Candidate{grp}); out.Action != DesiredCurrent {
		t.Errorf("the applied state read again: %s", out.Action)
	}
	older := r.cand(t, subjects.DeviceKey("d1"), now.Add(-time.Hour), r.admin)
	if out := r.svc.TakeDesired(ctx, []Candidate{older}); out.Action != DesiredOlder {
		t.Errorf("an older state: %s", out.Action)
	}
	// The mark outlives the process: a restarted service still refuses the older state.
	restarted := New(r.opts)
	defer restarted.Close()
	if m := restarted.AppliedMark(); m.ID != id(t, grp) {
		t.Errorf("the mark after a restart = %+v", m)
	}
	if out := restarted.TakeDesired(ctx, []Candidate{older}); out.Action != DesiredOlder {
		t.Errorf("an older state after a restart: %s", out.Action)
	}
	// The worker recorded the job of a newer state and stopped before the mark.
	newer := r.cand(t, subjects.DeviceKey("d1"), now, r.admin)
	if _, err := r.jobs.Submit(jobs.Spec{ID: id(t, newer), Op: "apply", Mutating: true,
		Run: func(context.Context, *jobs.Run) (*record.Result, error) { return &record.Result{}, nil }}); err != nil {
		t.Fatal(err)
	}
	r.jobs.Wait(ctx, id(t, newer))
	n := len(r.jobs.List())
	if out := r.svc.TakeDesired(ctx, []Candidate{newer}); out.Action != DesiredCurrent || len(r.jobs.List()) != n {
		t.Errorf("a state whose job exists: %s, jobs %d -> %d", out.Action, n, len(r.jobs.List()))
	}
	if m := r.svc.AppliedMark(); m.ID != id(t, newer) {
		t.Errorf("the mark was not caught up: %+v", m)
	}
}

// A mark file that does not parse (torn, or written by something else) never blocks the
// device: it starts from no mark and takes its desired state, and the mark is then
// written anew.
func TestUnreadableMarkStartsWithoutOne(t *testing.T) {
	r := newDesiredRig(t)
	if err := os.WriteFile(r.opts.MarkFile, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	svc := New(r.opts)
	defer svc.Close()
	if m := svc.AppliedMark(); m != (Mark{}) {
		t.Fatalf("mark from a torn file = %+v", m)
	}
	ctx := context.Background()
	c := r.cand(t, subjects.DeviceKey("d1"), time.Now().UTC(), r.admin)
	if out := svc.TakeDesired(ctx, []Candidate{c}); out.Action != DesiredStarted {
		t.Fatalf("desired state with a torn mark: %+v", out)
	}
	if _, err := r.jobs.Wait(ctx, id(t, c)); err != nil {
		t.Fatal(err)
	}
	again := New(r.opts)
	defer again.Close()
	if again.AppliedMark().ID != id(t, c) {
		t.Errorf("the mark was not written anew: %+v", again.AppliedMark())
	}
}
