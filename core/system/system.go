package system

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// UnitState is what a systemd manager says about one unit.
type UnitState struct {
	LoadState   string // loaded, not-found, ...
	ActiveState string // active, activating, failed, inactive, ...
	SubState    string // running, exited, dead, auto-restart, ...
	Result      string // a service's last result: success, exit-code, signal, oom-kill, timeout, ...
	NRestarts   int    // automatic restarts since the service was last started
}

// Failed reports whether the unit failed for good: systemd put it in the failed state,
// which it does only when no automatic restart is pending (a pending one shows as
// activating/auto-restart).
func (s UnitState) Failed() bool { return s.ActiveState == "failed" }

// Status folds a unit state into running / failed / unknown for events.
func (s UnitState) Status() string {
	switch s.ActiveState {
	case "active", "reloading":
		return "running"
	case "failed":
		return "failed"
	}
	return "unknown"
}

// Active reports whether the unit is active.
func (s UnitState) Active() bool { return s.ActiveState == "active" || s.ActiveState == "reloading" }

// Units is one systemd manager (the system's, or the app user's).
type Units interface {
	// Reload is daemon-reload: it re-runs generators, among them Quadlet's.
	Reload(ctx context.Context) error
	// Restart restarts (or starts) a unit and waits for the job to finish.
	Restart(ctx context.Context, name string) error
	// Stop stops a unit and waits for the job to finish.
	Stop(ctx context.Context, name string) error
	// State reads a unit's load/active/sub state.
	State(ctx context.Context, name string) (UnitState, error)
}

// Logs reads a unit's journal.
type Logs interface {
	// Tail returns up to n of the unit's newest log lines (the app user's unit when acc
	// is not nil), oldest first.
	Tail(ctx context.Context, acc *Account, unit string, n int) ([]string, error)
}

// Probes run the probes of typed health checks.
type Probes interface {
	// HTTP GETs url and returns the status and up to 64 KiB of the body.
	HTTP(ctx context.Context, url string) (status int, body []byte, err error)
	// TCP connects to addr and closes the connection.
	TCP(ctx context.Context, addr string) error
	// Exec runs argv in container with podman exec (as the app user's Podman when acc is
	// not nil), or on the host when container is "". It returns the exit code and the
	// start of the output.
	Exec(ctx context.Context, acc *Account, container string, argv []string) (exit int, output string, err error)
}

// Secrets is Podman's secret store: the system's, or the app user's when acc is not nil.
// Values come from memory (never a file on disk).
type Secrets interface {
	// Put creates or replaces a secret (podman secret create --replace NAME -).
	Put(ctx context.Context, acc *Account, name string, value []byte) error
	// Remove deletes a secret; a missing one is not an error.
	Remove(ctx context.Context, acc *Account, name string) error
}

// Account is a local user account.
type Account struct {
	Name string
	UID  int
	GID  int
	Home string
}

// Accounts is the part of account management the pipeline needs.
type Accounts interface {
	// Lookup finds an existing account.
	Lookup(ctx context.Context, name string) (Account, error)
	// EnsureUserManager enables linger for the account and starts user@UID.service, so
	// its rootless units run without anyone logged in.
	EnsureUserManager(ctx context.Context, a Account) error
}

// Hooks runs the activation hook.
type Hooks interface {
	// Run executes path with env added to the environment; a non-zero exit is a *HookError.
	Run(ctx context.Context, path string, env []string) error
}

// Backend is everything of the OS the pipeline touches.
type Backend struct {
	Name     string // "dbus" or "simulate"
	System   Units
	User     func(a Account) Units // the app user's manager
	Accounts Accounts
	Hooks    Hooks
	Logs     Logs    // nil: no logs in failure reports
	Probes   Probes  // nil: typed health checks cannot run (an activation with checks fails)
	Secrets  Secrets // nil: a config that declares secrets cannot be deployed
}

// HookError reports a hook that ran and failed.
type HookError struct {
	Path     string
	ExitCode int
	Stderr   string // the first 200 bytes
	Err      error
}

func (e *HookError) Error() string {
	msg := fmt.Sprintf("activation hook %s failed with exit code %d", e.Path, e.ExitCode)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *HookError) Unwrap() error { return e.Err }

// ExecHooks runs hooks as child processes. It is the Hooks of both backends.
type ExecHooks struct{}

// Run implements Hooks.
func (ExecHooks) Run(ctx context.Context, path string, env []string) error {
	// Its own process group, killed whole at the deadline: a hook's children must not
	// outlive it or hold its output open.
	cmd := Command(ctx, nil, path)
	cmd.Env = append(cmd.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &LimitedWriter{Buf: &stderr, Max: 200}
	err := RunGroup(cmd)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("activation hook %s: %w", path, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return &HookError{Path: path, ExitCode: ee.ExitCode(), Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return fmt.Errorf("running activation hook %s: %w", path, err)
}

// LimitedWriter keeps the first Max bytes written into Buf and drops the rest, without
// failing the writer (a command's output must not block or fail the command).
type LimitedWriter struct {
	Buf *bytes.Buffer
	Max int
}

func (l *LimitedWriter) Write(p []byte) (int, error) {
	if room := l.Max - l.Buf.Len(); room > 0 {
		l.Buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
