package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"time"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
)

func patchCommand() *cli.Command {
	return &cli.Command{
		Name:  "patch",
		Args:  "--device ID... --kind KIND [--name NAME] (--set JSON | --file F | --delete)",
		Short: "partial update of the active config (users, network, containers, ...) as a signed op",
		Long: `Changes one part of a device's active config; the device validates the whole result
(every error comes back at once), then applies it through the normal pipeline.

Kinds and ops:
  users, containers, container-networks, container-volumes, container-builds, secrets
      --name NAME --set '{...}' (put: create or replace)  or  --name NAME --delete
  network, activation
      --set '{...}' (RFC 7396 merge: objects merge, null deletes a key)

Examples:
  publisher patch --device gw1 --kind users --name bob --set '{"isAdmin":false,"ssh_key":"ssh-ed25519 AAAA..."}'
  publisher patch --device gw1 --kind activation --set '{"timeout_seconds":120}'
  publisher patch --group edge --kind containers --name old --delete
  publisher patch --device gw1 --kind secrets --name api-token --set '{"description":"API token"}' --secret api-token=@tok.txt

--secret NAME=@FILE / --secrets DIR send values along, sealed to each enrolled device
(publisher secrets set rotates values without changing the config).`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, true)
			var tf targetFlags
			tf.register(fs)
			kind := fs.String("kind", "", "what to change (see above)")
			name := fs.String("name", "", "the user or resource name, for keyed kinds")
			set := fs.String("set", "", "JSON value to put or merge")
			file := fs.String("file", "", "read the JSON value from a file")
			del := fs.Bool("delete", false, "delete --name")
			timeout := fs.Duration("timeout", 5*time.Minute, "per device, from send to final result")
			asJSON := fs.Bool("json", false, "print the summary as JSON")
			var sf secretFlags
			sf.register(fs)
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				if len(args) != 0 {
					return cli.Usagef("patch takes no positional arguments")
				}
				p := config.Patch{Kind: *kind, Name: *name, Op: "put"}
				switch *kind {
				case "network", "activation":
					p.Op = "merge"
				case "users", "containers", "container-networks", "container-volumes", "container-builds", "secrets":
					if *name == "" {
						return cli.Usagef("--kind %s needs --name", *kind)
					}
				default:
					return cli.Usagef("unknown --kind %q", *kind)
				}
				if *del {
					if p.Op == "merge" {
						return cli.Usagef("--delete is for keyed kinds; to drop a key of %s, --set it to null", *kind)
					}
					p.Op = "delete"
				} else {
					raw := []byte(*set)
					if *file != "" {
						b, err := os.ReadFile(*file)
						if err != nil {
							return cli.Usagef("reading --file: %v", err)
						}
						raw = b
					}
					if !json.Valid(raw) {
						return cli.Usagef("--set/--file must be JSON")
					}
					p.Value = raw
				}
				sv, err := sf.values(stdio.Stdin)
				if err != nil {
					return err
				}
				body, _ := json.Marshal(p)
				target, err := tf.target(cf.via == "")
				if err != nil {
					return err
				}
				return rollout(ctx, &cf, stdio, fleet.PushOptions{Op: "patch", Target: target, Timeout: *timeout, ReplyTimeout: cf.timeout,
					Payload: fleet.Payload{Data: body, ContentType: envelope.TypeJSON}, Secrets: sv}, nil, *asJSON, false)
			}
		},
	}
}
