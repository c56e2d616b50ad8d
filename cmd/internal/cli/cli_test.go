package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testApp(got *string) *App {
	return &App{Name: "tool", Short: "test", FileFlag: "config", FileDefault: "/nonexistent/tool.toml", Commands: []*Command{{
		Name: "do", Args: "PATH", Short: "does it",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, IO) error {
			dir := fs.String("state-dir", "/default", "where")
			return func(ctx context.Context, args []string, io IO) error {
				*got = *dir + " " + strings.Join(args, ",")
				switch {
				case len(args) == 0:
					return Usagef("need PATH")
				case args[0] == "fail":
					return errors.New("it failed")
				case args[0] == "noreach":
					return Exit(ExitUnreachable, errors.New("down"))
				}
				return nil
			}
		},
	}}}
}

func TestPrecedenceAndExitCodes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tool.toml")
	os.WriteFile(file, []byte(`state-dir = "/from-file"`+"\n"), 0o600)
	env := func(m map[string]string) Env {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCode int
		wantGot  string
	}{
		{"default", []string{"do", "p"}, nil, 0, "/default p"},
		{"file", []string{"do", "--config", file, "p"}, nil, 0, "/from-file p"},
		{"env_over_file", []string{"do", "--config", file, "p"}, map[string]string{"FLEETPROV_STATE_DIR": "/from-env"}, 0, "/from-env p"},
		{"flag_over_env", []string{"do", "p", "--state-dir", "/from-flag"}, map[string]string{"FLEETPROV_STATE_DIR": "/from-env"}, 0, "/from-flag p"},
		{"config_file_from_env", []string{"do", "p"}, map[string]string{"FLEETPROV_CONFIG": file}, 0, "/from-file p"},
		{"interspersed_and_double_dash", []string{"do", "a", "--state-dir", "/x", "--", "--b"}, nil, 0, "/x a,--b"},
		{"usage_error", []string{"do"}, nil, ExitUsage, "/default "},
		{"failure", []string{"do", "fail"}, nil, ExitFailed, "/default fail"},
		{"unreachable", []string{"do", "noreach"}, nil, ExitUnreachable, "/default noreach"},
		{"unknown_flag", []string{"do", "--nope"}, nil, ExitUsage, ""},
		{"unknown_command", []string{"undo"}, nil, ExitUsage, ""},
		{"missing_explicit_config", []string{"do", "--config", "/nonexistent", "p"}, nil, ExitUsage, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			var out, errb bytes.Buffer
			code := testApp(&got).Run(context.Background(), tc.args, IO{Stdout: &out, Stderr: &errb, Env: env(tc.env)})
			if code != tc.wantCode || got != tc.wantGot {
				t.Errorf("Run(%v) = %d, %q; want %d, %q\n%s", tc.args, code, got, tc.wantCode, tc.wantGot, errb.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var got string
	var out bytes.Buffer
	if code := testApp(&got).Run(context.Background(), []string{"do", "--help"}, IO{Stdout: &out, Stderr: &out}); code != 0 {
		t.Errorf("--help exit = %d", code)
	}
	for _, want := range []string{"Usage: tool do [flags] PATH", "--state-dir", "FLEETPROV_STATE_DIR", "(default /default)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	testApp(&got).Run(context.Background(), []string{"help"}, IO{Stdout: &out, Stderr: &out})
	if !strings.Contains(out.String(), "Exit codes: 0 ok") {
		t.Errorf("top-level help:\n%s", out.String())
	}
}
