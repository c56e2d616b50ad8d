package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// devicePlan is one device's answer to push --plan.
type devicePlan struct {
	Device string `json:"device"`
	wire.ValidationResult
	Error string `json:"error,omitempty"`
}

// planPush sends the payload in a signed validate op to each named device, which plans
// it against its active state and host without changing anything, and prints what an
// apply would change there. Exit 0 when every device would take it, 1 when one refuses
// it (invalid there, or its host refuses it), else 3/4/5 when one did not answer, was not
// authorized, or answered with another key, as for every other command.
func planPush(ctx context.Context, cf *connFlags, stdio cli.IO, devices []string, p fleet.Payload, asJSON bool) error {
	cf.named = true
	cl, closeFn, err := cf.client(stdio, true)
	if err != nil {
		return err
	}
	defer closeFn()
	var plans []devicePlan
	refused, worst := 0, 0
	for _, dev := range devices {
		dp := devicePlan{Device: dev}
		data, err := sendSigned(ctx, cl, cf, dev, "validate", p)
		switch {
		case err != nil:
			var ee *cli.ExitError
			code := cli.ExitFailed
			if errors.As(err, &ee) {
				if ee.Code == cli.ExitUsage {
					return err
				}
				code = ee.Code
			}
			worst = max(worst, code)
			dp.Error = err.Error()
		case json.Unmarshal(data, &dp.ValidationResult) != nil:
			dp.Error = "the device's answer is not a validation result"
			worst = max(worst, cli.ExitFailed)
		case !dp.OK:
			refused++
		}
		plans = append(plans, dp)
	}
	if asJSON {
		b, _ := json.MarshalIndent(map[string]any{"devices": plans}, "", "  ")
		fmt.Fprintf(stdio.Stdout, "%s\n", b)
	} else {
		for _, dp := range plans {
			printPlan(stdio.Stdout, dp)
		}
	}
	switch {
	case refused > 0:
		return cli.Exit(cli.ExitFailed, fmt.Errorf("%d of %d device(s) would refuse it; nothing was applied", refused, len(plans)))
	case worst != 0:
		// Unreachable (3), unauthorized (4) or impostor (5), as the other commands say.
		return cli.Exit(worst, fmt.Errorf("not every device answered with a plan; nothing was applied"))
	}
	return nil
}

func printPlan(w io.Writer, dp devicePlan) {
	switch {
	case dp.Error != "":
		fmt.Fprintf(w, "%s: no plan: %s\n", dp.Device, dp.Error)
		return
	case !dp.OK:
		fmt.Fprintf(w, "%s: refused, nothing would change:\n", dp.Device)
		for _, e := range dp.Errors {
			fmt.Fprintf(w, "  error: %s\n", e.Error())
		}
		return
	}
	for _, e := range dp.Warnings {
		fmt.Fprintf(w, "%s: warning: %s\n", dp.Device, e.Error())
	}
	pl := dp.Plan
	if pl == nil {
		fmt.Fprintf(w, "%s: valid; no plan (the signing key may validate but not apply here)\n", dp.Device)
		return
	}
	if len(pl.Units) == 0 && len(pl.Host) == 0 {
		fmt.Fprintf(w, "%s: valid; no unit or host setting would change (an apply would still restart the units)\n", dp.Device)
		return
	}
	fmt.Fprintf(w, "%s: valid; an apply would change:\n", dp.Device)
	for _, u := range pl.Units {
		fmt.Fprintf(w, "  unit  %-7s %s (%s)\n", u.Action, u.Unit, u.Mode)
	}
	for _, s := range pl.Host {
		fmt.Fprintf(w, "  host  %s\n", s.String())
	}
	if !pl.HostManaged {
		fmt.Fprintf(w, "  host  settings not applied by this device (worker --host none)\n")
	}
	switch pl.Confirm {
	case "auto":
		fmt.Fprintf(w, "  the network change must be confirmed by the hub link within %ds, or it rolls back\n", pl.ConfirmSeconds)
	case "operator":
		fmt.Fprintf(w, "  the network change must be confirmed (publisher confirm --device %s) within %ds, or it rolls back\n", dp.Device, pl.ConfirmSeconds)
	}
}
