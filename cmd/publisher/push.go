package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

func pushCommand() *cli.Command {
	return &cli.Command{
		Name:  "push",
		Args:  "PATH (--device ID... | --group G | --all)",
		Short: "validate, sign and deliver an apply to devices, with batches and canaries",
		Long: `PATH is a config.toml or a .tar.gz/.tar.zst bundle. It is validated locally first (the
worker's own rules), then one envelope per device is signed (so one device's envelope is
useless to another) and delivered. --group and --all first discover the devices (ping).

Secrets: --secrets DIR (one file per secret, named after it) or --secret NAME=@FILE give
the values of the secrets the config declares. They are sealed to each device's enrolled
identity key (publisher enroll); a device that is not enrolled is reported as unenrolled
and gets nothing. Values not given keep what the device has.

Rollouts: --canary N runs the first N devices alone and stops unless all succeeded;
--batch N or N% limits the devices in flight; --batch-sleep pauses between batches;
--max-failures N or N% stops starting new devices once more have failed.

Durable desired state: when the hub runs JetStream (as 'publisher nats init' sets it up),
each device's envelope is also its desired state, stored on the hub (--durable auto, the
default; on: refuse to push without it; off: one-shot requests only). A device that is
off or cut off during the push is 'offline', not failed: it converges by itself when it
comes back, on the newest state only, and never goes back to an older one. A complete
rollout to a group or all also stores that group's or the fleet's desired state, for
devices that join later. --wait N or N% waits (up to --timeout) until that many devices
have converged. --revert-on-failure: when --canary or --max-failures stops the rollout,
the devices that already took the new state get their previous desired state back.
'publisher status' shows every device's desired state against what it applied.

Plan: --plan applies nothing. Each --device gets the payload in a signed validate op and
answers with what an apply would change there, computed against its active state and its
host without changing them: Quadlet units added, changed or removed, and host steps
(accounts, SSH keys, network/NTP/dnsmasq files, the firewall table, services), and whether
the change would await a commit-confirm. Exit 1 if a device would refuse it.

Output: a live view on a terminal, plain lines otherwise, --json (summary) or --jsonl
(every state change) for scripts. Exit status 0 only if every device succeeded (durable:
or is offline, and --wait was met); 1 if any failed, rolled back, was busy or rejected; 3 if no device answered; 4 if all were
unauthorized; 5 if a device's answer was not signed by its enrolled key (impostor).`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, true)
			var tf targetFlags
			tf.register(fs)
			batch := fs.String("batch", "", "devices in flight at once: N or N% (default: all)")
			batchSleep := fs.Duration("batch-sleep", 0, "pause between batches")
			canary := fs.Int("canary", 0, "run the first N devices alone first; stop unless all succeed")
			maxFail := fs.String("max-failures", "", "stop starting devices once more than N (or N%) failed (default: no limit)")
			timeout := fs.Duration("timeout", 5*time.Minute, "per device, from send to final result")
			discovery := fs.Duration("discovery-timeout", 3*time.Second, "how long --group/--all discovery may take")
			detach := fs.Bool("detach", false, "return once every device accepted, printing job ids")
			asJSON := fs.Bool("json", false, "print the summary as JSON")
			asJSONL := fs.Bool("jsonl", false, "print every device state change as a JSON line")
			noValidate := fs.Bool("no-validate", false, "skip local validation")
			plan := fs.Bool("plan", false, "apply nothing: show what an apply would change on each --device (units, accounts, keys, files, firewall), as the device itself plans it")
			var df durableFlags
			df.register(fs)
			var sf secretFlags
			sf.register(fs)
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				if len(args) != 1 {
					return cli.Usagef("expected exactly one PATH")
				}
				target, err := tf.target(cf.via == "")
				if err != nil {
					return err
				}
				o := fleet.PushOptions{Target: target, BatchSleep: *batchSleep, Canary: *canary, Timeout: *timeout, Detach: *detach,
					Discovery: *discovery, ReplyTimeout: cf.timeout}
				if o.Batch, err = parseCount(*batch); err != nil {
					return cli.Usagef("--batch: %v", err)
				}
				if *maxFail != "" {
					c, err := parseCount(*maxFail)
					if err != nil {
						return cli.Usagef("--max-failures: %v", err)
					}
					o.MaxFailures = &c
				}
				raw, err := os.ReadFile(args[0])
				if err != nil {
					return cli.Usagef("reading %s: %v", args[0], err)
				}
				if o.Secrets, err = sf.values(stdio.Stdin); err != nil {
					return err
				}
				if !*noValidate {
					v, err := check.Input(ctx, bytes.NewReader(raw), check.Options{})
					rep := v.Report
					if err != nil {
						return cli.PrintValidation(stdio.Stderr, args[0], rep, false)
					}
					if err := checkDeclared(o.Secrets, v.Model, args[0]); err != nil {
						return err
					}
				}
				o.Payload = fleet.Payload{Data: raw, ContentType: contentType(raw)}
				if *plan {
					var conflict []string
					fs.Visit(func(f *flag.Flag) {
						switch f.Name {
						case "batch", "batch-sleep", "canary", "max-failures", "detach", "jsonl", "durable", "wait", "resume", "revert-on-failure":
							conflict = append(conflict, "--"+f.Name)
						}
					})
					if len(conflict) > 0 {
						return cli.Usagef("--plan applies nothing: %s do not go with it", strings.Join(conflict, ", "))
					}
					if len(target.Devices) == 0 {
						return cli.Usagef("--plan needs --device (each named device plans the change against its own state)")
					}
					if len(o.Secrets) > 0 {
						return cli.Usagef("--plan sends no secrets: drop --secret/--secrets")
					}
					return planPush(ctx, &cf, stdio, target.Devices, o.Payload, *asJSON)
				}
				if err := df.apply(&o); err != nil {
					return err
				}
				return rollout(ctx, &cf, stdio, o, &df, *asJSON, *asJSONL)
			}
		},
	}
}

// rollout connects, pushes o to its target with a live view, and reports the summary
// (push, patch and secrets set all end here). Through --via with no device named, the
// target is the one device behind the bridge.
func rollout(ctx context.Context, cf *connFlags, stdio cli.IO, o fleet.PushOptions, df *durableFlags, asJSON, asJSONL bool) error {
	if cf.via != "" && len(o.Target.Devices) == 0 {
		o.Target.All = true
	}
	cf.named = len(o.Target.Devices) > 0
	cl, done, err := cf.client(stdio, true)
	if err != nil {
		return err
	}
	defer done()
	if err := df.open(ctx, cl, &o); err != nil {
		return err
	}
	view := newView(stdio.Stdout, asJSON, asJSONL)
	sum, err := cl.Push(ctx, o, view.update)
	view.finish()
	if err != nil {
		return err
	}
	return report(stdio.Stdout, sum, asJSON, asJSONL)
}

func contentType(raw []byte) string {
	switch bundle.Detect(raw) {
	case bundle.FormatZstd:
		return envelope.TypeZstd
	case bundle.FormatGzip:
		return envelope.TypeGzip
	}
	return envelope.TypeTOML
}

// parseCount reads N or N%.
func parseCount(s string) (fleet.Count, error) {
	if s == "" {
		return fleet.Count{}, nil
	}
	pct := strings.HasSuffix(s, "%")
	n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
	if err != nil || n < 0 || (pct && n > 100) {
		return fleet.Count{}, fmt.Errorf("expected N or N%% (0..100), got %q", s)
	}
	return fleet.Count{N: n, Percent: pct}, nil
}

// view renders progress: redrawn on a terminal, plain lines otherwise, JSON lines on
// request, nothing for --json.
type view struct {
	w        io.Writer
	mode     string // live, plain, jsonl, quiet
	mu       sync.Mutex
	states   map[string]fleet.DeviceState
	order    []string
	drawn    int
	lastDraw time.Time
	start    time.Time
}

func newView(w io.Writer, asJSON, asJSONL bool) *view {
	v := &view{w: w, mode: "plain", states: map[string]fleet.DeviceState{}, start: time.Now()}
	switch {
	case asJSON:
		v.mode = "quiet"
	case asJSONL:
		v.mode = "jsonl"
	default:
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			v.mode = "live"
		}
	}
	return v
}

func (v *view) update(s fleet.DeviceState) {
	v.mu.Lock()
	defer v.mu.Unlock()
	prev, seen := v.states[s.Device]
	if !seen {
		v.order = append(v.order, s.Device)
	}
	v.states[s.Device] = s
	switch v.mode {
	case "jsonl":
		b, _ := json.Marshal(s)
		fmt.Fprintf(v.w, "%s\n", b)
	case "plain":
		if !seen || prev.State != s.State {
			line := fmt.Sprintf("%s %-10s %s", time.Now().Format("15:04:05"), s.State, s.Device)
			if s.Error != "" {
				line += ": " + s.Error
			}
			fmt.Fprintln(v.w, line)
		}
	case "live":
		if time.Since(v.lastDraw) > 100*time.Millisecond || s.Final() {
			v.draw()
		}
	}
}

func (v *view) draw() {
	if v.drawn > 0 {
		fmt.Fprintf(v.w, "\x1b[%dA\x1b[J", v.drawn)
	}
	done, total := 0, len(v.order)
	counts := map[string]int{}
	for _, d := range v.order {
		s := v.states[d]
		counts[s.State]++
		if s.Final() {
			done++
		}
	}
	width := 30
	fill := 0
	if total > 0 {
		fill = width * done / total
	}
	lines := []string{fmt.Sprintf("[%s%s] %d/%d  %s  %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, total,
		time.Since(v.start).Round(100*time.Millisecond), countLine(counts))}
	shown := 0
	for _, d := range v.order {
		s := v.states[d]
		if s.Final() && total > 12 {
			continue
		}
		if shown == 12 {
			lines = append(lines, fmt.Sprintf("  … %d more", total-shown))
			break
		}
		lines = append(lines, fmt.Sprintf("  %-24s %-11s %s", d, s.State, s.Stage))
		shown++
	}
	for _, l := range lines {
		fmt.Fprintln(v.w, l)
	}
	v.drawn = len(lines)
	v.lastDraw = time.Now()
}

func (v *view) finish() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mode == "live" {
		v.draw()
	}
}

func countLine(counts map[string]int) string {
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
	}
	return strings.Join(parts, " ")
}

// report prints the summary and maps it to an exit code.
func report(w io.Writer, sum fleet.Summary, asJSON, asJSONL bool) error {
	switch {
	case asJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(sum)
	case asJSONL:
		b, _ := json.Marshal(map[string]any{"summary": sum})
		fmt.Fprintf(w, "%s\n", b)
	default:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE\tSTATE\tJOB\tSECONDS\tDETAIL")
		for _, d := range sum.Devices {
			detail := d.Error
			if d.RollbackStatus != "" {
				detail += " (rollback " + string(d.RollbackStatus) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\n", d.Device, d.State, d.JobID, d.Seconds, strings.TrimSpace(detail))
		}
		tw.Flush()
		fmt.Fprintf(w, "%d device(s): %s\n", len(sum.Devices), countLine(sum.Counts))
		if sum.Stopped != "" {
			fmt.Fprintf(w, "rollout stopped: %s\n", sum.Stopped)
		}
		if sum.Durable {
			fmt.Fprintf(w, "stored as desired state on the hub")
			if n := sum.Counts[fleet.StateOffline]; n > 0 {
				fmt.Fprintf(w, "; %d offline device(s) converge when they come back ('publisher status' follows them)", n)
			}
			fmt.Fprintln(w)
		}
		if sum.Note != "" {
			fmt.Fprintf(w, "note: %s\n", sum.Note)
		}
	}
	switch {
	case len(sum.Devices) == 0:
		return cli.Exit(cli.ExitUnreachable, fmt.Errorf("no device answered"))
	case sum.OK():
		return nil
	}
	for _, d := range sum.Devices {
		if d.State == fleet.StateImpostor {
			return cli.Exit(cli.ExitImpostor, cli.ErrReported)
		}
	}
	unauthorized := true
	for _, d := range sum.Devices {
		if d.Code != wire.ErrUnauthorized.Code {
			unauthorized = false
		}
	}
	if unauthorized {
		return cli.Exit(cli.ExitUnauthorized, cli.ErrReported)
	}
	noReply := true
	for _, d := range sum.Devices {
		if d.State != fleet.StateNoReply {
			noReply = false
		}
	}
	if noReply {
		return cli.Exit(cli.ExitUnreachable, cli.ErrReported)
	}
	return cli.Exit(cli.ExitFailed, cli.ErrReported)
}
