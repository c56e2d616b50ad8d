package simulate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fleetprov/fleetprov/core/system"
)

// The simulated host: a user database in memory (seeded with Options.HostUsers), the
// groups of Options.HostGroups, shells and homes as files under Options.HostRoot, and host
// commands that are recorded ("host: nft -f - (412 bytes)") and succeed unless
// SetHostFail names them.

type hostSim struct{ sim *Sim }

// hostInit seeds the simulated host root with what an image has: the login shells (not
// zsh) and the homes of the seeded users.
func (s *Sim) hostInit() {
	s.users = map[string]system.HostUser{}
	s.nextUID = 1001
	if s.opts.HostGroups == nil {
		s.opts.HostGroups = []string{"sudo"}
	}
	if s.opts.HostRoot != "" {
		for _, sh := range []string{"bin/sh", "bin/bash"} {
			p := filepath.Join(s.opts.HostRoot, sh)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if _, err := os.Stat(p); err != nil {
				os.WriteFile(p, []byte("#!simulated shell\n"), 0o755)
			}
		}
	}
	for _, u := range s.opts.HostUsers {
		s.addHostUser(u)
	}
}

// HostUser returns an account of the simulated user database.
func (s *Sim) HostUser(name string) (system.HostUser, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[name]
	return u, ok
}

// SetHostFail makes host commands whose argv starts with prefix (space-separated, e.g.
// "networkctl reload") fail with err from now on; a nil err clears it.
func (s *Sim) SetHostFail(prefix string, err error) { s.setHostFail(prefix, err, false) }

// SetHostFailOnce makes the next host command that starts with prefix fail with err (a
// transient failure: the rollback's run of it succeeds).
func (s *Sim) SetHostFailOnce(prefix string, err error) { s.setHostFail(prefix, err, true) }

func (s *Sim) setHostFail(prefix string, err error, once bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hostFail == nil {
		s.hostFail = map[string]hostFailure{}
	}
	if err == nil {
		delete(s.hostFail, prefix)
		return
	}
	s.hostFail[prefix] = hostFailure{err, once}
}

type hostFailure struct {
	err  error
	once bool
}

func (h hostSim) LookupUser(ctx context.Context, name string) (system.HostUser, bool, error) {
	h.sim.mu.Lock()
	defer h.sim.mu.Unlock()
	u, ok := h.sim.users[name]
	u.Groups = slices.Clone(u.Groups)
	return u, ok, ctx.Err()
}

func (h hostSim) GroupExists(ctx context.Context, name string) (bool, error) {
	return slices.Contains(h.sim.opts.HostGroups, name), ctx.Err()
}

func (h hostSim) AddUser(ctx context.Context, s system.UserSpec) error {
	h.sim.mu.Lock()
	defer h.sim.mu.Unlock()
	h.sim.record("host: useradd %s (%v)", s.Name, s)
	if err := h.sim.hostErr("useradd " + s.Name); err != nil {
		return err
	}
	if _, ok := h.sim.users[s.Name]; ok {
		return &system.CommandError{Argv: []string{"useradd", s.Name}, Exit: 9, Output: fmt.Sprintf("useradd: user '%s' already exists", s.Name)}
	}
	u := system.HostUser{Name: s.Name, UID: h.sim.nextUID, GID: h.sim.nextUID, Home: "/home/" + s.Name, Shell: s.Shell,
		Groups: slices.Clone(s.Groups), Expired: s.Locked}
	h.sim.nextUID++
	h.sim.users[s.Name] = u
	if h.sim.opts.HostRoot != "" {
		if err := os.MkdirAll(filepath.Join(h.sim.opts.HostRoot, u.Home), 0o755); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (h hostSim) SetUser(ctx context.Context, s system.UserSpec) error {
	h.sim.mu.Lock()
	defer h.sim.mu.Unlock()
	h.sim.record("host: usermod %s (%v)", s.Name, s)
	if err := h.sim.hostErr("usermod " + s.Name); err != nil {
		return err
	}
	u, ok := h.sim.users[s.Name]
	if !ok {
		return &system.CommandError{Argv: []string{"usermod", s.Name}, Exit: 6, Output: fmt.Sprintf("usermod: user '%s' does not exist", s.Name)}
	}
	u.Shell, u.Groups, u.Expired = s.Shell, slices.Clone(s.Groups), s.Locked
	h.sim.users[s.Name] = u
	return ctx.Err()
}

func (h hostSim) Run(ctx context.Context, stdin []byte, argv ...string) error {
	h.sim.mu.Lock()
	defer h.sim.mu.Unlock()
	line := strings.Join(argv, " ")
	if stdin != nil {
		line += fmt.Sprintf(" (%d bytes)", len(stdin))
	}
	h.sim.record("host: %s", line)
	if err := h.sim.hostErr(strings.Join(argv, " ")); err != nil {
		return &system.CommandError{Argv: argv, Exit: 1, Output: err.Error(), Err: err}
	}
	return ctx.Err()
}

// hostErr is the failure a host command is scripted to have (the caller holds mu).
func (s *Sim) hostErr(cmd string) error {
	for prefix, f := range s.hostFail {
		if cmd == prefix || strings.HasPrefix(cmd, prefix+" ") {
			if f.once {
				delete(s.hostFail, prefix)
			}
			return f.err
		}
	}
	return nil
}

// AddHostUser gives the simulated host an account fleetprov did not create (the image's),
// with its home under HostRoot.
func (s *Sim) AddHostUser(u system.HostUser) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addHostUser(u)
}

// addHostUser adds the account and its home; s.mu held (or s not shared yet).
func (s *Sim) addHostUser(u system.HostUser) {
	s.users[u.Name] = u
	if s.opts.HostRoot != "" {
		os.MkdirAll(filepath.Join(s.opts.HostRoot, u.Home), 0o755)
	}
}
