package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
)

// Version is the release version; builds from source report "dev".
const Version = "0.1.0-dev"

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Short: "print version, commit and Go version",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			return func(ctx context.Context, args []string, io cli.IO) error {
				fmt.Fprintf(io.Stdout, "worker %s\ncommit %s\n%s\n", Version, commit(), runtime.Version())
				return nil
			}
		},
	}
}

func commit() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
