// Command publisher is the operator's fleetprov CLI: it validates configs, signs them with
// the operator's SSH key and pushes them to one device, a group, or the whole fleet.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], cli.IO{Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin})
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdio cli.IO) int {
	return app().Run(ctx, args, stdio)
}

func app() *cli.App {
	return &cli.App{
		Name:  "publisher",
		Short: "validate, sign and push fleetprov configs to devices",
		Commands: []*cli.Command{
			{
				Name:  "validate",
				Args:  "PATH",
				Short: "check a config.toml or bundle offline, with the worker's own rules",
				Long: `Runs the same validation code as the worker: TOML syntax, the config schema, every
semantic rule, and rendering of the Quadlet units. Exit status 1 when invalid.`,
				Setup: cli.ValidateSetup,
			},
			pushCommand(),
			statusCommand(),
			lsCommand("ls"),
			lsCommand("ping"),
			jobCommand(),
			currentCommand(),
			confirmCommand(),
			exportCommand(),
			patchCommand(),
			secretsCommand(),
			enrollCommand(),
			natsCommand(),
			initCommand(),
		},
	}
}
