// Package compose_test checks docker-compose.yml with docker-compose itself (no engine
// is needed for `config`).
package compose_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/internal/fptest"
)

func TestComposeConfig(t *testing.T) {
	bin := fptest.RequireTool(t, "docker-compose", "docker-compose")
	out, err := exec.Command(bin, "-f", "../../docker-compose.yml", "config").CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	cfg := string(out)
	for _, want := range []string{"hub:", "worker-1:", "worker-2:", "worker-3:", "publisher:", "nats-leaf://hub:7422", "--system", "simulate", "nats:2.10-alpine"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("docker-compose config lacks %q", want)
		}
	}
	services, err := exec.Command(bin, "-f", "../../docker-compose.yml", "config", "--services").Output()
	if err != nil || len(strings.Fields(string(services))) != 5 {
		t.Errorf("services = %q, %v", services, err)
	}
}

// TestHubConf starts the stock nats-server on the compose hub config (ports rewritten to
// free ones) to prove the file is valid NATS configuration.
func TestHubConf(t *testing.T) {
	bin := fptest.RequireTool(t, "nats-server", "nats-server")
	raw, err := os.ReadFile("../../deploy/compose/hub.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer("0.0.0.0:4222", "127.0.0.1:-1", "0.0.0.0:7422", "127.0.0.1:-1").Replace(string(raw))
	p := t.TempDir() + "/hub.conf"
	os.WriteFile(p, []byte(conf), 0o600)
	if out, err := exec.Command(bin, "-t", "-c", p).CombinedOutput(); err != nil {
		t.Fatalf("nats-server -t: %v\n%s", err, out)
	}
}
