package provision_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/state"
)

const wanFirewall = "[network.firewall.inbound.wan]\ntcp = [443]\n"

// confirmConfig is a hostConfig whose activation confirms network changes in mode.
func confirmConfig(key, extra, mode string) []byte {
	cfg := string(hostConfig(key, extra))
	return []byte(strings.Replace(cfg, "timeout_seconds = 5\n", "timeout_seconds = 5\nconfirm = \""+mode+"\"\nconfirm_seconds = 60\n", 1))
}

func firewallFile(d *provisiontest.Device) bool {
	_, err := os.Stat(filepath.Join(d.HostRoot, "etc/fleetprov/firewall.nft"))
	return err == nil
}

// A network change the hub never confirms is rolled back when the window closes: the
// firewall it loaded is deleted, the previous config is active again.
func TestUnconfirmedNetworkChangeRollsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := provisiontest.NewWithHost(t)
		_, key := configtest.NewKey(t)
		d.Provision(t, hostConfig(key, ""))
		before := provisiontest.Tree(t, d.Prov.State().Active())
		reach, tries := reachBeforeOnly()
		// Inside the window, a confirmation by hand (the Boot UI's) is refused: the hub
		// link confirms this change.
		var byHand error
		var once sync.Once
		d.Prov.SetReach(func(ctx context.Context) error {
			err := reach(ctx)
			if tries.Load() > 1 {
				once.Do(func() { byHand = d.Prov.ConfirmOperator() })
			}
			return err
		})
		start := time.Now()
		res, events, err := apply(t, d, confirmConfig(key, wanFirewall, "auto"))
		if !errors.Is(err, provision.ErrNotConfirmed) || !strings.Contains(err.Error(), "a round trip through the hub did not come within 60s (last try: hub link down)") {
			t.Fatalf("apply = %v", err)
		}
		if !errors.Is(byHand, provision.ErrNothingToConfirm) || !strings.Contains(byHand.Error(), "not by hand") {
			t.Errorf("ConfirmOperator in an auto window = %v", byHand)
		}
		if waited := time.Since(start); waited < 60*time.Second || waited > 62*time.Second {
			t.Errorf("rolled back after %s; want the 60s window", waited)
		}
		if res.RollbackStatus != record.RollbackCompleted || tries.Load() < 50 {
			t.Errorf("result %+v after %d tries", res, tries.Load())
		}
		if provisiontest.Tree(t, d.Prov.State().Active()) != before || firewallFile(d) {
			t.Errorf("the previous state and host are not back")
		}
		if !strings.Contains(eventLines(events), "confirm | auto | waiting | network changed: waiting up to 1m0s for a round trip through the hub") {
			t.Errorf("events:\n%s", eventLines(events))
		}
		if _, _, ok := d.Prov.AwaitingConfirm(); ok {
			t.Errorf("a confirm record survived")
		}
	})
}

// A change the hub confirms in time is committed; a change with no network part, or on a
// device without a hub, never waits.
func TestConfirmedNetworkChangeCommits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := provisiontest.NewWithHost(t)
		_, key := configtest.NewKey(t)
		d.Provision(t, hostConfig(key, ""))
		var tries atomic.Int32
		d.Prov.SetReach(func(ctx context.Context) error {
			if n := tries.Add(1); n > 1 && n < 5 {
				return errors.New("not yet")
			}
			return nil
		})
		// The hub link is dialled again once per window, after the change: never for the
		// proof before it, never on each failed try.
		var relinks, triesAtRelink atomic.Int32
		d.Prov.SetRelink(func() int { triesAtRelink.Store(tries.Load()); return int(relinks.Add(1)) })
		start := time.Now()
		_, events, err := apply(t, d, confirmConfig(key, wanFirewall, "auto"))
		if err != nil {
			t.Fatalf("apply = %v\n%s", err, eventLines(events))
		}
		if relinks.Load() != 1 || triesAtRelink.Load() != 1 {
			t.Errorf("relinked %d times, after %d tries; want once, after the proof before the change", relinks.Load(), triesAtRelink.Load())
		}
		if time.Since(start) > 10*time.Second || !strings.Contains(eventLines(events), "confirm | confirmed") || !firewallFile(d) {
			t.Errorf("after %s:\n%s", time.Since(start), eventLines(events))
		}
		if _, err := os.Stat(d.Prov.State().Rollback()); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the rollback survived the commit: %v", err)
		}
		// Users only: no network change, no wait.
		_, _, err = apply(t, d, confirmConfig(key, wanFirewall+"[users.dev]\n", "auto"))
		if err != nil || tries.Load() != 5 {
			t.Errorf("a change without a network part: %v, %d tries", err, tries.Load())
		}
		d.Prov.SetReach(func(ctx context.Context) error { return provision.ErrNoHub })
		_, events, err = apply(t, d, confirmConfig(key, "", "auto"))
		if err != nil || !strings.Contains(eventLines(events), "confirm | skipped | network changed; no hub") {
			t.Errorf("no hub: %v\n%s", err, eventLines(events))
		}
		// A hub that gave no round trip before the change cannot prove it: not gated.
		d.Prov.SetReach(func(ctx context.Context) error { return errors.New("timeout") })
		_, events, err = apply(t, d, confirmConfig(key, wanFirewall, "auto"))
		if err != nil || !strings.Contains(eventLines(events), "the hub answered no round trip before the change either (timeout)") {
			t.Errorf("no proof before: %v\n%s", err, eventLines(events))
		}
	})
}

// confirm = "operator" waits for Confirm (the signed confirm op), which nothing else can
// stand in for, and Confirm with nothing waiting says so.
func TestOperatorConfirm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := provisiontest.NewWithHost(t)
		_, key := configtest.NewKey(t)
		d.Provision(t, hostConfig(key, ""))
		d.Prov.SetReach(func(ctx context.Context) error { return nil }) // a hub answering proves nothing here
		if err := d.Prov.Confirm(); !errors.Is(err, provision.ErrNothingToConfirm) {
			t.Errorf("Confirm with nothing waiting = %v", err)
		}
		done := make(chan error)
		go func() { _, _, err := apply(t, d, confirmConfig(key, wanFirewall, "operator")); done <- err }()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if mode, deadline, ok := d.Prov.AwaitingConfirm(); !ok || mode != "operator" || time.Until(deadline) != 30*time.Second {
			t.Fatalf("AwaitingConfirm = %v %v %v", mode, deadline, ok)
		}
		if err := d.Prov.Confirm(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("apply = %v", err)
		}
		if !firewallFile(d) {
			t.Errorf("the confirmed change is gone")
		}
	})
}

// A worker that stops inside the window leaves it open: the next start resumes it (an
// apply meanwhile is refused) and commits on proof, or rolls back when the rest of the
// window passes without one; after a reboot the next start rolls the change back, and a
// first apply is discarded.
func TestConfirmWindowSurvivesRestartNotReboot(t *testing.T) {
	cases := []struct {
		name                   string
		initial, reboot, proof bool
	}{
		{name: "restart, then proof", proof: true},
		{name: "restart, window closes"},
		{name: "reboot", reboot: true},
		{name: "reboot during the first apply", initial: true, reboot: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bootFile := filepath.Join(t.TempDir(), "boot_id")
				os.WriteFile(bootFile, []byte("boot-1\n"), 0o644)
				d := provisiontest.NewWithHost(t, func(o *provision.Options) { o.BootIDFile = bootFile })
				_, key := configtest.NewKey(t)
				if !tc.initial {
					d.Provision(t, hostConfig(key, ""))
				}
				before := provisiontest.Tree(t, d.Prov.State().Active())
				reach, _ := reachBeforeOnly()
				d.Prov.SetReach(reach)
				ctx, stop := context.WithCancel(context.Background())
				done := make(chan error)
				go func() {
					_, err := d.Prov.Apply(ctx, provision.Input{Reader: strings.NewReader(string(confirmConfig(key, wanFirewall, "auto")))}, nil)
					done <- err
				}()
				time.Sleep(20 * time.Second)
				stop() // the worker stops inside the window
				if err := <-done; err == nil {
					t.Fatal("an interrupted apply succeeded")
				}
				if _, _, ok := d.Prov.AwaitingConfirm(); !ok {
					t.Fatal("the confirm window did not outlive the worker")
				}
				if tc.reboot {
					os.WriteFile(bootFile, []byte("boot-2\n"), 0o644)
				}
				// The next start, on the same dirs.
				p2 := provision.New(provision.Options{State: d.Prov.State(), Backend: d.Sim.Backend(), Quadlet: quadletDirs(d),
					HostRoot: d.HostRoot, BootIDFile: bootFile, PollInterval: 20 * time.Millisecond})
				act, err := p2.Recover(context.Background(), nil)
				if err != nil {
					t.Fatal(err)
				}
				switch {
				case tc.initial:
					if act != state.ActionDiscarded || d.Prov.State().HasActive() || firewallFile(d) {
						t.Errorf("after a reboot during the first apply: recovery %q, provisioned %v, firewall file %v; want it discarded",
							act, d.Prov.State().HasActive(), firewallFile(d))
					}
					return
				case tc.reboot:
					if act != state.ActionRestoredRollback || provisiontest.Tree(t, d.Prov.State().Active()) != before || firewallFile(d) {
						t.Errorf("after a reboot: recovery %q, firewall file %v; want the previous state back", act, firewallFile(d))
					}
					return
				}
				if act != provision.ActionAwaitingConfirm {
					t.Fatalf("recovery = %q; want awaiting-confirm", act)
				}
				if _, err := p2.Apply(context.Background(), provision.Input{Reader: strings.NewReader(string(hostConfig(key, "")))}, nil); !errors.Is(err, provision.ErrAwaitingConfirm) {
					t.Errorf("an apply inside the window = %v; want ErrAwaitingConfirm", err)
				}
				// An export inside the window (a request that beat ResumeConfirm to the lock)
				// reads what runs and leaves the rollback for ResumeConfirm.
				var exported bytes.Buffer
				if err := p2.Export(context.Background(), &exported, bundle.FormatTOML); err != nil || exported.Len() == 0 {
					t.Errorf("an export inside the window = %v (%d bytes)", err, exported.Len())
				}
				if _, err := os.Stat(d.Prov.State().Rollback()); err != nil {
					t.Errorf("an export inside the window removed the rollback: %v", err)
				}
				if !tc.proof {
					p2.SetReach(func(ctx context.Context) error { return errors.New("down") })
					if err := p2.ResumeConfirm(context.Background(), nil); !errors.Is(err, provision.ErrNotConfirmed) {
						t.Errorf("ResumeConfirm with no proof = %v", err)
					}
					if provisiontest.Tree(t, d.Prov.State().Active()) != before || firewallFile(d) {
						t.Errorf("the unconfirmed change stayed after its window closed")
					}
					return
				}
				p2.SetReach(func(ctx context.Context) error { return nil })
				if err := p2.ResumeConfirm(context.Background(), nil); err != nil {
					t.Fatal(err)
				}
				if !firewallFile(d) || provisiontest.Tree(t, d.Prov.State().Active()) == before {
					t.Errorf("the confirmed change did not stay")
				}
				if _, err := os.Stat(d.Prov.State().Rollback()); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the rollback survived the commit")
				}
			})
		})
	}
}

// reachBeforeOnly is a hub that answered before the change and never after it; tries
// counts the attempts.
func reachBeforeOnly() (provision.Reach, *atomic.Int32) {
	tries := new(atomic.Int32)
	return func(ctx context.Context) error {
		if tries.Add(1) == 1 {
			return nil
		}
		return errors.New("hub link down")
	}, tries
}

func quadletDirs(d *provisiontest.Device) quadlet.Dirs {
	return quadlet.Dirs{Rootful: d.Rootful, Rootless: d.Rootless}
}

// A confirmation that comes as soon as the window's record exists (a page that saw the
// record, an operator quick on the key) is not lost: the window is open before the record
// is written, so the change commits at once.
func TestConfirmAsSoonAsTheRecordExists(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d *provisiontest.Device
		early := errors.New("not called")
		d = provisiontest.NewWithHost(t, func(o *provision.Options) {
			o.Fault = func(point string) {
				if point == "confirm:pending" {
					early = d.Prov.Confirm()
				}
			}
		})
		_, key := configtest.NewKey(t)
		d.Provision(t, hostConfig(key, ""))
		start := time.Now()
		_, events, err := apply(t, d, confirmConfig(key, wanFirewall, "operator"))
		if early != nil || err != nil || time.Since(start) > time.Second {
			t.Errorf("a confirm right after the record = %v; apply = %v after %s\n%s", early, err, time.Since(start), eventLines(events))
		}
	})
}
