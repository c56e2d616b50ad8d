package cli

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/core/config"
)

// ValidateSetup is the validate command both binaries share.
func ValidateSetup(fs *flag.FlagSet) func(context.Context, []string, IO) error {
	asJSON := fs.Bool("json", false, "print the result as JSON")
	appUser := fs.String("app-user", config.DefaultAppUser, "the account rootless containers run as (its name is reserved)")
	bridgePort := fs.Int("bridge-port", config.DefaultBridgePort, "the device's HTTP bridge port, which WAN tcp must not open")
	return func(ctx context.Context, args []string, io IO) error {
		if len(args) != 1 {
			return Usagef("expected exactly one PATH, got %d argument(s)", len(args))
		}
		f, err := os.Open(args[0])
		if err != nil {
			return fmt.Errorf("reading input: %w", err)
		}
		defer f.Close()
		v, _ := check.Input(ctx, f, check.Options{Config: config.Options{AppUser: *appUser, BridgePort: *bridgePort}})
		r := v.Report
		return PrintValidation(io.Stdout, args[0], r, *asJSON)
	}
}
