package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/secrets"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// secretFlags are --secrets DIR and --secret NAME=@FILE.
type secretFlags struct {
	dir   string
	items listFlag
}

func (s *secretFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.dir, "secrets", "", "directory of secret values: each regular file's name is the secret's name, its content the value")
	fs.Var(&s.items, "secret", "NAME=@FILE (repeatable): a secret's value from FILE (@- reads stdin)")
}

func (s *secretFlags) set() bool { return s.dir != "" || len(s.items) > 0 }

// values reads the secret values the flags name (nil when none). Values are sealed to
// each device before they leave this process.
func (s *secretFlags) values(stdin io.Reader) (secrets.Values, error) {
	if !s.set() {
		return nil, nil
	}
	v := secrets.Values{}
	add := func(name string, b []byte, from string) error {
		if !config.ValidSecretName(name) {
			return cli.Usagef("%s: invalid secret name %q: must match ^[a-z0-9][a-z0-9_.-]{0,62}$", from, name)
		}
		if _, dup := v[name]; dup {
			return cli.Usagef("%s: secret %s is given twice", from, name)
		}
		if len(b) > secrets.MaxValue {
			return cli.Usagef("%s: secret %s is %d bytes (limit %d)", from, name, len(b), secrets.MaxValue)
		}
		v[name] = b
		return nil
	}
	if s.dir != "" {
		entries, err := os.ReadDir(s.dir)
		if err != nil {
			return nil, cli.Usagef("--secrets: %v", err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			if !e.Type().IsRegular() {
				// Skipping it would leave that secret's old value in place, unsaid.
				return nil, cli.Usagef("--secrets %s: %s is not a regular file (links and directories are not followed)", s.dir, e.Name())
			}
			b, err := readSecretFile(filepath.Join(s.dir, e.Name()))
			if err != nil {
				return nil, cli.Usagef("--secrets: %v", err)
			}
			if err := add(e.Name(), b, "--secrets "+s.dir); err != nil {
				return nil, err
			}
		}
		if len(v) == 0 {
			return nil, cli.Usagef("--secrets %s holds no files", s.dir)
		}
	}
	stdinUsed := false
	for _, it := range s.items {
		name, src, ok := strings.Cut(it, "=")
		if !ok || !strings.HasPrefix(src, "@") {
			// Never echo it: it may be the value itself.
			return nil, cli.Usagef("--secret %s: expected NAME=@FILE (a value on the command line would land in shell history and ps)", name)
		}
		var b []byte
		var err error
		if src == "@-" {
			if stdinUsed {
				return nil, cli.Usagef("--secret %s=@-: standard input is already the value of another secret", name)
			}
			stdinUsed = true
			b, err = io.ReadAll(io.LimitReader(stdin, secrets.MaxValue+1))
		} else {
			b, err = readSecretFile(src[1:])
		}
		if err != nil {
			return nil, cli.Usagef("--secret %s: %v", name, err)
		}
		if err := add(name, b, "--secret"); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// readSecretFile reads one value: a regular file (state.ReadRegularIn: a link only within
// the file's directory, no blocking on a FIFO), at most MaxValue+1 bytes, so the size
// check that follows sees an oversized file.
func readSecretFile(path string) ([]byte, error) {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return state.ReadRegularIn(root, filepath.Base(path), secrets.MaxValue+1)
}

// checkDeclared fails when a value is given for a secret the config does not declare.
func checkDeclared(v secrets.Values, m config.Model, path string) error {
	for _, name := range v.Names() {
		if _, ok := m.Secrets[name]; !ok {
			return cli.Usagef("secret %s is not declared in %s (add [secrets.%s]; declared: %s)", name, path, name, strings.Join(orNoneList(m.SecretNames()), ", "))
		}
	}
	return nil
}

func orNoneList(s []string) []string {
	if len(s) == 0 {
		return []string{"none"}
	}
	return s
}

func secretsCommand() *cli.Command {
	return &cli.Command{
		Name:  "secrets",
		Args:  "ls --device ID | set (--device ID... | --group G | --all) (--secret NAME=@FILE... | --secrets DIR)",
		Short: "list a device's secrets (names and digests, never values) or rotate values without resending the config",
		Long: `Secrets are declared in config.toml ([secrets.<name>]) and used by containers with
Quadlet's Secret= key. Their values are given at push time (push --secrets DIR or --secret
NAME=@FILE), sealed with age to each device's enrolled identity key (publisher enroll), so
the hub, logs, job history and exports never see them. A device that is not enrolled
receives nothing.

  ls   shows each declared secret: its keyed digest (changes when the value changes; says
       nothing about the value), when it was set, and the containers that use it.
  set  sends new values only: the config stays as it is, and exactly the containers that
       use a changed secret restart. A failed activation restores the previous values.

Examples:
  publisher secrets ls --device gw1
  publisher secrets set --group edge --secret db-password=@./db-password.txt`,
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			var cf connFlags
			cf.register(fs, true)
			var tf targetFlags
			tf.register(fs)
			var sf secretFlags
			sf.register(fs)
			timeout := fs.Duration("timeout", 5*time.Minute, "set: per device, from send to final result")
			asJSON := fs.Bool("json", false, "print JSON")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				cf.env = stdio.Env
				if len(args) != 1 || (args[0] != "ls" && args[0] != "set") {
					return cli.Usagef("expected ls or set")
				}
				target, err := tf.target(cf.via == "")
				if err != nil {
					return err
				}
				if args[0] == "ls" {
					if len(target.Devices) != 1 || sf.set() {
						return cli.Usagef("secrets ls takes exactly one --device and no values")
					}
					return secretsLs(ctx, &cf, stdio, target.Devices[0], *asJSON)
				}
				v, err := sf.values(stdio.Stdin)
				if err != nil {
					return err
				}
				if v == nil {
					return cli.Usagef("secrets set needs --secret NAME=@FILE or --secrets DIR")
				}
				body, _ := json.Marshal(config.Patch{Kind: "secrets", Op: "set"})
				return rollout(ctx, &cf, stdio, fleet.PushOptions{Op: "patch", Target: target, Timeout: *timeout, ReplyTimeout: cf.timeout,
					Payload: fleet.Payload{Data: body, ContentType: envelope.TypeJSON}, Secrets: v}, nil, *asJSON, false)
			}
		},
	}
}

// secretsLs prints a device's secrets from its signed current.
func secretsLs(ctx context.Context, cf *connFlags, stdio cli.IO, dev string, asJSON bool) error {
	data, err := signedQuery(ctx, cf, stdio, dev, "current", nil)
	if err != nil {
		return err
	}
	var cur struct {
		Provisioned bool `json:"provisioned"`
		Secrets     []struct {
			Name        string    `json:"name"`
			Description string    `json:"description"`
			Digest      string    `json:"digest"`
			SetAt       time.Time `json:"set_at"`
			UsedBy      []string  `json:"used_by"`
		} `json:"secrets"`
	}
	if err := json.Unmarshal(data, &cur); err != nil {
		return fmt.Errorf("decoding current: %w", err)
	}
	if !cur.Provisioned {
		return errors.New(dev + " is not provisioned")
	}
	if asJSON {
		b, _ := json.MarshalIndent(cur.Secrets, "", "  ")
		fmt.Fprintf(stdio.Stdout, "%s\n", b)
		return nil
	}
	if len(cur.Secrets) == 0 {
		fmt.Fprintf(stdio.Stdout, "%s declares no secrets\n", dev)
		return nil
	}
	tw := tabwriter.NewWriter(stdio.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIGEST\tSET\tUSED BY\tDESCRIPTION")
	for _, s := range cur.Secrets {
		digest, set := "(no value)", "-"
		if s.Digest != "" {
			digest = strings.TrimPrefix(s.Digest, "hmac-sha256:")
			digest = digest[:min(len(digest), 16)]
			set = s.SetAt.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, digest, set, strings.Join(s.UsedBy, ","), s.Description)
	}
	return tw.Flush()
}
