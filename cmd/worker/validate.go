package main

import (
	"github.com/fleetprov/fleetprov/cmd/internal/cli"
)

func validateCommand() *cli.Command {
	return &cli.Command{
		Name:  "validate",
		Args:  "PATH",
		Short: "check a config.toml or bundle; prints valid (+ warnings) or every error",
		Long: `Runs the same checks as an apply, offline: TOML syntax, the config schema, every
semantic rule, and rendering of the Quadlet units. Nothing on the device changes.
Exit status 1 when the config is invalid, 2 on usage errors.`,
		Setup: cli.ValidateSetup,
	}
}
