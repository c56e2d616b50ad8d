// Package dbus is the real system backend: the system manager over D-Bus with
// github.com/coreos/go-systemd/v22, and the app user's manager through `systemctl --user`
// run with that user's credentials (root cannot authenticate on another user's bus).
package dbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	sd "github.com/coreos/go-systemd/v22/dbus"

	"github.com/fleetprov/fleetprov/core/system"
)

// New returns the real backend. The system bus connection is opened on first use.
func New() system.Backend {
	s := &systemUnits{}
	return system.Backend{
		Name:     "dbus",
		System:   s,
		User:     func(a system.Account) system.Units { return &userUnits{acc: a} },
		Accounts: accounts{sys: s},
		Hooks:    system.ExecHooks{},
		Logs:     journal{},
	}
}

// journal reads unit logs with journalctl (the system journal holds the app user's units
// too, under _SYSTEMD_USER_UNIT and _UID).
type journal struct{}

// Tail implements system.Logs.
func (journal) Tail(ctx context.Context, acc *system.Account, unit string, n int) ([]string, error) {
	args := []string{"--no-pager", "--quiet", "-o", "cat", "-n", strconv.Itoa(n)}
	if acc != nil {
		args = append(args, "_SYSTEMD_USER_UNIT="+unit, "_UID="+strconv.Itoa(acc.UID))
	} else {
		args = append(args, "-u", unit)
	}
	out, err := system.Command(ctx, nil, "journalctl", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("reading the journal of %s: %w", unit, err)
	}
	return strings.Split(strings.TrimRight(string(out), "\n"), "\n"), nil
}

type systemUnits struct {
	mu   sync.Mutex
	conn *sd.Conn
}

func (s *systemUnits) get(ctx context.Context) (*sd.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil && s.conn.Connected() {
		return s.conn, nil
	}
	c, err := sd.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to systemd: %w", err)
	}
	s.conn = c
	return c, nil
}

func (s *systemUnits) Reload(ctx context.Context) error {
	c, err := s.get(ctx)
	if err != nil {
		return err
	}
	if err := c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	return nil
}

func (s *systemUnits) job(ctx context.Context, verb, name string, start func(context.Context, string, string, chan<- string) (int, error)) error {
	ch := make(chan string, 1)
	if _, err := start(ctx, name, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", verb, name, err)
	}
	select {
	case res := <-ch:
		if res != "done" {
			return fmt.Errorf("%s %s: job %s", verb, name, res)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", verb, name, ctx.Err())
	}
}

func (s *systemUnits) Restart(ctx context.Context, name string) error {
	c, err := s.get(ctx)
	if err != nil {
		return err
	}
	return s.job(ctx, "restart", name, c.RestartUnitContext)
}

func (s *systemUnits) start(ctx context.Context, name string) error {
	c, err := s.get(ctx)
	if err != nil {
		return err
	}
	return s.job(ctx, "start", name, c.StartUnitContext)
}

func (s *systemUnits) Stop(ctx context.Context, name string) error {
	c, err := s.get(ctx)
	if err != nil {
		return err
	}
	return s.job(ctx, "stop", name, c.StopUnitContext)
}

func (s *systemUnits) State(ctx context.Context, name string) (system.UnitState, error) {
	c, err := s.get(ctx)
	if err != nil {
		return system.UnitState{}, err
	}
	props, err := c.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return system.UnitState{}, fmt.Errorf("reading state of %s: %w", name, err)
	}
	str := func(k string) string { v, _ := props[k].(string); return v }
	st := system.UnitState{LoadState: str("LoadState"), ActiveState: str("ActiveState"), SubState: str("SubState")}
	if strings.HasSuffix(name, ".service") {
		if sp, err := c.GetUnitTypePropertiesContext(ctx, name, "Service"); err == nil {
			st.Result, _ = sp["Result"].(string)
			if n, ok := sp["NRestarts"].(uint32); ok {
				st.NRestarts = int(n)
			}
		}
	}
	return st, nil
}

// userUnits drives the app user's manager with `systemctl --user`, run as that user.
type userUnits struct{ acc system.Account }

func (u *userUnits) systemctl(ctx context.Context, args ...string) (string, error) {
	// As the app user, in its own process group, killed whole at the deadline and its
	// output given up 2 s later (the app user could hold the pipe open).
	cmd := system.Command(ctx, &u.acc, "systemctl", append([]string{"--user"}, args...)...)
	cmd.Env = append(cmd.Env, "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/"+strconv.Itoa(u.acc.UID)+"/bus")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("systemctl --user %s (as %s): %w: %s", strings.Join(args, " "), u.acc.Name, err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

func (u *userUnits) Reload(ctx context.Context) error {
	_, err := u.systemctl(ctx, "daemon-reload")
	return err
}

func (u *userUnits) Restart(ctx context.Context, name string) error {
	_, err := u.systemctl(ctx, "restart", name)
	return err
}

func (u *userUnits) Stop(ctx context.Context, name string) error {
	_, err := u.systemctl(ctx, "stop", name)
	return err
}

func (u *userUnits) State(ctx context.Context, name string) (system.UnitState, error) {
	out, err := u.systemctl(ctx, "show", "--property=LoadState,ActiveState,SubState,Result,NRestarts", name)
	if err != nil {
		return system.UnitState{}, err
	}
	var st system.UnitState
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "LoadState":
			st.LoadState = v
		case "ActiveState":
			st.ActiveState = v
		case "SubState":
			st.SubState = v
		case "Result":
			st.Result = v
		case "NRestarts":
			st.NRestarts, _ = strconv.Atoi(v)
		}
	}
	return st, nil
}

type accounts struct{ sys *systemUnits }

func (accounts) Lookup(ctx context.Context, name string) (system.Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return system.Account{}, fmt.Errorf("looking up user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return system.Account{Name: name, UID: uid, GID: gid, Home: u.HomeDir}, nil
}

// lingerDir is where logind keeps linger flags.
const lingerDir = "/var/lib/systemd/linger"

func (a accounts) EnsureUserManager(ctx context.Context, acc system.Account) error {
	if err := exec.CommandContext(ctx, "loginctl", "enable-linger", acc.Name).Run(); err != nil {
		// Without a running logind, the flag file is what logind reads at its start.
		if err := os.MkdirAll(lingerDir, 0o755); err != nil {
			return fmt.Errorf("enabling linger for %s: %w", acc.Name, err)
		}
		f, ferr := os.OpenFile(filepath.Join(lingerDir, acc.Name), os.O_CREATE|os.O_WRONLY, 0o644)
		if ferr != nil {
			return fmt.Errorf("enabling linger for %s: %w", acc.Name, errors.Join(err, ferr))
		}
		f.Close()
	}
	// Start, not restart: an already running user manager keeps its units running.
	if err := a.sys.start(ctx, fmt.Sprintf("user@%d.service", acc.UID)); err != nil {
		return fmt.Errorf("starting the user manager of %s: %w", acc.Name, err)
	}
	return nil
}
