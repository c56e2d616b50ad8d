package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/identity"
)

// identityFlag registers --identity-key; empty means <state-dir>/identity_ed25519.
func identityFlag(fs *flag.FlagSet) *string {
	return fs.String("identity-key", "", "the device's identity key (OpenSSH private key, 0600); default <state-dir>/"+identity.DefaultFile+", made on first start; an SSH host key such as /etc/ssh/ssh_host_ed25519_key works too")
}

func identityPath(flagValue, stateDir string) string {
	if flagValue != "" {
		return flagValue
	}
	return filepath.Join(stateDir, identity.DefaultFile)
}

func identityCommand() *cli.Command {
	return &cli.Command{
		Name:  "identity",
		Short: "print the device's identity key and its fingerprint (made when missing), to compare at enrolment",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			stateDir := fs.String("state-dir", "/var/lib/fleetprov", "state directory")
			key := identityFlag(fs)
			deviceID := fs.String("device-id", "", "device id for the key's comment when it is made")
			return func(ctx context.Context, args []string, io cli.IO) error {
				if len(args) != 0 {
					return cli.Usagef("identity takes no arguments")
				}
				s, created, err := identity.LoadOrCreate(identityPath(*key, *stateDir), "fleetprov-device:"+*deviceID)
				if err != nil {
					return err
				}
				if created {
					fmt.Fprintf(io.Stderr, "made a new identity key at %s\n", identityPath(*key, *stateDir))
				}
				fmt.Fprintf(io.Stdout, "%s\n%s\n", identity.AuthorizedKey(s.PublicKey()), identity.Fingerprint(s.PublicKey()))
				return nil
			}
		},
	}
}
