// Package probe runs the probes of typed health checks on a real device (system.Probes):
// HTTP GETs, TCP connects, and commands run with `podman exec` (as the app user for
// rootless containers) or on the host. It lives beside the commands because it needs
// net/http, which core/ must not import.
package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"

	"github.com/fleetprov/fleetprov/core/system"
)

// maxBody bounds what an HTTP probe reads of a body, and maxOutput what an exec probe
// keeps of its output.
const (
	maxBody   = 64 << 10
	maxOutput = 4 << 10
)

// Real is system.Probes for a real device.
type Real struct{}

var client = &http.Client{
	// A health endpoint answers itself; a redirect elsewhere is not health.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// HTTP implements system.Probes.
func (Real) HTTP(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("User-Agent", "fleetprov-health-check")
	res, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	return res.StatusCode, body, err
}

// TCP implements system.Probes.
func (Real) TCP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// Exec implements system.Probes.
func (Real) Exec(ctx context.Context, acc *system.Account, container string, argv []string) (int, string, error) {
	if len(argv) == 0 {
		return 0, "", errors.New("empty command")
	}
	var cmd *exec.Cmd
	if container == "" {
		cmd = system.Command(ctx, acc, argv[0], argv[1:]...)
	} else {
		cmd = system.Command(ctx, acc, "podman", append([]string{"exec", container}, argv...)...)
	}
	// Like activation hooks: its own process group, killed whole at the deadline, and
	// the output pipe given up 2 s later, so nothing the command left behind (or another
	// process of the app user holding the pipe) can hold the activation past its deadline.
	var out bytes.Buffer
	lw := &system.LimitedWriter{Buf: &out, Max: maxOutput}
	cmd.Stdout, cmd.Stderr = lw, lw
	err := system.RunGroup(cmd)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() >= 0 {
		return ee.ExitCode(), out.String(), nil
	}
	if err != nil {
		return 0, out.String(), fmt.Errorf("running %s: %w", argv[0], err)
	}
	return 0, out.String(), nil
}
