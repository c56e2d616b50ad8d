package linuxhost_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/core/system"
	"github.com/fleetprov/fleetprov/core/system/linuxhost"
	"github.com/fleetprov/fleetprov/internal/fptest"
)

// The real user database, on this machine: an account made, put in the admin group,
// locked and unlocked, then removed again.
func TestAccountsForReal(t *testing.T) {
	fptest.Need(t, os.Geteuid() == 0, "root (useradd on this machine)")
	for _, tool := range []string{"useradd", "usermod", "userdel", "groupadd"} {
		fptest.RequireTool(t, "passwd", tool) // one call per tool: the names of one call are alternatives
	}
	const name = "fptest-linuxhost"
	ctx := context.Background()
	h := linuxhost.Host{}
	exec.Command("userdel", "--remove", name).Run()
	t.Cleanup(func() { exec.Command("userdel", "--remove", name).Run() })

	if _, ok, err := h.LookupUser(ctx, name); ok || err != nil {
		t.Fatalf("LookupUser of a missing account = %v, %v", ok, err)
	}
	admin := "sudo"
	if ok, _ := h.GroupExists(ctx, admin); !ok {
		if out, err := exec.Command("groupadd", "--system", admin).CombinedOutput(); err != nil {
			t.Fatalf("groupadd sudo: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("groupdel", admin).Run() })
	}
	if ok, err := h.GroupExists(ctx, "fptest-no-such-group"); ok || err != nil {
		t.Errorf("GroupExists of a missing group = %v, %v", ok, err)
	}
	if err := h.AddUser(ctx, system.UserSpec{Name: name, Shell: "/bin/sh", Groups: []string{admin}}); err != nil {
		t.Fatal(err)
	}
	u, ok, err := h.LookupUser(ctx, name)
	if !ok || err != nil || u.Shell != "/bin/sh" || !slices.Equal(u.Groups, []string{admin}) || u.Expired || u.Home != "/home/"+name || u.UID == 0 {
		t.Fatalf("after AddUser: %+v %v %v", u, ok, err)
	}
	if st, err := os.Stat(u.Home); err != nil || !st.IsDir() {
		t.Errorf("no home: %v", err)
	}
	if err := h.SetUser(ctx, system.UserSpec{Name: name, Shell: "/bin/bash", Locked: true}); err != nil {
		t.Fatal(err)
	}
	if u, _, _ = h.LookupUser(ctx, name); !u.Expired || len(u.Groups) != 0 || u.Shell != "/bin/bash" {
		t.Errorf("after a lock: %+v; want expired, no groups, bash", u)
	}
	if err := h.SetUser(ctx, system.UserSpec{Name: name, Shell: "/bin/sh", Groups: []string{admin}}); err != nil {
		t.Fatal(err)
	}
	if u, _, _ = h.LookupUser(ctx, name); u.Expired || !slices.Equal(u.Groups, []string{admin}) {
		t.Errorf("after an unlock: %+v", u)
	}
	err = h.AddUser(ctx, system.UserSpec{Name: name, Shell: "/bin/sh"})
	var ce *system.CommandError
	if !errors.As(err, &ce) || ce.Exit == 0 || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("AddUser of an existing account = %v; want a CommandError saying it exists", err)
	}
}

// Run feeds stdin and reports a failure with the command, its exit code and what it said.
func TestRun(t *testing.T) {
	ctx := context.Background()
	h := linuxhost.Host{}
	if err := h.Run(ctx, []byte("hello\n"), "grep", "-q", "hello"); err != nil {
		t.Errorf("Run with stdin = %v", err)
	}
	err := h.Run(ctx, nil, "sh", "-c", "echo 'no such table' >&2; exit 3")
	if err == nil || err.Error() != "sh -c echo 'no such table' >&2; exit 3 failed with exit code 3: no such table" {
		t.Errorf("Run of a failing command = %v", err)
	}
}
