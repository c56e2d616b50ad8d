// Command worker is the fleetprov device daemon and its local admin commands: it embeds a
// NATS server, verifies signed jobs, and runs them through the core pipeline.
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

// run is the whole program but for signals and the exit; tests call it directly.
func run(ctx context.Context, args []string, stdio cli.IO) int {
	return app(deps{}).Run(ctx, args, stdio)
}

func app(d deps) *cli.App {
	return &cli.App{
		Name:        "worker",
		Short:       "the fleetprov device daemon and local admin commands",
		FileFlag:    "config",
		FileDefault: "/etc/fleetprov/worker.toml",
		Commands: []*cli.Command{
			serveCommand(d),
			validateCommand(),
			renderCommand(),
			importCommand(d),
			recoverCommand(d),
			syncCommand(d),
			healthCommand(d),
			statusCommand(d),
			identityCommand(),
			versionCommand(),
		},
	}
}
