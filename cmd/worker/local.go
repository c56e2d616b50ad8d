package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/state"
)

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:  "render",
		Args:  "PATH --out DIR",
		Short: "write the derived files and Quadlet units an apply would install (a dry-run plan)",
		Long: `Validates PATH (config.toml or bundle) and writes into DIR what an apply would put in
the active config dir: config.toml, users.json, firewall/network/LAN JSON, allowed_signers,
quadlet/<rootful|rootless>/*, quadlet-runtime.json; and the host settings a --host systemd
device applies: host/accounts.txt (the accounts, admins, shells, whether each has a key) and
host/etc/... (networkd, resolved, timesyncd and dnsmasq files, the nftables ruleset of the
table inet fleetprov). Nothing else is touched.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			out := fs.String("out", "", "directory to write into (required)")
			configDir := fs.String("config-dir", check.DefaultConfigDir, "runtime path ${CONFIG_DIR} is rendered as")
			appUser := fs.String("app-user", config.DefaultAppUser, "the account rootless containers run as")
			return func(ctx context.Context, args []string, io cli.IO) error {
				if len(args) != 1 || *out == "" {
					return cli.Usagef("expected PATH and --out DIR")
				}
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("reading input: %w", err)
				}
				defer f.Close()
				rep, err := provision.RenderTo(ctx, f, *out, check.Options{Config: config.Options{AppUser: *appUser}, ConfigDir: *configDir})
				if err != nil {
					if errors.Is(err, config.ErrInvalid) || errors.Is(err, config.ErrEmpty) || errors.Is(err, config.ErrUnsupportedVersion) || len(rep.Errors()) > 0 {
						return cli.PrintValidation(io.Stderr, args[0], rep, false)
					}
					return err
				}
				fmt.Fprintf(io.Stdout, "rendered %s into %s\n", args[0], *out)
				for _, w := range rep.Warnings() {
					fmt.Fprintf(io.Stdout, "  warning: %s\n", w.Error())
				}
				return nil
			}
		},
	}
}

func importCommand(d deps) *cli.Command {
	var asJSON *bool
	return deviceCommand(d, cli.Command{
		Name:  "import",
		Args:  "PATH",
		Short: "apply a config.toml or bundle locally, through the same pipeline and lock as a job",
		Long: `Runs the whole pipeline on this device: recover, unpack, validate, render, promote,
deploy, activate, and commit or roll back. Prints every event. The job is recorded in the
job history like any other. Exit status 1 when the job failed.`,
	}, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print the final job record as JSON")
	}, func(ctx context.Context, args []string, dc deviceCtx) error {
		if len(args) != 1 {
			return cli.Usagef("expected exactly one PATH")
		}
		in, err := os.Open(args[0])
		if err != nil {
			return fmt.Errorf("reading input: %w", err)
		}
		defer in.Close()
		m, _, err := openJobs(ctx, dc.p, dc.df.jobsDir(), dc.log)
		if err != nil {
			return err
		}
		j, events, cancel, err := m.SubmitWatch(jobs.Spec{Op: "apply", Source: "cli", Mutating: true, Run: provision.JobFunc(dc.p, provision.Input{Reader: in})})
		if err != nil {
			return err
		}
		defer cancel()
		if !*asJSON {
			fmt.Fprintf(dc.stdio.Stdout, "job %s\n", j.ID)
			for ev := range events {
				cli.PrintEvent(dc.stdio.Stdout, ev)
			}
		}
		final, err := m.Wait(ctx, j.ID)
		if err != nil {
			return err
		}
		return printJob(dc.stdio.Stdout, final, *asJSON)
	})
}

func printJob(w io.Writer, j record.Job, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(j); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(w, "job %s %s", j.ID, j.State)
		if j.Error != "" {
			fmt.Fprintf(w, ": %s", j.Error)
		}
		if j.RollbackStatus != "" {
			fmt.Fprintf(w, " (rollback: %s)", j.RollbackStatus)
		}
		fmt.Fprintln(w)
		if j.Result != nil {
			for _, warn := range j.Result.Warnings {
				fmt.Fprintf(w, "  warning: %s\n", warn)
			}
		}
	}
	if j.State != record.Succeeded {
		return cli.Exit(cli.ExitFailed, cli.ErrReported)
	}
	return nil
}

// deviceCtx is what a local admin command runs with.
type deviceCtx struct {
	p     *provision.Provisioner
	df    *deviceFlags
	log   *slog.Logger
	stdio cli.IO
}

// deviceCommand is a local admin command on the device: c's names and help, the common
// device flags plus the command's own (flags may be nil), a logger and the provisioner,
// then run.
func deviceCommand(d deps, c cli.Command, flags func(*flag.FlagSet), run func(ctx context.Context, args []string, dc deviceCtx) error) *cli.Command {
	c.Setup = func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
		df := &deviceFlags{deps: d}
		df.register(fs, "warn")
		if flags != nil {
			flags(fs)
		}
		return func(ctx context.Context, args []string, stdio cli.IO) error {
			log, err := df.logger(stdio)
			if err != nil {
				return err
			}
			p, _, err := df.provisioner(log)
			if err != nil {
				return err
			}
			return run(ctx, args, deviceCtx{p: p, df: df, log: log, stdio: stdio})
		}
	}
	return &c
}

// noArgs wraps a command body that takes no positional arguments.
func noArgs(name string, run func(ctx context.Context, dc deviceCtx) error) func(context.Context, []string, deviceCtx) error {
	return func(ctx context.Context, args []string, dc deviceCtx) error {
		if len(args) != 0 {
			return cli.Usagef("%s takes no arguments", name)
		}
		return run(ctx, dc)
	}
}

// eventPrinter prints pipeline events as they come.
func eventPrinter(stdio cli.IO) func(record.Event) {
	return func(e record.Event) {
		cli.PrintEvent(stdio.Stdout, record.Event{Step: e.Step, Service: e.Service, Mode: e.Mode, Status: e.Status, Message: e.Message})
	}
}

func recoverCommand(d deps) *cli.Command {
	return deviceCommand(d, cli.Command{Name: "recover", Short: "run crash recovery on the state dir (also done at every start and before every apply)"}, nil,
		noArgs("recover", func(ctx context.Context, dc deviceCtx) error {
			_, act, err := openJobs(ctx, dc.p, dc.df.jobsDir(), dc.log)
			if err != nil {
				return err
			}
			fmt.Fprintf(dc.stdio.Stdout, "recovery: %s\n", act)
			return nil
		}))
}

func syncCommand(d deps) *cli.Command {
	return deviceCommand(d, cli.Command{Name: "sync-quadlet", Short: "re-sync the active units into the Quadlet dirs, reload and restart them"}, nil,
		noArgs("sync-quadlet", func(ctx context.Context, dc deviceCtx) error {
			err := dc.p.SyncQuadlet(ctx, eventPrinter(dc.stdio))
			if errors.Is(err, state.ErrNoActive) {
				return fmt.Errorf("nothing to sync: the device is not provisioned")
			}
			return err
		}))
}

func healthCommand(d deps) *cli.Command {
	return deviceCommand(d, cli.Command{Name: "check-health", Short: "run the required-health checks of the active config; exit 1 if unhealthy"}, nil,
		noArgs("check-health", func(ctx context.Context, dc deviceCtx) error {
			err := dc.p.CheckHealth(ctx, eventPrinter(dc.stdio))
			if errors.Is(err, state.ErrNoActive) {
				return fmt.Errorf("not provisioned: no active config")
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(dc.stdio.Stdout, "healthy")
			return nil
		}))
}

func statusCommand(d deps) *cli.Command {
	var asJSON *bool
	return deviceCommand(d, cli.Command{Name: "status", Short: "provisioned?, config digest, drift, last jobs"},
		func(fs *flag.FlagSet) { asJSON = fs.Bool("json", false, "print as JSON") },
		noArgs("status", func(ctx context.Context, dc deviceCtx) error {
			cur, err := dc.p.Current(ctx)
			if err != nil {
				return err
			}
			recs, err := jobs.ReadRecords(dc.df.jobsDir())
			if err != nil {
				return err
			}
			if len(recs) > 5 {
				recs = recs[:5]
			}
			if *asJSON {
				cur.Config = nil
				b, _ := json.MarshalIndent(map[string]any{"state": cur, "last_jobs": recs}, "", "  ")
				dc.stdio.Stdout.Write(append(b, '\n'))
				return nil
			}
			var b bytes.Buffer
			fmt.Fprintf(&b, "state dir:    %s\nprovisioned:  %v\n", dc.df.stateDir, cur.Provisioned)
			if cur.Provisioned {
				fmt.Fprintf(&b, "config:       sha256 %s\n", cur.Digest)
				if len(cur.Drift) == 0 {
					fmt.Fprintf(&b, "drift:        none\n")
				}
				for _, f := range cur.Drift {
					fmt.Fprintf(&b, "drift:        %s\n", f)
				}
			}
			for _, j := range recs {
				fmt.Fprintf(&b, "job:          %s %-6s %-9s %s %s\n", j.SubmittedAt.Format("2006-01-02T15:04:05Z"), j.Op, j.State, j.ID, j.Error)
			}
			dc.stdio.Stdout.Write(b.Bytes())
			return nil
		}))
}
