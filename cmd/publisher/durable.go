package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/messaging/fleet"
)

// durableFlags choose between durable desired state on the hub and one-shot requests.
type durableFlags struct {
	mode   string
	wait   string
	revert bool
	resume bool
}

func (d *durableFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.mode, "durable", "auto", "store the push as desired state on the hub: auto (when the hub runs JetStream), on (refuse without it), off (one-shot requests)")
	fs.StringVar(&d.wait, "wait", "", "durable: after the rollout, wait up to --timeout until N or N% of the devices have converged")
	fs.BoolVar(&d.resume, "resume", false, "durable: continue a stopped rollout of the same payload: devices that already applied it are not given it again")
	fs.BoolVar(&d.revert, "revert-on-failure", false, "durable: when --canary or --max-failures stops the rollout, give the devices that took the new state their previous desired state back")
}

// apply checks the flags against the push options.
func (d *durableFlags) apply(o *fleet.PushOptions) error {
	switch d.mode {
	case "auto", "on", "off":
	default:
		return cli.Usagef("--durable: want auto, on or off, got %q", d.mode)
	}
	if d.wait != "" {
		c, err := parseCount(d.wait)
		if err != nil {
			return cli.Usagef("--wait: %v", err)
		}
		o.Wait = &c
	}
	o.RevertOnFailure, o.Resume = d.revert, d.resume
	if d.mode == "off" && (o.Wait != nil || d.revert || d.resume) {
		return cli.Usagef("--wait, --resume and --revert-on-failure need durable desired state (not --durable off)")
	}
	if o.Detach && d.mode == "on" {
		return cli.Usagef("--detach is one-shot: durable pushes are followed until each device took its state or is offline")
	}
	return nil
}

// open connects the push to the hub's durable state when the flags and the server allow
// it; with auto and a server without JetStream (a device's own server, --via, a hub
// without JetStream) the push is one-shot, and says so when it matters.
func (d *durableFlags) open(ctx context.Context, cl *fleet.Client, o *fleet.PushOptions) error {
	if d == nil || d.mode == "off" || (d.mode == "auto" && o.Detach) {
		return nil
	}
	ds, err := cl.OpenDesired(ctx)
	switch {
	case errors.Is(err, fleet.ErrNoJetStream) && d.mode == "auto":
		if o.Wait != nil || o.RevertOnFailure || o.Resume {
			return cli.Usagef("--wait, --resume and --revert-on-failure need a hub with JetStream ('publisher nats init' configures one); this server has none")
		}
		return nil
	case errors.Is(err, fleet.ErrNoJetStream):
		return cli.Exit(cli.ExitUnreachable, fmt.Errorf("--durable on: %w ('publisher nats init' configures a hub with JetStream)", err))
	case err != nil:
		return cli.Exit(cli.ExitUnreachable, err)
	}
	o.Desired = ds
	return nil
}
