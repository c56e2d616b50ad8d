package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/state"
)

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:  "render",
		Args:  "PATH --out DIR",
		Short: "write the derived files and Quadlet units an apply would install (a dry-run plan)",
		Long: `Validates PATH (config.toml or bundle) and writes into DIR what an apply would put in
the active config dir: config.toml, users.json, firewall/network/LAN JSON, allowed_signers,
quadlet/<rootful|rootless>/*, quadlet-runtime.json. Nothing else is touched.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			out := fs.String("out", "", "directory to write into (required)")
			configDir := fs.String("config-dir", provision.DefaultConfigDir, "runtime path ${CONFIG_DIR} is rendered as")
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
				rep, err := provision.RenderTo(ctx, f, *out, provision.ValidateOptions{Config: config.Options{AppUser: *appUser}, ConfigDir: *configDir})
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
	return &cli.Command{
		Name:  "import",
		Args:  "PATH",
		Short: "apply a config.toml or bundle locally, through the same pipeline and lock as a job",
		Long: `Runs the whole pipeline on this device: recover, unpack, validate, render, promote,
deploy, activate, and commit or roll back. Prints every event. The job is recorded in the
job history like any other. Exit status 1 when the job failed.`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var df deviceFlags
			df.register(fs, "warn")
			df.deps = d
			asJSON := fs.Bool("json", false, "print the final job record as JSON")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				if len(args) != 1 {
					return cli.Usagef("expected exactly one PATH")
				}
				log, err := df.logger(stdio)
				if err != nil {
					return err
				}
				p, _, err := df.provisioner(log)
				if err != nil {
					return err
				}
				in, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("reading input: %w", err)
				}
				defer in.Close()
				m, _, err := openJobs(ctx, p, df.jobsDir(), log)
				if err != nil {
					return err
				}
				j, events, cancel, err := m.SubmitWatch(jobs.Spec{Op: "apply", Source: "cli", Mutating: true, Run: provision.JobFunc(p, provision.Input{Reader: in})})
				if err != nil {
					return err
				}
				defer cancel()
				if !*asJSON {
					fmt.Fprintf(stdio.Stdout, "job %s\n", j.ID)
					for ev := range events {
						printEvent(stdio.Stdout, ev)
					}
				}
				final, err := m.Wait(ctx, j.ID)
				if err != nil {
					return err
				}
				return printJob(stdio.Stdout, final, *asJSON)
			}
		},
	}
}

func printEvent(w io.Writer, ev jobs.Event) {
	line := fmt.Sprintf("  %7.3fs  %-17s", ev.ElapsedSeconds, ev.Step)
	if ev.Service != "" {
		line += " " + ev.Service
		if ev.Mode != "" {
			line += " (" + ev.Mode + ")"
		}
	}
	if ev.Status != "" {
		line += " " + ev.Status
	}
	if ev.Message != "" {
		line += ": " + ev.Message
	}
	fmt.Fprintln(w, line)
}

func printJob(w io.Writer, j jobs.Job, asJSON bool) error {
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
	if j.State != jobs.Succeeded {
		return cli.Exit(cli.ExitFailed, cli.ErrReported)
	}
	return nil
}

// deviceCommand is a local admin command on the device: the common device flags, a
// logger and the provisioner, then run.
func deviceCommand(d deps, name, short string, run func(ctx context.Context, p *provision.Provisioner, df *deviceFlags, stdio cli.IO) error) *cli.Command {
	return &cli.Command{
		Name:  name,
		Short: short,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			df := &deviceFlags{deps: d}
			df.register(fs, "warn")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				if len(args) != 0 {
					return cli.Usagef("%s takes no arguments", name)
				}
				log, err := df.logger(stdio)
				if err != nil {
					return err
				}
				p, _, err := df.provisioner(log)
				if err != nil {
					return err
				}
				return run(ctx, p, df, stdio)
			}
		},
	}
}

// eventPrinter prints pipeline events as they come.
func eventPrinter(stdio cli.IO) func(provision.Event) {
	return func(e provision.Event) {
		printEvent(stdio.Stdout, jobs.Event{Step: e.Step, Service: e.Service, Mode: e.Mode, Status: e.Status, Message: e.Message})
	}
}

func recoverCommand(d deps) *cli.Command {
	return deviceCommand(d, "recover", "run crash recovery on the state dir (also done at every start and before every apply)",
		func(ctx context.Context, p *provision.Provisioner, df *deviceFlags, stdio cli.IO) error {
			log, _ := df.logger(stdio)
			_, act, err := openJobs(ctx, p, df.jobsDir(), log)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Stdout, "recovery: %s\n", act)
			return nil
		})
}

func syncCommand(d deps) *cli.Command {
	return deviceCommand(d, "sync-quadlet", "re-sync the active units into the Quadlet dirs, reload and restart them",
		func(ctx context.Context, p *provision.Provisioner, df *deviceFlags, stdio cli.IO) error {
			err := p.SyncQuadlet(ctx, eventPrinter(stdio))
			if errors.Is(err, state.ErrNoActive) {
				return fmt.Errorf("nothing to sync: the device is not provisioned")
			}
			return err
		})
}

func healthCommand(d deps) *cli.Command {
	return deviceCommand(d, "check-health", "run the required-health checks of the active config; exit 1 if unhealthy",
		func(ctx context.Context, p *provision.Provisioner, df *deviceFlags, stdio cli.IO) error {
			err := p.CheckHealth(ctx, eventPrinter(stdio))
			if errors.Is(err, state.ErrNoActive) {
				return fmt.Errorf("not provisioned: no active config")
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(stdio.Stdout, "healthy")
			return nil
		})
}

func statusCommand(d deps) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Short: "provisioned?, config digest, drift, last jobs",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var df deviceFlags
			df.register(fs, "warn")
			df.deps = d
			asJSON := fs.Bool("json", false, "print as JSON")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				log, err := df.logger(stdio)
				if err != nil {
					return err
				}
				p, _, err := df.provisioner(log)
				if err != nil {
					return err
				}
				cur, err := p.Current(ctx)
				if err != nil {
					return err
				}
				recs, err := jobs.ReadRecords(df.jobsDir())
				if err != nil {
					return err
				}
				if len(recs) > 5 {
					recs = recs[:5]
				}
				if *asJSON {
					cur.Config = nil
					b, _ := json.MarshalIndent(map[string]any{"state": cur, "last_jobs": recs}, "", "  ")
					stdio.Stdout.Write(append(b, '\n'))
					return nil
				}
				var b bytes.Buffer
				fmt.Fprintf(&b, "state dir:    %s\nprovisioned:  %v\n", df.stateDir, cur.Provisioned)
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
				stdio.Stdout.Write(b.Bytes())
				return nil
			}
		},
	}
}
