package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/messaging/blob"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

func lsCommand(name string) *cli.Command {
	return &cli.Command{
		Name:  name,
		Args:  "[--group G | --device ID...]",
		Short: "discover devices: id, groups, provisioned, config digest, last job, drift",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, false)
			var tf targetFlags
			tf.register(fs)
			discovery := fs.Duration("discovery-timeout", 3*time.Second, "upper bound for discovery (it ends 300ms after the last reply)")
			asJSON := fs.Bool("json", false, "print as JSON")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				t, err := tf.target(false)
				if err != nil {
					return err
				}
				if len(t.Devices) == 0 && t.Group == "" {
					t.All = true
				}
				cf.named = len(t.Devices) > 0
				cl, done, err := cf.client(stdio, false)
				if err != nil {
					return err
				}
				defer done()
				var found []wire.Presence
				if len(t.Devices) > 0 {
					for _, d := range t.Devices {
						p, err := cl.Ping(ctx, d, cf.timeout)
						if err != nil {
							fmt.Fprintf(stdio.Stderr, "%s: %v\n", d, err)
							continue
						}
						found = append(found, p)
					}
				} else if found, err = cl.Discover(ctx, t, 300*time.Millisecond, *discovery); err != nil {
					return err
				}
				if *asJSON {
					b, _ := json.MarshalIndent(found, "", "  ")
					fmt.Fprintf(stdio.Stdout, "%s\n", b)
				} else {
					tw := tabwriter.NewWriter(stdio.Stdout, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "DEVICE\tGROUPS\tPROVISIONED\tCONFIG\tLAST JOB\tDRIFT\tHUB\tVERSION\tENROLMENT")
					for _, p := range found {
						cfg := "-"
						if len(p.ConfigSHA256) >= 12 {
							cfg = p.ConfigSHA256[:12]
						}
						last := "-"
						if p.LastJob != nil {
							last = fmt.Sprintf("%s %s %s", p.LastJob.Op, p.LastJob.State, p.LastJob.Code)
						}
						hub := "-"
						if p.Hub != nil {
							hub = map[bool]string{true: "up", false: "down"}[*p.Hub]
						}
						enr := p.Enrollment
						if enr == "" {
							enr = "-"
						}
						fmt.Fprintf(tw, "%s\t%v\t%v\t%s\t%s\t%v\t%s\t%s\t%s\n", p.Device, p.Groups, p.Provisioned, cfg, last, p.Drift, hub, p.Version, enr)
					}
					tw.Flush()
				}
				if len(found) == 0 {
					return cli.Exit(cli.ExitUnreachable, fmt.Errorf("no device answered"))
				}
				return nil
			}
		},
	}
}

func jobCommand() *cli.Command {
	return &cli.Command{
		Name:  "job",
		Args:  "ID --device DEVICE [--watch]",
		Short: "show a job's state and events (--watch follows it to the end)",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, false)
			dev := fs.String("device", "", "the device that runs the job (required)")
			watch := fs.Bool("watch", false, "follow the job until it finishes")
			asJSON := fs.Bool("json", false, "print the job record as JSON")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				if len(args) != 1 || *dev == "" {
					return cli.Usagef("expected a job ID and --device")
				}
				cf.named = true
				cl, done, err := cf.client(stdio, false)
				if err != nil {
					return err
				}
				defer done()
				id := args[0]
				var events <-chan wire.EventMsg
				if *watch {
					ch, stop, err := cl.WatchJob(*dev, id)
					if err != nil {
						return err
					}
					defer stop()
					events = ch
				}
				j, err := cl.Job(ctx, *dev, id, cf.timeout)
				if err != nil {
					return queryErr(err)
				}
				if !*asJSON {
					for _, e := range j.Events {
						cli.PrintEvent(stdio.Stdout, e)
					}
				}
				if *watch && !j.State.Finished() {
					for m := range events {
						if m.Event != nil && !*asJSON {
							cli.PrintEvent(stdio.Stdout, *m.Event)
						}
						if m.Done && m.Job != nil {
							j = *m.Job
						}
					}
					if !j.State.Finished() {
						if j, err = cl.Job(ctx, *dev, id, cf.timeout); err != nil {
							return queryErr(err)
						}
					}
				}
				if *asJSON {
					b, _ := json.MarshalIndent(j, "", "  ")
					fmt.Fprintf(stdio.Stdout, "%s\n", b)
				} else {
					fmt.Fprintf(stdio.Stdout, "job %s on %s: %s", j.ID, *dev, j.State)
					if j.Error != "" {
						fmt.Fprintf(stdio.Stdout, ": %s", j.Error)
					}
					if j.RollbackStatus != "" {
						fmt.Fprintf(stdio.Stdout, " (rollback %s)", j.RollbackStatus)
					}
					fmt.Fprintln(stdio.Stdout)
				}
				if j.State == "failed" {
					return cli.Exit(cli.ExitFailed, cli.ErrReported)
				}
				return nil
			}
		},
	}
}

func queryErr(err error) error {
	switch {
	case errors.Is(err, fleet.ErrNoReply):
		return cli.Exit(cli.ExitUnreachable, err)
	case errors.Is(err, wire.ErrUnauthorized):
		return cli.Exit(cli.ExitUnauthorized, err)
	case errors.Is(err, fleet.ErrImpostor):
		return cli.Exit(cli.ExitImpostor, err)
	}
	return err
}

// signedQuery sends a signed read-only op to one device and returns the reply data.
func signedQuery(ctx context.Context, cf *connFlags, stdio cli.IO, dev, op string, body []byte) (json.RawMessage, error) {
	ct := envelope.TypeNone
	if body != nil {
		ct = envelope.TypeJSON
	}
	cf.named = true
	cl, closeFn, err := cf.client(stdio, true)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	return sendSigned(ctx, cl, cf, dev, op, fleet.Payload{Data: body, ContentType: ct})
}

// sendSigned sends op with an inline payload to one device over cl and returns its
// verified answer's data (errors mapped to exit codes).
func sendSigned(ctx context.Context, cl *fleet.Client, cf *connFlags, dev, op string, p fleet.Payload) (json.RawMessage, error) {
	env := cl.NewEnvelope(op, dev, "", p)
	env.Payload = p.Data
	subj, err := subjects.Build(subjects.Subject{Fleet: cf.fleetName, Kind: subjects.Device, Name: dev, Op: op})
	if err != nil {
		return nil, cli.Usagef("%v", err)
	}
	r, err := cl.Send(ctx, subj, env, cf.timeout)
	if err == nil {
		err = r.Err()
	}
	if err != nil {
		return nil, queryErr(err)
	}
	return r.Data, nil
}

// deviceOpCommand is the command named op that sends that signed op, with no arguments,
// to one device (--device) and shows the device's answer.
func deviceOpCommand(op, short, long string, show func(stdio cli.IO, dev string, data json.RawMessage)) *cli.Command {
	return &cli.Command{
		Name:  op,
		Args:  "--device ID",
		Short: short,
		Long:  long,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, true)
			dev := fs.String("device", "", "device id (required)")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				if *dev == "" {
					return cli.Usagef("--device is required")
				}
				data, err := signedQuery(ctx, &cf, stdio, *dev, op, nil)
				if err != nil {
					return err
				}
				show(stdio, *dev, data)
				return nil
			}
		},
	}
}

func currentCommand() *cli.Command {
	return deviceOpCommand("current", "read back a device's desired state (normalized, as JSON) and its drift report", "",
		func(stdio cli.IO, _ string, data json.RawMessage) {
			var v any
			json.Unmarshal(data, &v)
			b, _ := json.MarshalIndent(v, "", "  ")
			fmt.Fprintf(stdio.Stdout, "%s\n", b)
		})
}

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Args:  "--device ID -o FILE",
		Short: "download a device's active config as a bundle (tar.zst with files/) or --format toml",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, true)
			dev := fs.String("device", "", "device id (required)")
			out := fs.String("o", "", "output file (required; - for stdout)")
			format := fs.String("format", "bundle", "bundle (tar.zst) or toml")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				if *dev == "" || *out == "" {
					return cli.Usagef("--device and -o are required")
				}
				body, _ := json.Marshal(map[string]string{"format": *format})
				data, err := signedQuery(ctx, &cf, stdio, *dev, "export", body)
				if err != nil {
					return err
				}
				var res wire.ExportResult
				if err := json.Unmarshal(data, &res); err != nil {
					return fmt.Errorf("decoding export: %w", err)
				}
				var b []byte
				if res.Payload != nil {
					nc, err := cf.connect()
					if err != nil {
						return err
					}
					defer nc.Close()
					var buf bytes.Buffer
					if err := blob.Fetch(ctx, nc, res.Payload.Subject, res.Payload.Size, 1<<30, 0, &buf); err != nil {
						return err
					}
					b = buf.Bytes()
				} else if b, err = base64.StdEncoding.DecodeString(res.Inline); err != nil {
					return fmt.Errorf("decoding export: %w", err)
				}
				if envelope.Digest(b) != res.SHA256 {
					return fmt.Errorf("export sha256 mismatch")
				}
				if *out == "-" {
					_, err = stdio.Stdout.Write(b)
					return err
				}
				if err := os.WriteFile(*out, b, 0o600); err != nil {
					return err
				}
				fmt.Fprintf(stdio.Stderr, "wrote %s (%d bytes, %s, sha256 %s)\n", *out, len(b), res.Format, res.SHA256[:12])
				if v, err := check.Input(ctx, bytes.NewReader(b), check.Options{}); err == nil && len(v.Model.Secrets) > 0 {
					fmt.Fprintf(stdio.Stderr, "note: secret values are never exported (%s); re-applying this export needs them again: --secrets DIR or --secret NAME=@FILE\n",
						strings.Join(v.Model.SecretNames(), ", "))
				}
				return nil
			}
		},
	}
}

func confirmCommand() *cli.Command {
	return deviceOpCommand("confirm", "confirm a network or firewall change that waits for an operator (activation.confirm = \"operator\")",
		`An apply that changes a device's network or firewall settings keeps the previous state
until the device proves it is still reachable, or rolls back by itself when
activation.confirm_seconds pass. With activation.confirm = "operator" the proof is this
command: a signed confirm, by an admin of the new config, that reached the device. Exit 0
when the device took it; 1, with the device's answer, when nothing awaits confirmation
there (the window closed and the change rolled back, or it was never a network change).`,
		func(stdio cli.IO, dev string, _ json.RawMessage) {
			fmt.Fprintf(stdio.Stdout, "%s: network change confirmed\n", dev)
		})
}
