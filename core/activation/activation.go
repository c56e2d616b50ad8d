// Package activation decides whether a promoted state is healthy: it runs the activation
// hook, restarts the units the policy names, settles, reads every unit's state, applies
// the degraded rule and waits for the required units, all within one deadline, reporting
// what it waits for. A required unit that has failed for good, or is crash-looping, ends
// the wait at once with its result and last journal lines. It talks to the OS only
// through core/system.
//
// It must not import messaging/, net/http or NATS packages.
package activation

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/system"
)

var (
	// ErrHealthTimeout is returned when required units are not all active by the deadline.
	ErrHealthTimeout = errors.New("activation health checks timed out")
	// ErrUnitFailed is returned as soon as a required unit is failed with no automatic
	// restart pending: waiting longer cannot help.
	ErrUnitFailed = errors.New("required unit failed")
	// ErrCrashLoop is returned as soon as a required unit has restarted
	// CrashLoopRestarts times during the activation.
	ErrCrashLoop = errors.New("required unit is crash-looping")
	// ErrDegraded is returned when allow_degraded was given and a unit that is neither
	// required nor allowed has failed.
	ErrDegraded = errors.New("unit failed outside allow_degraded")
	// ErrSettleDeadline is returned when settling would pass the deadline.
	ErrSettleDeadline = errors.New("settle_seconds would pass the activation deadline")
)

// Spec is what to activate.
type Spec struct {
	Policy config.Activation
	Units  []config.Unit // the runtime units (quadlet-runtime.json)
	// Hook is the activation hook's path; empty for none.
	Hook    string
	HookEnv []string
	// AppUser is the account whose manager runs rootless units.
	AppUser system.Account
	// ContainerNames maps a container to the name Podman runs it under (exec checks).
	ContainerNames map[string]string
}

// Options tune an activation.
type Options struct {
	Backend system.Backend
	// PollInterval between required-health checks (default 500ms).
	PollInterval time.Duration
	// Now defaults to the real clock (tests run under testing/synctest instead).
	Now func() time.Time
}

// Activate runs the activation sequence of pipeline.md section 5. It returns nil when the
// state is healthy; otherwise one of this package's sentinels, a *system.HookError, or the
// error of a restart.
func Activate(ctx context.Context, spec Spec, opts Options, emit func(record.Event)) error {
	if opts.PollInterval <= 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if emit == nil {
		emit = func(record.Event) {}
	}
	timeout := time.Duration(spec.Policy.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Duration(config.DefaultTimeoutSeconds) * time.Second
	}
	deadline := opts.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	units := map[string]config.Unit{}
	for _, u := range spec.Units {
		if u.Kind == "container" || u.Kind == "" {
			units[u.Name] = u
		}
	}
	manager := func(u config.Unit) system.Units {
		if u.Mode == config.ModeRootless {
			return opts.Backend.User(spec.AppUser)
		}
		return opts.Backend.System
	}

	if spec.Hook != "" {
		if err := opts.Backend.Hooks.Run(ctx, spec.Hook, spec.HookEnv); err != nil {
			return fmt.Errorf("running activation hook: %w", timedOut(ctx, err))
		}
	}
	for _, name := range spec.Policy.Restart {
		u, ok := units[name]
		if !ok {
			continue
		}
		err := manager(u).Restart(ctx, u.Service)
		ev := record.Event{Step: "service-restart", Service: u.Service, Mode: u.Mode, Status: "restarted"}
		if err != nil {
			ev.Status, ev.Message = "failed", err.Error()
		}
		emit(ev)
		if err != nil {
			return fmt.Errorf("restarting %s: %w", u.Service, timedOut(ctx, err))
		}
	}
	if s := spec.Policy.SettleSeconds; s > 0 {
		d := time.Duration(s) * time.Second
		if opts.Now().Add(d).After(deadline) {
			return ErrSettleDeadline
		}
		emit(record.Event{Step: "settle", Message: fmt.Sprintf("waiting %ds", s)})
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return timedOut(ctx, ctx.Err())
		}
	}
	failed := map[string]bool{}
	for _, u := range spec.Units {
		st, err := manager(u).State(ctx, u.Service)
		ev := record.Event{Step: "service-status", Service: u.Service, Mode: u.Mode, Status: st.Status()}
		if err != nil {
			ev.Status, ev.Message = "unknown", err.Error()
		}
		emit(ev)
		if st.Failed() {
			failed[u.Name] = true
		}
	}
	if spec.Policy.AllowDegradedSet {
		ok := map[string]bool{}
		for _, n := range append(append([]string{}, spec.Policy.Required...), spec.Policy.AllowDegraded...) {
			ok[n] = true
		}
		var bad []string
		for n := range failed {
			if !ok[n] {
				bad = append(bad, n)
			}
		}
		if len(bad) > 0 {
			sort.Strings(bad)
			return fmt.Errorf("%w: %s", ErrDegraded, strings.Join(bad, ", "))
		}
	}
	return waitRequired(ctx, spec, units, manager, opts, emit)
}

// CrashLoopRestarts is how many automatic restarts of a required unit during its
// activation make it a crash loop: activation fails at once instead of waiting for the
// deadline (a crash-looping service is briefly active between its crashes).
const CrashLoopRestarts = 3

// logLines bounds the journal lines a failure report carries, and logLineLen each line.
const (
	logLines   = 10
	logLineLen = 300
)

func waitRequired(ctx context.Context, spec Spec, units map[string]config.Unit, manager func(config.Unit) system.Units, opts Options, emit func(record.Event)) error {
	waiting := map[string]string{} // what was last said about each unit being waited for
	checks := newCheckRuns(spec, opts)
	for {
		// After the deadline, one last look with a short detached context, so the verdict
		// names the units that are really down, not every unit the expired context failed.
		qctx := ctx
		if ctx.Err() != nil {
			var cancel context.CancelFunc
			qctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
		}
		var down []string
		states := map[string]system.UnitState{}
		for _, name := range spec.Policy.Required {
			u := units[name]
			st, err := manager(u).State(qctx, u.Service)
			states[name] = st
			if err == nil {
				switch {
				case st.Failed():
					return failFast(ctx, spec, opts, u, st, ErrUnitFailed, "failed", emit)
				case st.NRestarts >= CrashLoopRestarts:
					return failFast(ctx, spec, opts, u, st, ErrCrashLoop, "crash-looping", emit)
				}
			}
			if err != nil || !st.Active() {
				down = append(down, u.Service)
				if now := describe(st, err); waiting[name] != now {
					waiting[name] = now
					emit(record.Event{Step: "health-wait", Service: u.Service, Mode: u.Mode, Status: st.ActiveState, Message: now})
				}
				continue
			}
			// Active: its typed check, if any, must pass too.
			if ok, err := checks.run(qctx, name, u, emit); err != nil {
				return err
			} else if !ok {
				down = append(down, u.Service)
			}
		}
		if len(down) == 0 || ctx.Err() != nil {
			for _, name := range spec.Policy.Required {
				u := units[name]
				status := "healthy"
				if !states[name].Active() || !checks.passed(name) {
					status = "unhealthy"
				}
				emit(record.Event{Step: "health-check", Service: u.Service, Mode: u.Mode, Status: status})
			}
			if len(down) == 0 {
				return nil
			}
			return fmt.Errorf("%w: not active: %s", ErrHealthTimeout, strings.Join(down, ", "))
		}
		select {
		case <-ctx.Done():
		case <-time.After(opts.PollInterval):
		}
	}
}

// describe says what a unit being waited for is doing, for progress events.
func describe(st system.UnitState, err error) string {
	if err != nil {
		return "waiting: state unknown: " + err.Error()
	}
	msg := "waiting: " + st.ActiveState
	if st.SubState != "" {
		msg += " (" + st.SubState + ")"
	}
	if st.NRestarts > 0 {
		msg += fmt.Sprintf(", %d automatic restart(s) of %d allowed", st.NRestarts, CrashLoopRestarts-1)
	}
	return msg
}

// failFast ends an activation on a required unit that will not come up: the event and
// the error name the unit, its result and restarts, and its last journal lines.
func failFast(ctx context.Context, spec Spec, opts Options, u config.Unit, st system.UnitState, cause error, what string, emit func(record.Event)) error {
	var lines []string
	if opts.Backend.Logs != nil {
		var acc *system.Account
		if u.Mode == config.ModeRootless {
			a := spec.AppUser
			acc = &a
		}
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		lines, _ = opts.Backend.Logs.Tail(lctx, acc, u.Service, logLines)
		cancel()
		for i, l := range lines {
			if len(l) > logLineLen {
				lines[i] = l[:logLineLen] + "..."
			}
		}
	}
	msg := fmt.Sprintf("%s %s (result %s, %d automatic restart(s))", u.Service, what, orNone(st.Result), st.NRestarts)
	detail := msg
	if len(lines) > 0 {
		detail += "; last log lines:\n  " + strings.Join(lines, "\n  ")
	}
	emit(record.Event{Step: "health-check", Service: u.Service, Mode: u.Mode, Status: "failed", Message: detail})
	return fmt.Errorf("%w: %s", cause, detail)
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// timedOut turns a deadline error into ErrHealthTimeout, keeping the cause.
func timedOut(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrHealthTimeout, err)
	}
	return err
}

// ErrCheckFailed is returned as soon as a required unit's typed health check has failed
// more than its retries after its start period.
var ErrCheckFailed = errors.New("health check failed")

// checkRuns tracks the typed checks of one activation.
type checkRuns struct {
	spec  Spec
	opts  Options
	start time.Time
	state map[string]*checkRun
}

type checkRun struct {
	ok       bool
	failures int
	next     time.Time
}

func newCheckRuns(spec Spec, opts Options) *checkRuns {
	return &checkRuns{spec: spec, opts: opts, start: opts.Now(), state: map[string]*checkRun{}}
}

// passed reports whether name has no check or its check has passed.
func (c *checkRuns) passed(name string) bool {
	if _, ok := c.spec.Policy.Health[name]; !ok {
		return true
	}
	r := c.state[name]
	return r != nil && r.ok
}

// run tries name's check when it is due; it reports whether the check has passed, and an
// error once it has failed for good. A unit without a check passes.
func (c *checkRuns) run(ctx context.Context, name string, u config.Unit, emit func(record.Event)) (bool, error) {
	h, ok := c.spec.Policy.Health[name]
	if !ok {
		return true, nil
	}
	r := c.state[name]
	if r == nil {
		r = &checkRun{}
		c.state[name] = r
	}
	now := c.opts.Now()
	if r.ok || now.Before(r.next) {
		return r.ok, nil
	}
	r.next = now.Add(time.Duration(h.IntervalSeconds) * time.Second)
	pctx, cancel := context.WithTimeout(ctx, time.Duration(h.TimeoutSeconds)*time.Second)
	result, err := c.probe(pctx, name, u, h)
	cancel()
	where := fmt.Sprintf("%s: %s %s → %s", u.Service, h.Kind(), h.Target(), result)
	if err == nil {
		r.ok = true
		emit(record.Event{Step: "health-check", Service: u.Service, Mode: u.Mode, Status: "passed", Message: where})
		return true, nil
	}
	inStart := now.Before(c.start.Add(time.Duration(h.StartPeriodSeconds) * time.Second))
	if !inStart {
		r.failures++
	}
	if r.failures > h.Retries {
		msg := fmt.Sprintf("%s, failed %d times after its start period", where, r.failures)
		emit(record.Event{Step: "health-check", Service: u.Service, Mode: u.Mode, Status: "failed", Message: msg})
		return false, fmt.Errorf("%w: %s", ErrCheckFailed, msg)
	}
	progress := fmt.Sprintf("%s, retry %d/%d", where, r.failures, h.Retries)
	if inStart {
		progress = where + ", in its start period"
	}
	emit(record.Event{Step: "health-wait", Service: u.Service, Mode: u.Mode, Status: "checking", Message: progress})
	return false, nil
}

// probe runs one try of a check; the string says what it saw.
func (c *checkRuns) probe(ctx context.Context, name string, u config.Unit, h config.HealthCheck) (string, error) {
	p := c.opts.Backend.Probes
	if p == nil {
		return "no probes on this backend", errors.New("no probes")
	}
	switch h.Kind() {
	case "http":
		status, body, err := p.HTTP(ctx, h.HTTP)
		switch {
		case err != nil:
			return "error: " + err.Error(), err
		case status != h.Status:
			return fmt.Sprintf("%d (want %d)", status, h.Status), errors.New("status")
		case h.BodyContains != "" && !strings.Contains(string(body), h.BodyContains):
			return fmt.Sprintf("%d without %q in the body", status, h.BodyContains), errors.New("body")
		}
		return strconv.Itoa(status), nil
	case "tcp":
		if err := p.TCP(ctx, h.TCP); err != nil {
			return "error: " + err.Error(), err
		}
		return "connected", nil
	}
	var acc *system.Account
	container := ""
	if h.ExecIn != config.HealthExecOnHost {
		// An empty container would mean "on the host": a check meant for the container
		// must never run there for want of its name.
		if container = c.spec.ContainerNames[name]; container == "" {
			err := fmt.Errorf("no container name known for %s", name)
			return "error: " + err.Error(), err
		}
		if u.Mode == config.ModeRootless {
			a := c.spec.AppUser
			acc = &a
		}
	}
	code, out, err := p.Exec(ctx, acc, container, h.Exec)
	switch {
	case err != nil:
		return "error: " + err.Error(), err
	case code != 0:
		if out = strings.TrimSpace(out); len(out) > logLineLen {
			out = out[:logLineLen] + "..."
		}
		return fmt.Sprintf("exit %d: %s", code, out), errors.New("exit")
	}
	return "exit 0", nil
}
