// Package simulate is a recording system backend: it answers like systemd would for units
// it has been told about, keeps a transcript of every call ("system: restart web.service"),
// and fails health for the units a scenario names, so that rollback can be shown anywhere.
// The README demo, docker-compose demo and fleet tests run on it.
package simulate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/fleetprov/fleetprov/core/system"
)

// FailLabel in a rendered Quadlet unit makes the simulated unit fail, so a config can
// carry its own failure scenario: Label=fleetprov.simulate=fail.
const FailLabel = "Label=fleetprov.simulate=fail"

// Options configure the simulation.
type Options struct {
	// AppUID and AppGID are the app account's ids (default 1000).
	AppUID, AppGID int
	// Fail names services (e.g. "web.service") that fail whenever started.
	Fail []string
	// QuadletDirs are read to find units carrying FailLabel (rootful and rootless dirs).
	QuadletDirs []string
	// Home is the app user's simulated home directory.
	Home string
	// CrashLoop names services that, once started, keep restarting automatically:
	// activating (auto-restart), one more restart each time their state is read.
	CrashLoop []string
	// SlowStart maps services to how many state reads they stay activating after a start
	// before they are active.
	SlowStart map[string]int
	// HostRoot is the simulated host's root: shells and homes live there, and host
	// settings write their files there. Empty: no simulated host (Backend().Host is nil).
	HostRoot string
	// HostUsers are the accounts the simulated host has before fleetprov (the image's).
	HostUsers []system.HostUser
	// HostGroups are the groups it has (default: sudo).
	HostGroups []string
	// Probe answers typed health-check probes: kind is http, tcp or exec, target the URL,
	// address or command; code is the HTTP status or the exit code. Nil: every probe
	// passes (HTTP 200 "ok").
	Probe func(kind, target string) (code int, body string, err error)
}

// Sim is the simulated OS. Its zero value is not usable; call New.
type Sim struct {
	mu         sync.Mutex
	opts       Options
	transcript []string
	states     map[string]string // "system/web.service" -> active|failed|inactive|activating
	fail       map[string]bool
	restarts   map[string]int    // crash-looping units' NRestarts
	pending    map[string]int    // slow starters' remaining activating reads
	secrets    map[string][]byte // "system/name" -> value (Podman's secret store)
	secretErr  error             // what the secret store's calls fail with (nil: none)
	users      map[string]system.HostUser
	nextUID    int
	hostFail   map[string]hostFailure // host command prefix -> its scripted failure
}

// New returns a simulated OS.
func New(opts Options) *Sim {
	s := &Sim{opts: opts, states: map[string]string{}, fail: map[string]bool{}, restarts: map[string]int{}, pending: map[string]int{}, secrets: map[string][]byte{}}
	for _, f := range opts.Fail {
		s.fail[f] = true
	}
	s.hostInit()
	return s
}

// Backend returns the system.Backend view of the simulation. Hooks run for real.
func (s *Sim) Backend() system.Backend {
	var host system.Host
	if s.opts.HostRoot != "" {
		host = hostSim{sim: s}
	}
	return system.Backend{
		Host:     host,
		Name:     "simulate",
		System:   &units{sim: s, scope: "system"},
		User:     func(a system.Account) system.Units { return &units{sim: s, scope: "user(" + a.Name + ")"} },
		Accounts: accounts{sim: s},
		Hooks:    system.ExecHooks{},
		Logs:     logs{sim: s},
		Probes:   probes{sim: s},
		Secrets:  secretStore{sim: s},
	}
}

type secretStore struct{ sim *Sim }

func scopeOf(acc *system.Account) string {
	if acc != nil {
		return "user(" + acc.Name + ")"
	}
	return "system"
}

// Put implements system.Secrets; the transcript shows the value's length, never the value.
func (st secretStore) Put(ctx context.Context, acc *system.Account, name string, value []byte) error {
	st.sim.mu.Lock()
	defer st.sim.mu.Unlock()
	st.sim.record("%s: podman secret create --replace %s (%d bytes)", scopeOf(acc), name, len(value))
	if st.sim.secretErr != nil {
		return st.sim.secretErr
	}
	st.sim.secrets[scopeOf(acc)+"/"+name] = append([]byte(nil), value...)
	return ctx.Err()
}

// Remove implements system.Secrets.
func (st secretStore) Remove(ctx context.Context, acc *system.Account, name string) error {
	st.sim.mu.Lock()
	defer st.sim.mu.Unlock()
	st.sim.record("%s: podman secret rm %s", scopeOf(acc), name)
	if st.sim.secretErr != nil {
		return st.sim.secretErr
	}
	delete(st.sim.secrets, scopeOf(acc)+"/"+name)
	return ctx.Err()
}

// SetSecretsFail makes the secret store's calls fail with err from now on (nil: work), as
// an app user who stalls or breaks its own Podman would.
func (s *Sim) SetSecretsFail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secretErr = err
}

// Secret returns a value in the simulated Podman secret store of scope ("system" or
// "user(<name>)").
func (s *Sim) Secret(scope, name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.secrets[scope+"/"+name]
	return v, ok
}

type probes struct{ sim *Sim }

func (p probes) answer(kind, target string) (int, string, error) {
	p.sim.mu.Lock()
	p.sim.record("probe %s %s", kind, target)
	f := p.sim.opts.Probe
	p.sim.mu.Unlock()
	if f == nil {
		if kind == "http" {
			return 200, "ok", nil
		}
		return 0, "", nil
	}
	return f(kind, target)
}

// HTTP implements system.Probes.
func (p probes) HTTP(ctx context.Context, url string) (int, []byte, error) {
	code, body, err := p.answer("http", url)
	return code, []byte(body), errors.Join(err, ctx.Err())
}

// TCP implements system.Probes.
func (p probes) TCP(ctx context.Context, addr string) error {
	_, _, err := p.answer("tcp", addr)
	return errors.Join(err, ctx.Err())
}

// Exec implements system.Probes.
func (p probes) Exec(ctx context.Context, acc *system.Account, container string, argv []string) (int, string, error) {
	where := "host"
	if container != "" {
		where = container
		if acc != nil {
			where = acc.Name + "/" + container
		}
	}
	code, out, err := p.answer("exec", where+": "+strings.Join(argv, " "))
	return code, out, errors.Join(err, ctx.Err())
}

type logs struct{ sim *Sim }

// Tail implements system.Logs with one made-up line per state the unit is in.
func (l logs) Tail(ctx context.Context, acc *system.Account, unit string, n int) ([]string, error) {
	l.sim.mu.Lock()
	defer l.sim.mu.Unlock()
	scope := scopeOf(acc)
	l.sim.record("%s: journal %s", scope, unit)
	lines := []string{unit + ": Starting (simulated)", unit + ": " + l.sim.states[scope+"/"+unit] + " (simulated)"}
	return lines[max(0, len(lines)-n):], ctx.Err()
}

// SetFail changes whether a service fails from now on.
func (s *Sim) SetFail(service string, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[service] = fail
}

// Transcript returns every recorded call, one per line.
func (s *Sim) Transcript() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.transcript, "\n") + "\n"
}

// Reset clears the transcript (states are kept).
func (s *Sim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transcript = nil
}

// Running lists the units that are active, as "scope/name", sorted.
func (s *Sim) Running() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, v := range s.states {
		if v == "active" {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func (s *Sim) record(format string, args ...any) {
	s.transcript = append(s.transcript, fmt.Sprintf(format, args...))
}

// failing reports whether a service should fail: named in the scenario, or its Quadlet
// file carries FailLabel.
func (s *Sim) failing(service string) bool {
	if s.fail[service] {
		return true
	}
	base := strings.TrimSuffix(service, ".service")
	for _, dir := range s.opts.QuadletDirs {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			name := e.Name()
			stem := strings.TrimSuffix(name, filepath.Ext(name))
			if stem != base && stem+"-"+strings.TrimPrefix(filepath.Ext(name), ".") != base {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err == nil && strings.Contains(string(b), FailLabel) {
				return true
			}
		}
	}
	return false
}

type units struct {
	sim   *Sim
	scope string
}

func (u *units) Reload(ctx context.Context) error {
	u.sim.mu.Lock()
	defer u.sim.mu.Unlock()
	u.sim.record("%s: daemon-reload", u.scope)
	return ctx.Err()
}

func (u *units) Restart(ctx context.Context, name string) error {
	u.sim.mu.Lock()
	defer u.sim.mu.Unlock()
	u.sim.record("%s: restart %s", u.scope, name)
	key := u.scope + "/" + name
	delete(u.sim.restarts, key)
	if u.sim.failing(name) {
		u.sim.states[key] = "failed"
		return fmt.Errorf("restarting %s: job failed (simulated)", name)
	}
	if slices.Contains(u.sim.opts.CrashLoop, name) {
		u.sim.states[key] = "activating"
		return ctx.Err()
	}
	if n := u.sim.opts.SlowStart[name]; n > 0 {
		u.sim.states[key], u.sim.pending[key] = "activating", n
		return ctx.Err()
	}
	u.sim.states[key] = "active"
	return ctx.Err()
}

func (u *units) Stop(ctx context.Context, name string) error {
	u.sim.mu.Lock()
	defer u.sim.mu.Unlock()
	u.sim.record("%s: stop %s", u.scope, name)
	u.sim.states[u.scope+"/"+name] = "inactive"
	return ctx.Err()
}

func (u *units) State(ctx context.Context, name string) (system.UnitState, error) {
	u.sim.mu.Lock()
	defer u.sim.mu.Unlock()
	key := u.scope + "/" + name
	st, ok := u.sim.states[key]
	if !ok {
		return system.UnitState{LoadState: "loaded", ActiveState: "inactive", SubState: "dead"}, ctx.Err()
	}
	out := system.UnitState{LoadState: "loaded", ActiveState: st, Result: "success"}
	switch {
	case st == "activating" && slices.Contains(u.sim.opts.CrashLoop, name):
		u.sim.restarts[key]++
		out.SubState, out.Result, out.NRestarts = "auto-restart", "exit-code", u.sim.restarts[key]
	case st == "activating":
		if u.sim.pending[key]--; u.sim.pending[key] <= 0 {
			u.sim.states[key] = "active"
		}
		out.SubState = "start"
	case st == "failed":
		out.SubState, out.Result = "failed", "exit-code"
	default:
		out.SubState = map[string]string{"active": "running", "inactive": "dead"}[st]
	}
	return out, ctx.Err()
}

type accounts struct{ sim *Sim }

func (a accounts) Lookup(ctx context.Context, name string) (system.Account, error) {
	home := a.sim.opts.Home
	if home == "" {
		home = filepath.Join(os.TempDir(), "fleetprov-simulate-home", name)
	}
	uid, gid := a.sim.opts.AppUID, a.sim.opts.AppGID
	if uid == 0 {
		uid, gid = 1000, 1000
	}
	return system.Account{Name: name, UID: uid, GID: gid, Home: home}, ctx.Err()
}

func (a accounts) EnsureUserManager(ctx context.Context, acc system.Account) error {
	a.sim.mu.Lock()
	defer a.sim.mu.Unlock()
	a.sim.record("system: enable-linger %s", acc.Name)
	a.sim.record("system: start user@%d.service", acc.UID)
	return ctx.Err()
}
