// Package deploy_test checks the systemd units in deploy/ with systemd-analyze verify and
// the example worker.toml against the worker's real flags.
package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/fleetprov/fleetprov/internal/fptest"
)

func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "worker")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/worker").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestUnitsVerify(t *testing.T) {
	analyze := fptest.RequireTool(t, "systemd", "systemd-analyze")
	bin := buildWorker(t)
	dir := t.TempDir()
	for _, name := range []string{"fleetprov-worker.service", "fleetprov-worker.socket"} {
		b, err := os.ReadFile(filepath.Join("../../deploy", name))
		if err != nil {
			t.Fatal(err)
		}
		// systemd-analyze checks that ExecStart exists: point it at the binary just built.
		b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/worker", bin))
		os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	out, err := exec.Command(analyze, "verify", filepath.Join(dir, "fleetprov-worker.socket"), filepath.Join(dir, "fleetprov-worker.service")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The check can fail: a misspelt directive is reported.
	bad := filepath.Join(dir, "broken.service")
	os.WriteFile(bad, []byte("[Service]\nExecStart="+bin+" serve\nWatchdogSecs=1\n"), 0o644)
	if out, _ := exec.Command(analyze, "verify", bad).CombinedOutput(); !strings.Contains(string(out), "WatchdogSecs") {
		t.Errorf("systemd-analyze did not flag a bad directive: %s", out)
	}
}

func TestExampleWorkerTomlNamesRealFlags(t *testing.T) {
	var keys map[string]any
	if _, err := toml.DecodeFile("../../deploy/worker.toml", &keys); err != nil {
		t.Fatal(err)
	}
	help, _ := exec.Command(buildWorker(t), "serve", "--help").CombinedOutput()
	for k := range keys {
		if !strings.Contains(string(help), "--"+k+" ") && !strings.Contains(string(help), "--"+k+"\n") {
			t.Errorf("worker.toml key %q is not a flag of worker serve", k)
		}
	}
}
