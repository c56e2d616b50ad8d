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
	// Host applies host settings (users, network, firewall, NTP, dnsmasq); nil: the
	// derived files are written into the state and nothing applies them (--host none).
	Host Host
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

// HostUser is a local account as the host's user database has it.
type HostUser struct {
	Name    string
	UID     int
	GID     int
	Home    string
	Shell   string
	Groups  []string // supplementary groups, sorted
	Expired bool     // the account is expired (how fleetprov locks an account)
}

// UserSpec is what fleetprov sets on an account it manages: its login shell, its
// complete list of supplementary groups, and whether it is locked (expired, so no login
// of any kind, keys included).
type UserSpec struct {
	Name   string
	Shell  string
	Groups []string
	Locked bool
}

// String describes the spec for events and transcripts: "shell /bin/sh, groups sudo",
// "shell /bin/sh, no groups, locked".
func (s UserSpec) String() string {
	out := "shell " + s.Shell + ", no groups"
	if len(s.Groups) > 0 {
		out = "shell " + s.Shell + ", groups " + strings.Join(s.Groups, ",")
	}
	if s.Locked {
		out += ", locked"
	}
	return out
}

// Host is what applying host settings needs of the OS besides writing files under the
// host root: the user database and host commands (nft, networkctl, systemctl).
type Host interface {
	// LookupUser reads an account; ok is false when there is none.
	LookupUser(ctx context.Context, name string) (u HostUser, ok bool, err error)
	// GroupExists reports whether a group exists.
	GroupExists(ctx context.Context, name string) (bool, error)
	// AddUser creates an account with a home directory, no password (key logins only)
	// and the spec's shell and groups.
	AddUser(ctx context.Context, s UserSpec) error
	// SetUser sets an existing account's shell, groups and lock.
	SetUser(ctx context.Context, s UserSpec) error
	// Run runs a host command, with stdin when not nil. A failure is a *CommandError.
	Run(ctx context.Context, stdin []byte, argv ...string) error
}

// CommandError reports a host command that ran and failed.
type CommandError struct {
	Argv   []string
	Exit   int
	Output string // the start of its combined output
	Err    error
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s failed", strings.Join(e.Argv, " "))
	if e.Exit > 0 {
		msg += fmt.Sprintf(" with exit code %d", e.Exit)
	} else if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Output != "" {
		msg += ": " + e.Output
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }
