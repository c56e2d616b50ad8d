// Package podman is the real Podman secret store behind system.Secrets: podman secret
// create --replace with the value on stdin (never a file), as root for rootful
// containers or as the app user for rootless ones.
package podman

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/core/system"
)

// Secrets implements system.Secrets with the podman command.
type Secrets struct {
	// Podman is the podman binary (default "podman").
	Podman string
	// Timeout bounds one podman call (default 30s): the app user can stall its own
	// Podman (a held lock), and must not hold an apply or its rollback with it.
	Timeout time.Duration
}

func (s Secrets) timeout() time.Duration {
	if s.Timeout <= 0 {
		return 30 * time.Second
	}
	return s.Timeout
}

func (s Secrets) bin() string {
	if s.Podman == "" {
		return "podman"
	}
	return s.Podman
}

// Put implements system.Secrets. The secret is labelled as fleetprov's.
func (s Secrets) Put(ctx context.Context, acc *system.Account, name string, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	// --driver file: the app user's containers.conf must not pick a driver that runs
	// its own commands.
	cmd := system.Command(ctx, acc, s.bin(), "secret", "create", "--replace", "--driver", "file", "--label", "fleetprov.managed=true", name, "-")
	cmd.Stdin = bytes.NewReader(value)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("podman secret create %s%s: %w: %s", name, who(acc), err, firstLine(out.String()))
	}
	return nil
}

// Remove implements system.Secrets.
func (s Secrets) Remove(ctx context.Context, acc *system.Account, name string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	cmd := system.Command(ctx, acc, s.bin(), "secret", "rm", "--ignore", name)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("podman secret rm %s%s: %w: %s", name, who(acc), err, firstLine(out.String()))
	}
	return nil
}

func who(acc *system.Account) string {
	if acc == nil {
		return ""
	}
	return " (as " + acc.Name + ")"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
