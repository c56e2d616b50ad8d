// Package compose_test checks docker-compose.yml with docker-compose itself (no engine
// is needed for `config`).
package compose_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/internal/fptest/natshub"
	"github.com/fleetprov/fleetprov/messaging/natsauth"
	"github.com/nats-io/jwt/v2"
)

func TestComposeConfig(t *testing.T) {
	bin := fptest.RequireTool(t, "docker-compose", "docker-compose")
	out, err := exec.Command(bin, "-f", "../../docker-compose.yml", "config").CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	cfg := string(out)
	for _, want := range []string{"init:", "hub:", "worker-1:", "worker-2:", "worker-3:", "publisher:", "nats-leaf://hub:7422", "--system", "simulate",
		"/nats/hub.conf", "--hub-creds", "/nats/worker-1.creds", "FLEETPROV_CREDS", "service_completed_successfully"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("docker-compose config lacks %q", want)
		}
	}
	services, err := exec.Command(bin, "-f", "../../docker-compose.yml", "config", "--services").Output()
	if err != nil || len(strings.Fields(string(services))) != 6 {
		t.Errorf("services = %q, %v", services, err)
	}
}

// TestHubConf runs the compose init service's script (deploy/compose/init.sh) with the
// real publisher, into a temp dir instead of the /nats volume; checks the hub.conf it
// makes with the stock nats-server's own configuration check; and checks that each
// worker's credentials carry exactly the groups docker-compose.yml gives that worker.
func TestHubConf(t *testing.T) {
	bin := natshub.Binary(t)
	bins := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bins, "publisher"), "../../cmd/publisher").CombinedOutput(); err != nil {
		t.Fatalf("go build publisher: %v\n%s", err, out)
	}
	raw, err := os.ReadFile("../../deploy/compose/init.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := filepath.Join(t.TempDir(), "init.sh")
	os.WriteFile(script, []byte(strings.ReplaceAll(string(raw), "/nats", dir)), 0o755)
	for run := range 2 { // the second run finds everything made and changes nothing
		cmd := exec.Command("/bin/sh", script)
		cmd.Env = append(os.Environ(), "PATH="+bins+":"+os.Getenv("PATH"), "HOME="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("init.sh (run %d): %v\n%s", run+1, err, out)
		}
	}
	if out, err := exec.Command(bin, "-t", "-c", filepath.Join(dir, natsauth.HubConfFile)).CombinedOutput(); err != nil {
		t.Fatalf("nats-server -t: %v\n%s", err, out)
	}
	compose, _ := os.ReadFile("../../docker-compose.yml")
	groupsOf := regexp.MustCompile(`"--device-id", "(worker-\d)",\s+"--fleet", "demo", "--groups", "([a-z,]+)"`)
	matches := groupsOf.FindAllStringSubmatch(string(compose), -1)
	if len(matches) != 3 {
		t.Fatalf("found %d workers with groups in docker-compose.yml; want 3", len(matches))
	}
	for _, m := range matches {
		worker, group := m[1], m[2]
		if !strings.Contains(string(compose), `"--hub-creds", "/nats/`+worker+`.creds"`) {
			t.Errorf("%s does not use its own credentials", worker)
		}
		creds, err := os.ReadFile(filepath.Join(dir, worker+".creds"))
		if err != nil {
			t.Errorf("init.sh made no credentials for %s: %v", worker, err)
			continue
		}
		tok, _ := jwt.ParseDecoratedJWT(creds)
		uc, err := jwt.DecodeUserClaims(tok)
		if err != nil {
			t.Fatalf("%s.creds: %v", worker, err)
		}
		var grps []string
		for _, sub := range uc.Sub.Allow {
			if strings.HasPrefix(sub, "fleetprov.demo.grp.") {
				grps = append(grps, strings.TrimSuffix(strings.TrimPrefix(sub, "fleetprov.demo.grp."), ".*"))
			}
		}
		if strings.Join(grps, ",") != group {
			t.Errorf("%s's credentials receive groups %v; docker-compose.yml gives it %q", worker, grps, group)
		}
	}
}
