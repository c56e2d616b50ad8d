// Package cli is the small command framework both binaries share: subcommands, --help
// on every level, flags that can also come from FLEETPROV_<FLAG> environment variables
// and (for the worker) a TOML file, and exit codes mapped from errors.
//
// Precedence is flag > environment > file > default. Besides the flag plumbing it holds
// the output helpers both binaries share (validation reports).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Exit codes shared by both binaries (spec/cli.md).
const (
	ExitOK           = 0
	ExitFailed       = 1 // the operation failed: invalid config, job failed, a device failed
	ExitUsage        = 2
	ExitUnreachable  = 3
	ExitUnauthorized = 4
	ExitImpostor     = 5 // a device's answer was not signed by its enrolled key
)

// ExitError carries the exit code for an error; Run returns ExitFailed for other errors.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Exit wraps err with an exit code.
func Exit(code int, err error) error { return &ExitError{Code: code, Err: err} }

// Usagef returns a usage error (exit 2).
func Usagef(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// ErrReported means the command already printed why it failed; Run prints nothing more.
var ErrReported = errors.New("failure already reported")

// Env is the process environment as a lookup function, so tests pass their own.
type Env func(key string) (string, bool)

// IO is what a command may touch of the process: arguments are given separately.
type IO struct {
	Stdout, Stderr io.Writer
	Stdin          io.Reader
	Env            Env
}

// Command is one subcommand.
type Command struct {
	Name  string
	Args  string // e.g. "PATH"
	Short string // one line for the command list
	Long  string // paragraphs for --help
	// Flags registers the command's flags; the returned func runs it with the remaining
	// positional arguments.
	Setup func(fs *flag.FlagSet) func(ctx context.Context, args []string, io IO) error
}

// App is a binary: a name, its commands, and where flags may also come from.
type App struct {
	Name     string
	Short    string
	Commands []*Command
	// FileFlag names a flag holding a TOML file of flag defaults (worker: "config");
	// empty disables file defaults.
	FileFlag string
	// FileDefault is that file's default path; a missing default file is not an error.
	FileDefault string
}

// Run runs the command named by args[0] and returns the process exit code.
func (a *App) Run(ctx context.Context, args []string, stdio IO) int {
	if stdio.Env == nil {
		stdio.Env = os.LookupEnv
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			if c := a.find(args[1]); c != nil {
				fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
				c.Setup(fs)
				a.commandUsage(c, fs, stdio.Stdout)
				return ExitOK
			}
		}
		a.usage(stdio.Stdout)
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	c := a.find(args[0])
	if c == nil {
		fmt.Fprintf(stdio.Stderr, "%s: unknown command %q\n\n", a.Name, args[0])
		a.usage(stdio.Stderr)
		return ExitUsage
	}
	fs := flag.NewFlagSet(a.Name+" "+c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var file string
	if a.FileFlag != "" {
		fs.StringVar(&file, a.FileFlag, a.FileDefault, "TOML file with flag defaults (flag > FLEETPROV_* env > file > default)")
	}
	run := c.Setup(fs)
	positional, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.commandUsage(c, fs, stdio.Stdout)
			return ExitOK
		}
		fmt.Fprintf(stdio.Stderr, "%s %s: %v\nRun '%s %s --help' for usage.\n", a.Name, c.Name, err, a.Name, c.Name)
		return ExitUsage
	}
	if err := a.applyDefaults(fs, file, stdio.Env); err != nil {
		fmt.Fprintf(stdio.Stderr, "%s %s: %v\n", a.Name, c.Name, err)
		return ExitUsage
	}
	err = run(ctx, positional, stdio)
	if err == nil {
		return ExitOK
	}
	code := ExitFailed
	var ee *ExitError
	if errors.As(err, &ee) {
		code = ee.Code
	}
	if !errors.Is(err, ErrReported) {
		fmt.Fprintf(stdio.Stderr, "%s %s: %v\n", a.Name, c.Name, err)
		if code == ExitUsage {
			fmt.Fprintf(stdio.Stderr, "Run '%s %s --help' for usage.\n", a.Name, c.Name)
		}
	}
	return code
}

// parseInterspersed parses flags anywhere among the arguments (push PATH --device x), up
// to a "--" after which everything is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

func (a *App) find(name string) *Command {
	for _, c := range a.Commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// EnvName is the environment variable for a flag: FLEETPROV_ + upper snake case.
func EnvName(flagName string) string {
	return "FLEETPROV_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyDefaults fills flags not given on the command line from the environment, then from
// the TOML file.
func (a *App) applyDefaults(fs *flag.FlagSet, file string, env Env) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if a.FileFlag != "" && !set[a.FileFlag] {
		if v, ok := env(EnvName(a.FileFlag)); ok {
			file = v
			set[a.FileFlag] = true
		}
	}
	var fileVals map[string]any
	if file != "" {
		raw, err := os.ReadFile(file)
		switch {
		case err == nil:
			if _, err := toml.Decode(string(raw), &fileVals); err != nil {
				return fmt.Errorf("reading %s: %w", file, err)
			}
		case errors.Is(err, os.ErrNotExist) && !set[a.FileFlag]:
			// The default file is optional.
		default:
			return fmt.Errorf("reading flag file: %w", err)
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == a.FileFlag {
			return
		}
		if v, ok := env(EnvName(f.Name)); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
			return
		}
		if v, ok := fileVals[f.Name]; ok {
			if err := f.Value.Set(fileValue(v)); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: %w", file, f.Name, err))
			}
			delete(fileVals, f.Name)
		}
	})
	// Keys this command does not know belong to other commands: one file serves all.
	return errors.Join(errs...)
}

func fileValue(v any) string {
	switch t := v.(type) {
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v)
}

func (a *App) usage(w io.Writer) {
	fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s <command> [flags] [args]\n\nCommands:\n", a.Name, a.Short, a.Name)
	for _, c := range a.Commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.Name, c.Short)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", a.Name)
	fmt.Fprintf(w, "Every flag can also be set as FLEETPROV_<FLAG> in the environment (e.g. --state-dir as FLEETPROV_STATE_DIR).\n")
	fmt.Fprintf(w, "Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 not reachable / no reply, 4 unauthorized, 5 impostor (a device's answer not signed by its enrolled key).\n")
}

func (a *App) commandUsage(c *Command, fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "Usage: %s %s [flags] %s\n\n%s\n", a.Name, c.Name, c.Args, c.Short)
	if c.Long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.Long))
	}
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	if len(names) == 0 {
		return
	}
	sort.Strings(names)
	fmt.Fprintf(w, "\nFlags:\n")
	for _, n := range names {
		f := fs.Lookup(n)
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + n
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n      %s", line, usage)
		if f.DefValue != "" && f.DefValue != "false" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, " [env %s]\n", EnvName(n))
	}
}

// SplitList splits a comma-separated flag value, trimming items and dropping empty ones.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
