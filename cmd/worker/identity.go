package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/identity"
)

// identityKeyHelp documents --identity-key; empty means <state-dir>/identity_ed25519.
const identityKeyHelp = "the device's identity key (OpenSSH private key, 0600); default <state-dir>/" + identity.DefaultFile + ", made on first start; an SSH host key such as /etc/ssh/ssh_host_ed25519_key works too"

func identityCommand() *cli.Command {
	return &cli.Command{
		Name:  "identity",
		Short: "print the device's identity key and its fingerprint (made when missing), to compare at enrolment",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			stateDir := fs.String("state-dir", "/var/lib/fleetprov", "state directory")
			key := fs.String("identity-key", "", identityKeyHelp)
			deviceID := fs.String("device-id", "", "device id for the key's comment when it is made")
			return func(ctx context.Context, args []string, io cli.IO) error {
				if len(args) != 0 {
					return cli.Usagef("identity takes no arguments")
				}
				path := identity.Path(*key, *stateDir)
				s, created, err := identity.LoadOrCreate(path, "fleetprov-device:"+*deviceID)
				if err != nil {
					return err
				}
				if created {
					fmt.Fprintf(io.Stderr, "made a new identity key at %s\n", path)
				}
				fmt.Fprintf(io.Stdout, "%s\n%s\n", identity.AuthorizedKey(s.PublicKey()), identity.Fingerprint(s.PublicKey()))
				return nil
			}
		},
	}
}
