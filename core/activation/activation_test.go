package activation

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/system"
	"github.com/fleetprov/fleetprov/core/system/simulate"
)

func units() []config.Unit {
	return []config.Unit{
		{Name: "web", Kind: "container", Service: "web.service", Mode: config.ModeRootful},
		{Name: "app", Kind: "container", Service: "app.service", Mode: config.ModeRootless},
		{Name: "side", Kind: "container", Service: "side.service", Mode: config.ModeRootful},
	}
}

// started returns a sim where every unit has been started (deploy ran).
func started(t *testing.T, o simulate.Options) *simulate.Sim {
	sim := simulate.New(o)
	be := sim.Backend()
	for _, u := range units() {
		mgr := be.System
		if u.Mode == config.ModeRootless {
			mgr = be.User(system.Account{Name: "appsvc"})
		}
		mgr.Restart(context.Background(), u.Service)
	}
	sim.Reset()
	return sim
}

func hook(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "hook")
	os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755)
	return p
}

func TestActivate(t *testing.T) {
	tests := []activateCase{
		{name: "healthy", policy: config.Activation{Required: []string{"web", "app"}, Restart: []string{"side"}, TimeoutSeconds: 5},
			check: func(t *testing.T, err error, events []record.Event, sim *simulate.Sim) {
				if !strings.Contains(sim.Transcript(), "system: restart side.service") {
					t.Errorf("transcript = %s", sim.Transcript())
				}
				var steps []string
				for _, e := range events {
					steps = append(steps, e.Step+":"+e.Service)
				}
				want := "service-restart:side.service service-status:web.service service-status:app.service service-status:side.service health-check:web.service health-check:app.service"
				if strings.Join(steps, " ") != want {
					t.Errorf("events = %v", steps)
				}
			}},
		{name: "required_failed_fails_fast", policy: config.Activation{Required: []string{"app"}, TimeoutSeconds: 120}, fail: []string{"app.service"}, want: ErrUnitFailed,
			check: func(t *testing.T, err error, events []record.Event, sim *simulate.Sim) {
				for _, want := range []string{"app.service failed", "result exit-code", "app.service: failed (simulated)"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error = %v; want it to say %q", err, want)
					}
				}
				last := events[len(events)-1]
				if last.Step != "health-check" || last.Service != "app.service" || last.Status != "failed" || !strings.Contains(last.Message, "last log lines") {
					t.Errorf("last event = %+v; want the failed unit with its log lines", last)
				}
				if !strings.Contains(sim.Transcript(), "user(appsvc): journal app.service") {
					t.Errorf("the rootless unit's journal was not read from the app user's: %s", sim.Transcript())
				}
			}, fast: true},
		{name: "crash_loop_fails_fast", policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 120}, crash: []string{"web.service"}, want: ErrCrashLoop,
			check: func(t *testing.T, err error, events []record.Event, sim *simulate.Sim) {
				if !strings.Contains(err.Error(), "web.service crash-looping (result exit-code, 3 automatic restart(s))") {
					t.Errorf("error = %v", err)
				}
				var said []string
				for _, e := range events {
					if e.Step == "health-wait" && e.Service == "web.service" {
						said = append(said, e.Message)
					}
				}
				if len(said) == 0 || !strings.Contains(said[len(said)-1], "automatic restart(s) of 2 allowed") {
					t.Errorf("progress = %q; want the restarts counted while waiting", said)
				}
			}, fast: true},
		{name: "slow_starter_within_timeout_passes", policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 5}, slow: map[string]int{"web.service": 10},
			check: func(t *testing.T, err error, events []record.Event, sim *simulate.Sim) {
				if err != nil {
					t.Fatalf("Activate() = %v", err)
				}
				var said []string
				for _, e := range events {
					if e.Step == "health-wait" {
						said = append(said, e.Message)
					}
				}
				if len(said) != 1 || said[0] != "waiting: activating (start)" {
					t.Errorf("progress = %q; want one event saying what is awaited", said)
				}
			}},
		{name: "never_active_times_out", policy: config.Activation{Required: []string{"app"}, TimeoutSeconds: 2}, slow: map[string]int{"app.service": 1 << 30}, want: ErrHealthTimeout,
			check: func(t *testing.T, err error, events []record.Event, sim *simulate.Sim) {
				if !strings.Contains(err.Error(), "not active: app.service") || strings.Contains(err.Error(), "web.service") {
					t.Errorf("error = %v; want only app.service named", err)
				}
			}},
		{name: "degraded_allowed", policy: config.Activation{Required: []string{"web"}, AllowDegraded: []string{"side"}, AllowDegradedSet: true, TimeoutSeconds: 5}, fail: []string{"side.service"}},
		{name: "degraded_outside_allow_list", policy: config.Activation{Required: []string{"web"}, AllowDegraded: []string{"app"}, AllowDegradedSet: true, TimeoutSeconds: 5}, fail: []string{"side.service"}, want: ErrDegraded},
		{name: "failed_unit_ignored_without_allow_degraded", policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 5}, fail: []string{"side.service"}},
		{name: "settle_past_deadline", policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 2, SettleSeconds: 3}, want: ErrSettleDeadline},
		{name: "settle_within_deadline", policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 3, SettleSeconds: 1}},
		{name: "restart_fails", policy: config.Activation{Required: []string{"web"}, Restart: []string{"side"}, TimeoutSeconds: 5}, fail: []string{"side.service"},
			check: func(t *testing.T, err error, events []record.Event, sim *simulate.Sim) {
				if err == nil || !strings.Contains(err.Error(), "restarting side.service") {
					t.Errorf("error = %v", err)
				}
			}},
		{name: "hook_ok", policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 5}, hook: "exit 0"},
		{name: "hook_fails_with_code_and_stderr", policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 5}, hook: "echo 'no disk' >&2; exit 3",
			check: func(t *testing.T, err error, events []record.Event, sim *simulate.Sim) {
				var he *system.HookError
				if !errors.As(err, &he) || he.ExitCode != 3 || he.Stderr != "no disk" {
					t.Errorf("error = %v; want a HookError with code 3 and stderr", err)
				}
			}},
		{name: "hook_timeout", policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 1}, hook: "sleep 5", want: ErrHealthTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.hook != "" {
				// Hooks are real processes, outside any fake clock.
				run(t, tc)
				return
			}
			// Everything else runs on synctest's fake clock: timeouts and settles take
			// no real time, and the elapsed time is exact.
			synctest.Test(t, func(t *testing.T) { run(t, tc) })
		})
	}
}

type activateCase struct {
	name   string
	policy config.Activation
	fail   []string
	crash  []string       // crash-looping services
	slow   map[string]int // services activating for that many state reads
	hook   string
	want   error
	check  func(t *testing.T, err error, events []record.Event, sim *simulate.Sim)
	fast   bool // must end at once (no fake time passes)
}

func run(t *testing.T, tc activateCase) {
	sim := started(t, simulate.Options{Fail: tc.fail, CrashLoop: tc.crash, SlowStart: tc.slow})
	spec := Spec{Policy: tc.policy, Units: units(), AppUser: system.Account{Name: "appsvc"}}
	if tc.hook != "" {
		spec.Hook = hook(t, tc.hook)
	}
	var events []record.Event
	start := time.Now()
	err := Activate(context.Background(), spec, Options{Backend: sim.Backend(), PollInterval: 20 * time.Millisecond}, func(e record.Event) { events = append(events, e) })
	if tc.want != nil && !errors.Is(err, tc.want) {
		t.Fatalf("Activate() error = %v; want %v", err, tc.want)
	}
	if tc.want == nil && tc.check == nil && err != nil {
		t.Fatalf("Activate() error = %v", err)
	}
	if tc.check != nil {
		tc.check(t, err, events, sim)
	}
	if tc.hook == "" && time.Since(start) > time.Duration(tc.policy.TimeoutSeconds)*time.Second {
		t.Errorf("took %s of fake time, past the %ds deadline", time.Since(start), tc.policy.TimeoutSeconds)
	}
	if tc.fast && time.Since(start) > time.Second {
		t.Errorf("took %s of fake time; a unit that cannot come up must fail at once", time.Since(start))
	}
}
