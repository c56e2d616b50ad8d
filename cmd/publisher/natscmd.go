package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
)

// natsDir is a fleet's NATS authority directory: --nats-dir, or
// ~/.config/fleetprov/nats/<fleet>.
func natsDir(flagValue, fleet string, env cli.Env) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if home, ok := env("HOME"); ok && home != "" {
		return filepath.Join(home, ".config", "fleetprov", "nats", fleet), nil
	}
	return "", cli.Usagef("no NATS directory: pass --nats-dir or set HOME")
}

func natsCommand() *cli.Command {
	return &cli.Command{
		Name:  "nats",
		Args:  "init | creds (--device ID [--groups G,...] | --publisher NAME) [-o FILE]",
		Short: "make the fleet's NATS keys and hub configuration, and mint credentials",
		Long: `The hub is a stock nats-server in operator mode: every publisher and every device
(leafnode) connects with user credentials signed by the fleet's account key, and anonymous
connections are refused. A device's credentials reach only its own subjects: it can
publish its own events and presence and answer requests, and subscribe to its own
device, group and fleet requests and its own inbox, nothing else.

  init   creates the operator, account and system-account keys in --nats-dir (0600), the
         hub's configuration (hub.conf: run 'nats-server -c hub.conf'), and
         publisher.creds, which every publisher command uses by default.
  creds  mints credentials: --device ID (with its --groups) for 'worker serve
         --hub-creds', or --publisher NAME for another operator or CI. 'publisher enroll
         --creds-out' mints a device's when it enrols it.

Keep --nats-dir private: its account key mints credentials for the whole fleet.

Examples:
  publisher nats init --fleet prod
  publisher nats creds --fleet prod --device gw1 --groups edge -o gw1.creds
  publisher nats creds --fleet prod --publisher ci --ttl 720h -o ci.creds`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			fleetName := fs.String("fleet", "default", "fleet name")
			dir := fs.String("nats-dir", "", "the fleet's NATS keys (default ~/.config/fleetprov/nats/<fleet>)")
			listen := fs.String("listen", "0.0.0.0:4222", "init: the hub's client listen address (publishers)")
			leafListen := fs.String("leaf-listen", "0.0.0.0:7422", "init: the hub's leafnode listen address (devices)")
			device := fs.String("device", "", "creds: mint a device's credentials")
			groups := fs.String("groups", "", "creds: the device's groups (comma-separated); its credentials receive only these groups' requests")
			publisher := fs.String("publisher", "", "creds: mint a publisher's credentials with this name")
			out := fs.String("o", "", "creds: write to this file (0600; default: stdout)")
			ttl := fs.Duration("ttl", 0, "creds: expire after this long (0: never)")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				if len(args) != 1 || (args[0] != "init" && args[0] != "creds") {
					return cli.Usagef("expected init or creds")
				}
				d, err := natsDir(*dir, *fleetName, stdio.Env)
				if err != nil {
					return err
				}
				if args[0] == "init" {
					return natsInit(d, *fleetName, *listen, *leafListen, stdio)
				}
				if (*device == "") == (*publisher == "") {
					return cli.Usagef("creds needs exactly one of --device or --publisher")
				}
				f, err := loadAuthority(d, *fleetName)
				if err != nil {
					return cli.Usagef("%v", err)
				}
				var creds []byte
				if *device != "" {
					creds, err = f.DeviceCreds(*device, cli.SplitList(*groups), *ttl)
				} else {
					creds, err = f.Creds("publisher:"+*publisher, natsauth.PublisherPermissions(f.Name), *ttl)
				}
				if err != nil {
					return cli.Usagef("%v", err)
				}
				return writeCreds(*out, creds, stdio)
			}
		},
	}
}

func natsInit(dir, fleet, listen, leafListen string, stdio cli.IO) error {
	f, err := natsauth.Create(fleet)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	if err := f.Save(dir, listen, leafListen); err != nil {
		return err
	}
	creds, err := f.Creds("publisher:"+fleet, natsauth.PublisherPermissions(fleet), 0)
	if err != nil {
		return err
	}
	if err := writeCreds(filepath.Join(dir, natsauth.PublisherCreds), creds, stdio); err != nil {
		return err
	}
	fmt.Fprintf(stdio.Stdout, `fleet %q: NATS keys in %s
  hub:        nats-server -c %s
  devices:    worker serve --hub nats-leaf://HUB:7422 --hub-creds DEVICE.creds
              (mint with: publisher nats creds --fleet %s --device ID --groups G -o DEVICE.creds,
               or publisher enroll --fleet %s --device ID --fingerprint SHA256:... --creds-out DEVICE.creds)
  publishers: this machine uses %s by default
`, fleet, dir, filepath.Join(dir, natsauth.HubConfFile), fleet, fleet, filepath.Join(dir, natsauth.PublisherCreds))
	return nil
}

// loadAuthority loads the fleet's NATS keys from dir, which must hold fleet's.
func loadAuthority(dir, fleet string) (*natsauth.Fleet, error) {
	f, err := natsauth.Load(dir)
	if err != nil {
		return nil, err
	}
	if f.Name != fleet {
		return nil, fmt.Errorf("%s holds fleet %q's keys, not %q", dir, f.Name, fleet)
	}
	return f, nil
}

// writeCreds writes creds to path (0600), or to stdout when path is "" or "-".
func writeCreds(path string, creds []byte, stdio cli.IO) error {
	if path == "" || path == "-" {
		_, err := stdio.Stdout.Write(creds)
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("writing credentials: %w", err)
	}
	if err := state.WriteFileAtomic(path, creds, 0o600); err != nil {
		return fmt.Errorf("writing credentials: %w", err)
	}
	return nil
}
