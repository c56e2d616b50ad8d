package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/core/config/configtest"
)

// runPub runs the publisher with an empty HOME and no other environment.
func runPub(t *testing.T, args ...string) (int, string) {
	t.Helper()
	return runEnv(t, t.TempDir(), nil, args...)
}

func fixture(t *testing.T, name string) string {
	p := filepath.Join(t.TempDir(), name)
	os.WriteFile(p, configtest.Fixture(t, name), 0o600)
	return p
}

func TestValidateAndUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"valid", []string{"validate", fixture(t, "vm-full.config.toml")}, 0, ": valid"},
		{"invalid", []string{"validate", fixture(t, "vm-invalid-unknown-required-unit.config.toml")}, 1, "activation.required references unknown unit: missing-service"},
		{"json", []string{"validate", "--json", fixture(t, "vm-full.config.toml")}, 0, `"valid": true`},
		{"missing_file", []string{"validate", "/nonexistent.toml"}, 1, "reading input"},
		{"push_without_target", []string{"push", fixture(t, "vm-full.config.toml")}, 2, "give exactly one of --device, --group or --all"},
		{"push_two_targets", []string{"push", "x", "--group", "a", "--all"}, 2, "exactly one"},
		{"push_bad_batch", []string{"push", "x", "--all", "--batch", "abc"}, 2, "--batch"},
		{"push_unreachable", []string{"push", fixture(t, "vm-full.config.toml"), "--all", "--server", "nats://127.0.0.1:1", "--key", writeKey(t)}, 3, "connecting"},
		{"patch_unknown_kind", []string{"patch", "--device", "d", "--kind", "kernel"}, 2, "unknown --kind"},
		{"via_bad_url", []string{"ls", "--via", "ftp://x"}, 2, "http(s) URL"},
		{"enroll_creds_out_with_tofu", []string{"enroll", "--device", "d", "--tofu", "--creds-out", "/tmp/x"}, 2, "would mint credentials for whatever key answers"},
		{"enroll_bad_group", []string{"enroll", "--device", "d", "--pubkey", "ssh-ed25519 AAAA", "--groups", "edge,bad.group", "--creds-out", "/tmp/x"}, 2, `--groups: "bad.group" is not a group name`},
		{"enroll_creds_out_stdout", []string{"enroll", "--device", "d", "--creds-out", "-"}, 2, "--creds-out needs a file"},
		{"push_bad_durable", []string{"push", fixture(t, "vm-full.config.toml"), "--all", "--durable", "maybe"}, 2, "--durable: want auto, on or off"},
		{"push_wait_one_shot", []string{"push", fixture(t, "vm-full.config.toml"), "--all", "--durable", "off", "--wait", "50%"}, 2, "need durable desired state"},
		{"push_resume_one_shot", []string{"push", fixture(t, "vm-full.config.toml"), "--all", "--durable", "off", "--resume"}, 2, "need durable desired state"},
		{"push_revert_one_shot", []string{"push", fixture(t, "vm-full.config.toml"), "--all", "--durable", "off", "--revert-on-failure"}, 2, "need durable desired state"},
		{"push_bad_wait", []string{"push", fixture(t, "vm-full.config.toml"), "--all", "--wait", "150%"}, 2, "--wait"},
		{"push_detach_durable", []string{"push", fixture(t, "vm-full.config.toml"), "--all", "--detach", "--durable", "on"}, 2, "--detach is one-shot"},
		{"status_args", []string{"status", "extra"}, 2, "status takes no arguments"},
		{"status_via", []string{"status", "--via", "http://127.0.0.1:1"}, 2, "use --server, not --via"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runPub(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("publisher %v = %d\n%s\nwant %d and %q", tc.args, code, out, tc.code, tc.want)
			}
		})
	}
}

// writeKey writes an unencrypted ed25519 private key for --key.
func writeKey(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "id")
	os.WriteFile(p, privateKeyPEM(t), 0o600)
	return p
}

func TestInit(t *testing.T) {
	_, line := configtest.NewKey(t)
	pub := filepath.Join(t.TempDir(), "id.pub")
	os.WriteFile(pub, []byte(line+" me@host\n"), 0o644)
	out := filepath.Join(t.TempDir(), "config.toml")
	if code, msg := runPub(t, "init", "--pub", pub, "-o", out); code != 0 {
		t.Fatalf("init = %d: %s", code, msg)
	}
	if code, msg := runPub(t, "validate", out); code != 0 {
		t.Errorf("the starter config does not validate: %s", msg)
	}
	if code, _ := runPub(t, "init", "--pub", pub, "-o", out); code == 0 {
		t.Errorf("init overwrote an existing file")
	}
}
