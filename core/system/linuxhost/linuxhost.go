// Package linuxhost is the real system.Host: the user database through getent, useradd and
// usermod (shadow-utils), and host commands (nft, networkctl, systemctl) as child
// processes. It is the host backend of --host systemd.
package linuxhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/core/system"
)

// Host implements system.Host on a Linux host.
type Host struct{}

// Comment marks the accounts fleetprov creates (GECOS), for an operator reading passwd;
// the record in the state dir, not this, is what fleetprov trusts.
const Comment = "fleetprov managed account"

// LookupUser implements system.Host: the passwd entry (getent), the supplementary groups
// from the group database (os/user, no process), the expiry from the shadow entry.
func (Host) LookupUser(ctx context.Context, name string) (system.HostUser, bool, error) {
	out, err := output(ctx, "getent", "passwd", name)
	if isExit(err, 2) {
		return system.HostUser{}, false, nil
	}
	if err != nil {
		return system.HostUser{}, false, err
	}
	f := strings.Split(strings.TrimSpace(out), ":")
	if len(f) != 7 {
		return system.HostUser{}, false, fmt.Errorf("getent passwd %s: unexpected entry %q", name, out)
	}
	u := system.HostUser{Name: f[0], Home: f[5], Shell: f[6]}
	if u.UID, err = strconv.Atoi(f[2]); err != nil {
		return u, false, fmt.Errorf("getent passwd %s: uid %q", name, f[2])
	}
	if u.GID, err = strconv.Atoi(f[3]); err != nil {
		return u, false, fmt.Errorf("getent passwd %s: gid %q", name, f[3])
	}
	gids, err := (&user.User{Username: name, Gid: f[3]}).GroupIds()
	if err != nil {
		return u, false, fmt.Errorf("groups of account %s: %w", name, err)
	}
	for _, gid := range gids {
		if gid == f[3] {
			continue
		}
		g, err := user.LookupGroupId(gid)
		if err != nil {
			return u, false, fmt.Errorf("groups of account %s: %w", name, err)
		}
		u.Groups = append(u.Groups, g.Name)
	}
	slices.Sort(u.Groups)
	if sh, err := output(ctx, "getent", "shadow", name); err == nil {
		if f := strings.Split(strings.TrimSpace(sh), ":"); len(f) >= 8 && f[7] != "" {
			days, err := strconv.Atoi(f[7])
			u.Expired = err == nil && int64(days) <= time.Now().Unix()/86400
		}
	}
	return u, true, nil
}

// GroupExists implements system.Host.
func (Host) GroupExists(ctx context.Context, name string) (bool, error) {
	_, err := output(ctx, "getent", "group", name)
	if isExit(err, 2) {
		return false, nil
	}
	return err == nil, err
}

// AddUser implements system.Host: a home directory, a password that matches nothing (key
// logins only), the spec's shell and groups.
func (Host) AddUser(ctx context.Context, s system.UserSpec) error {
	argv := []string{"useradd", "--create-home", "--shell", s.Shell, "--comment", Comment, "--password", "*"}
	if len(s.Groups) > 0 {
		argv = append(argv, "--groups", strings.Join(s.Groups, ","))
	}
	if s.Locked {
		argv = append(argv, "--expiredate", "1")
	}
	_, err := output(ctx, append(argv, "--", s.Name)...)
	return err
}

// SetUser implements system.Host. A lock expires the account, which stops every login,
// SSH keys included; unlocking clears the expiry.
func (Host) SetUser(ctx context.Context, s system.UserSpec) error {
	expire := ""
	if s.Locked {
		expire = "1"
	}
	_, err := output(ctx, "usermod", "--shell", s.Shell, "--groups", strings.Join(s.Groups, ","), "--expiredate", expire, "--", s.Name)
	return err
}

// Run implements system.Host.
func (Host) Run(ctx context.Context, stdin []byte, argv ...string) error {
	cmd := system.Command(ctx, nil, argv[0], argv[1:]...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	return run(cmd, argv)
}

func output(ctx context.Context, argv ...string) (string, error) {
	cmd := system.Command(ctx, nil, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout = &out
	err := run(cmd, argv)
	return out.String(), err
}

// run runs cmd and turns a failure into a *system.CommandError with the start of its
// stderr (and of its stdout, when nobody else reads it).
func run(cmd *exec.Cmd, argv []string) error {
	var msg bytes.Buffer
	cmd.Stderr = &system.LimitedWriter{Buf: &msg, Max: 400}
	if cmd.Stdout == nil {
		cmd.Stdout = cmd.Stderr
	}
	err := system.RunGroup(cmd)
	if err == nil {
		return nil
	}
	ce := &system.CommandError{Argv: argv, Output: strings.TrimSpace(msg.String()), Err: err}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ce.Exit = ee.ExitCode()
	}
	return ce
}

func isExit(err error, code int) bool {
	var ce *system.CommandError
	return errors.As(err, &ce) && ce.Exit == code
}
