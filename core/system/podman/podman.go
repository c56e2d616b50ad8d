// Package podman is the real Podman secret store behind system.Secrets: podman secret
// create --replace with the value on stdin (never a file), as root for rootful
// containers or as the app user for rootless ones.
package podman

import (
	"bytes"
	"context"
	"fmt"
	"io"
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

// Put implements system.Secrets. The secret is labelled as fleetprov's; --driver file
// keeps the app user's containers.conf from picking a driver that runs its own commands.
func (s Secrets) Put(ctx context.Context, acc *system.Account, name string, value []byte) error {
	return s.run(ctx, acc, bytes.NewReader(value), "secret create "+name, "secret", "create", "--replace", "--driver", "file", "--label", "fleetprov.managed=true", name, "-")
}

// Remove implements system.Secrets.
func (s Secrets) Remove(ctx context.Context, acc *system.Account, name string) error {
	return s.run(ctx, acc, nil, "secret rm "+name, "secret", "rm", "--ignore", name)
}

// run runs one bounded podman call; its error names the call (what; never stdin) and the
// first line podman printed.
func (s Secrets) run(ctx context.Context, acc *system.Account, stdin io.Reader, what string, args ...string) error {
	timeout, bin := s.Timeout, s.Podman
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if bin == "" {
		bin = "podman"
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := system.Command(ctx, acc, bin, args...)
	cmd.Stdin = stdin
	var out bytes.Buffer
	lw := &system.LimitedWriter{Buf: &out, Max: 4 << 10} // the app user's podman says what it likes
	cmd.Stdout, cmd.Stderr = lw, lw
	if err := cmd.Run(); err != nil {
		who := ""
		if acc != nil {
			who = " (as " + acc.Name + ")"
		}
		return fmt.Errorf("podman %s%s: %w: %s", what, who, err, firstLine(out.String()))
	}
	return nil
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
