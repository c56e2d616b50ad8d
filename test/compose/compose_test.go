// Package compose_test checks docker-compose.yml with docker-compose itself (no engine
// is needed for `config`).
package compose_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
)

func TestComposeConfig(t *testing.T) {
	bin := fptest.RequireTool(t, "docker-compose", "docker-compose")
	out, err := exec.Command(bin, "-f", "../../docker-compose.yml", "config").CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	cfg := string(out)
	for _, want := range []string{"init:", "hub:", "worker-1:", "worker-2:", "worker-3:", "publisher:", "nats-leaf://hub:7422", "--system", "simulate",
		"/nats/hub.conf", "--hub-creds", "/nats/worker-1.creds", "FLEETPROV_NATS_CREDS", "service_completed_successfully"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("docker-compose config lacks %q", want)
		}
	}
	services, err := exec.Command(bin, "-f", "../../docker-compose.yml", "config", "--services").Output()
	if err != nil || len(strings.Fields(string(services))) != 6 {
		t.Errorf("services = %q, %v", services, err)
	}
}

// TestHubConf checks the hub configuration the compose init service makes ('publisher
// nats init', here through the same natsauth code) with the stock nats-server's own
// configuration check, and that the script mints what the services mount.
func TestHubConf(t *testing.T) {
	bin := fptest.NATSServer(t)
	f, err := natsauth.Create("demo")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := f.Save(dir, "127.0.0.1:-1", "127.0.0.1:-1"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-c", filepath.Join(dir, natsauth.HubConfFile)).CombinedOutput(); err != nil {
		t.Fatalf("nats-server -t: %v\n%s", err, out)
	}
	script, err := os.ReadFile("../../deploy/compose/init.sh")
	if err != nil {
		t.Fatal(err)
	}
	compose, _ := os.ReadFile("../../docker-compose.yml")
	for _, w := range []string{"worker-1", "worker-2", "worker-3"} {
		if !strings.Contains(string(script), "-o /nats/"+w+".creds") || !strings.Contains(string(compose), "/nats/"+w+".creds") {
			t.Errorf("%s's credentials are not minted by init.sh and mounted by docker-compose.yml", w)
		}
	}
}
