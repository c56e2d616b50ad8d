package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPublisherLinksNoDevicePipeline keeps the publisher an operator's tool: it speaks the
// wire contract (messaging/wire, envelope, fleet) and validates offline (core/check), but
// links none of the device's pipeline, job manager or device service.
func TestPublisherLinksNoDevicePipeline(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := map[string]string{
		"github.com/fleetprov/fleetprov/core/provision":       "the device pipeline",
		"github.com/fleetprov/fleetprov/core/jobs":            "the job manager",
		"github.com/fleetprov/fleetprov/core/activation":      "activation",
		"github.com/fleetprov/fleetprov/messaging/device":     "the device service",
		"github.com/fleetprov/fleetprov/messaging/devicenats": "the device's NATS transport",
		"github.com/fleetprov/fleetprov/messaging/bridge":     "the device's HTTP bridge",
		"github.com/fleetprov/fleetprov/messaging/node":       "a whole worker",
		"github.com/nats-io/nats-server/v2/server":            "the embedded NATS server",
	}
	for _, pkg := range strings.Fields(string(out)) {
		if why, ok := forbidden[pkg]; ok {
			t.Errorf("cmd/publisher links %s (%s)", pkg, why)
		}
	}
}
