package core

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden maps an import path prefix to why core must not depend on it.
var forbidden = map[string]string{
	"github.com/fleetprov/fleetprov/messaging": "core is the domain; transports depend on it, never the reverse",
	"github.com/fleetprov/fleetprov/cmd":       "binaries sit on top of everything",
	"github.com/nats-io/":                      "NATS belongs to messaging/",
	"net/http":                                 "HTTP belongs to messaging/bridge",
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Fields(string(out))
}

func TestDependencyDirection(t *testing.T) {
	for _, pkg := range goList(t, "./...") {
		if strings.HasSuffix(pkg, "test") && pkg != "github.com/fleetprov/fleetprov/core" {
			// Test helper packages (configtest, ...) may use anything tests use.
			continue
		}
		for _, dep := range goList(t, "-deps", pkg) {
			for prefix, why := range forbidden {
				if dep == prefix || strings.HasPrefix(dep, prefix+"/") || (strings.HasSuffix(prefix, "/") && strings.HasPrefix(dep, prefix)) {
					t.Errorf("%s depends on %s: %s", pkg, dep, why)
				}
			}
		}
	}
	for _, pkg := range goList(t, "./system/...") {
		for _, dep := range goList(t, "-deps", pkg) {
			if strings.HasPrefix(dep, "github.com/fleetprov/fleetprov/core/") && !strings.HasPrefix(dep, "github.com/fleetprov/fleetprov/core/system") {
				t.Errorf("%s depends on %s: core/system is the bottom of the stack", pkg, dep)
			}
		}
	}
}
