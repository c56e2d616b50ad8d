// Package natshub finds the stock nats-server the fleet tests run as a hub. It is apart
// from fptest so that only the suites that run a hub link nats-server's package.
package natshub

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fleetprov/fleetprov/internal/fptest"
)

// Binary returns the stock nats-server the tests run as a hub: the release go.mod
// pins, which test/install-prereqs builds from its module (Debian's 2.9 handles leafnode
// permissions differently). Missing, or another release: the test fails under CI=true and
// skips otherwise.
func Binary(t testing.TB) string {
	t.Helper()
	const fix = " (run test/install-prereqs, which builds the release go.mod pins)"
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		fptest.Need(t, false, "nats-server not found"+fix)
		return ""
	}
	// The release the tests are built with (a test binary's build info lists no module
	// dependencies, so it cannot say).
	want := "nats-server: v" + server.VERSION
	out, _ := exec.Command(bin, "--version").Output()
	got := strings.TrimSpace(string(out))
	fptest.Need(t, got == want, bin+" is "+strconv.Quote(got)+", not "+strconv.Quote(want)+fix)
	return bin
}
