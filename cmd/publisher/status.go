package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/messaging/fleet"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Args:  "[--device ID... | --group G | --all]",
		Short: "each device's desired state against what it applied, from the hub (durable state)",
		Long: `Reads the fleet's durable state on its hub (JetStream, as 'publisher nats init' sets it up):
every device's desired state (the newest of its own key, its groups' and the fleet's) and
the status it last recorded, signed by its identity key. No device is contacted, so
offline devices are shown too.

States: converged; drifted (converged, but its files were changed since); applying;
failed; rolled-back; rejected (it refused the envelope: see DETAIL); pending (it has not
taken its newest desired state: offline or busy; SEEN says when it last reported);
ahead (it applied a newer one-shot push); no-desired-state; impostor (its status is not
signed by its enrolled key).

Without a target every device the hub knows is shown. --watch redraws on every change
until interrupted. Exit status 0 when every shown device is converged (or ahead), 1
otherwise, 3 when the hub keeps no durable state.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, false)
			var tf targetFlags
			tf.register(fs)
			asJSON := fs.Bool("json", false, "print devices and counts as JSON")
			watch := fs.Bool("watch", false, "redraw on every status change until interrupted")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				if len(args) != 0 {
					return cli.Usagef("status takes no arguments")
				}
				if cf.via != "" {
					return cli.Usagef("status reads the hub's durable state: use --server, not --via")
				}
				target, err := tf.target(false)
				if err != nil {
					return err
				}
				cl, done, err := cf.client(stdio, false)
				if err != nil {
					return err
				}
				defer done()
				ds, err := cl.LookupDesired(ctx)
				if errors.Is(err, fleet.ErrNoDesiredState) {
					return cli.Exit(cli.ExitFailed, fmt.Errorf("%w: 'publisher push' through this hub stores it", err))
				}
				if errors.Is(err, fleet.ErrNoJetStream) {
					return cli.Exit(cli.ExitUnreachable, fmt.Errorf("%s: %w ('publisher nats init' configures a hub with JetStream)", cf.server, err))
				}
				if err != nil {
					return cli.Exit(cli.ExitUnreachable, err)
				}
				// With --watch, the watch starts before the full read: a record written
				// between them is in the read or in the watch, never in neither. Each
				// record comes verified from the watch and updates its row; the whole
				// state is read again only every 30 s (desired state changes too).
				updates := make(chan fleet.DeviceStatus, 1024)
				if *watch {
					stop, err := ds.WatchStatus(func(s fleet.DeviceStatus) {
						select {
						case updates <- s:
						default: // the next full read catches up
						}
					})
					if err != nil {
						return err
					}
					defer stop()
				}
				view, err := ds.View(ctx)
				if err != nil {
					return err
				}
				show := func() []fleet.Convergence { return filterTarget(view.Convergences(target.Devices...), target) }
				if !*watch {
					return printStatus(stdio.Stdout, show(), *asJSON)
				}
				tick := time.NewTicker(30 * time.Second)
				defer tick.Stop()
				for {
					printStatus(stdio.Stdout, show(), *asJSON)
					select {
					case <-ctx.Done():
						return nil
					case s := <-updates:
						view.Update(s)
					case <-tick.C:
						if view, err = ds.View(ctx); err != nil {
							return err
						}
					}
				}
			}
		},
	}
}

// filterTarget keeps the devices of the target: named ones, a group's (by the groups
// their status records claim), or all.
func filterTarget(cvs []fleet.Convergence, t fleet.Target) []fleet.Convergence {
	switch {
	case len(t.Devices) > 0:
		return slices.DeleteFunc(cvs, func(c fleet.Convergence) bool { return !slices.Contains(t.Devices, c.Device) })
	case t.Group != "":
		return slices.DeleteFunc(cvs, func(c fleet.Convergence) bool { return !slices.Contains(c.Groups, t.Group) })
	}
	return cvs
}

// printStatus prints the table (or JSON) and the counts, and maps them to an exit code.
func printStatus(w io.Writer, cvs []fleet.Convergence, asJSON bool) error {
	counts := map[string]int{}
	behind := 0
	for _, c := range cvs {
		counts[c.State]++
		if c.State != fleet.ConvConverged && c.State != fleet.ConvAhead {
			behind++
		}
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(map[string]any{"devices": cvs, "counts": counts, "behind": behind})
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tSTATE\tDESIRED\tFROM\tSEEN\tDETAIL")
		for _, c := range cvs {
			seen := "never"
			if !c.Seen.IsZero() {
				seen = time.Since(c.Seen).Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Device, c.State, short(c.Desired), c.DesiredKey, seen, c.Detail)
		}
		tw.Flush()
		fmt.Fprintf(w, "%d device(s): %s; %d behind\n", len(cvs), countLine(counts), behind)
		if behind > 0 {
			var parts []string
			for k, n := range counts {
				if k != fleet.ConvConverged && k != fleet.ConvAhead {
					parts = append(parts, fmt.Sprintf("%d %s", n, k))
				}
			}
			sort.Strings(parts)
			fmt.Fprintf(w, "behind: %s\n", strings.Join(parts, ", "))
		}
	}
	if len(cvs) == 0 {
		return cli.Exit(cli.ExitFailed, fmt.Errorf("the hub knows no device for this target"))
	}
	if behind > 0 {
		return cli.Exit(cli.ExitFailed, cli.ErrReported)
	}
	return nil
}

// short is the tail of an envelope id (a UUIDv7: its head is a timestamp, shared by the
// envelopes of one push), enough to tell them apart.
func short(id string) string {
	if len(id) > 12 {
		return "…" + id[len(id)-12:]
	}
	return id
}
