package provision_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/system"
)

// hostConfig is a config whose admin has key, with extra TOML (users, [network]) and the
// web container.
func hostConfig(key, extra string) []byte {
	return []byte(fmt.Sprintf(`version = 1
[users.admin]
isAdmin = true
ssh_key = %q
%s
[activation]
required = ["web"]
timeout_seconds = 5

[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "docker.io/library/nginx:1"
`, key, extra))
}

// failingWeb makes the web container of a hostConfig fail in the simulation.
func failingWeb(cfg []byte) []byte {
	return append(cfg, "Label = \"fleetprov.simulate=fail\"\n"...)
}

func eventLines(events []record.Event) string {
	var b strings.Builder
	for _, e := range events {
		fmt.Fprintf(&b, "%s", e.Step)
		for _, f := range []string{e.Service, e.Status, e.Message} {
			if f != "" {
				b.WriteString(" | " + f)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// A failing container rolls the whole host change back with it: the admin's old key works
// again, the account the failed apply created is locked, its firewall table is deleted
// and its network file removed.
func TestHostChangesRollBackWithTheContainers(t *testing.T) {
	d := provisiontest.NewWithHost(t)
	_, keyA := configtest.NewKey(t)
	_, keyB := configtest.NewKey(t)
	d.Provision(t, hostConfig(keyA, "[users.guest]\n"))
	d.Sim.Reset()
	res, events, err := apply(t, d, failingWeb(hostConfig(keyB, `[users.bob]
ssh_key = "`+keyB+`"
[network.interfaces.eth0]
mode = "static"
address = "192.0.2.10/24"
[network.firewall.inbound.wan]
tcp = [443]
`)))
	if !errors.Is(err, provision.ErrActivation) || res.RollbackStatus != record.RollbackCompleted {
		t.Fatalf("apply = %+v, %v; want a completed rollback after the activation failed", res, err)
	}
	key, _ := os.ReadFile(filepath.Join(d.HostRoot, "home/admin/.ssh/authorized_keys"))
	if string(key) != keyA+"\n" {
		t.Errorf("admin's key after the rollback = %q; want the old one", key)
	}
	if bob, ok := d.Sim.HostUser("bob"); !ok || !bob.Expired {
		t.Errorf("bob after the rollback = %+v (exists %v); want it locked", bob, ok)
	}
	if _, err := os.Stat(filepath.Join(d.HostRoot, "home/bob/.ssh/authorized_keys")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bob's key survived the rollback: %v", err)
	}
	for _, p := range []string{"etc/fleetprov/firewall.nft", "etc/systemd/network/50-fleetprov-eth0.network"} {
		if _, err := os.Stat(filepath.Join(d.HostRoot, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived the rollback: %v", p, err)
		}
	}
	if g, ok := d.Sim.HostUser("guest"); !ok || g.Expired {
		t.Errorf("guest after the rollback = %+v; want it unlocked", g)
	}
	tr := d.Sim.Transcript()
	if strings.Count(tr, "host: nft -f -") != 2 {
		t.Errorf("the table was not loaded then deleted:\n%s", tr)
	}
	golden(t, "host-rollback.events", strings.ReplaceAll(strings.ReplaceAll(eventLines(events), keyA, "KEY-A"), keyB, "KEY-B"))
}

// A host command that fails mid-apply rolls everything back, and the job's error says
// which command failed and what it said.
func TestFailingHostCommandRollsBack(t *testing.T) {
	d := provisiontest.NewWithHost(t)
	_, keyA := configtest.NewKey(t)
	_, keyB := configtest.NewKey(t)
	d.Provision(t, hostConfig(keyA, ""))
	before := provisiontest.Tree(t, d.Prov.State().Active())
	d.Sim.SetHostFailOnce("networkctl reload", errors.New("Failed to reload network settings: Connection timed out"))
	res, events, err := apply(t, d, hostConfig(keyB, "[network.interfaces.eth0]\nmode = \"dhcp\"\n"))
	want := "networkctl reload failed with exit code 1: Failed to reload network settings: Connection timed out"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("apply = %v; want it to say %q", err, want)
	}
	if !res.RolledBack || res.RollbackStatus != record.RollbackCompleted {
		t.Errorf("result = %+v; want a completed rollback", res)
	}
	if got := provisiontest.Tree(t, d.Prov.State().Active()); got != before {
		t.Errorf("the active state changed")
	}
	if !strings.Contains(eventLines(events), "host | service networkctl reload | failed | networkctl reload failed") {
		t.Errorf("no failed host event:\n%s", eventLines(events))
	}
	if _, err := os.Stat(filepath.Join(d.HostRoot, "etc/systemd/network/50-fleetprov-eth0.network")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the new network file survived the rollback: %v", err)
	}
	if strings.Count(d.Sim.Transcript(), "host: networkctl reload") != 2 {
		t.Errorf("the rollback did not reload the network:\n%s", d.Sim.Transcript())
	}
	key, _ := os.ReadFile(filepath.Join(d.HostRoot, "home/admin/.ssh/authorized_keys"))
	if string(key) != keyA+"\n" {
		t.Errorf("admin's key after the rollback = %q; want the old one", key)
	}
}

// A config that names an account the image made (not fleetprov) is refused before
// anything is promoted, and the account is not touched.
func TestForeignAccountRefusedBeforePromote(t *testing.T) {
	d := provisiontest.NewWithHost(t)
	d.Sim.AddHostUser(system.HostUser{Name: "operator", UID: 900, GID: 900, Home: "/home/operator", Shell: "/bin/bash"})
	_, keyA := configtest.NewKey(t)
	d.Provision(t, hostConfig(keyA, ""))
	_, _, err := apply(t, d, hostConfig(keyA, "[users.admin2]\n"))
	if err != nil {
		t.Fatalf("creating an account fleetprov does not know yet = %v", err)
	}
	before := provisiontest.Tree(t, d.Prov.State().Active())
	d.Sim.Reset()
	res, _, err := apply(t, d, hostConfig(keyA, "[users.operator]\nssh_key = \""+keyA+"\"\n"))
	if err == nil || !strings.Contains(err.Error(), "users.operator: the account exists and was not created by fleetprov") {
		t.Fatalf("apply naming the image's account = %v", err)
	}
	if res.RolledBack || provisiontest.Tree(t, d.Prov.State().Active()) != before {
		t.Errorf("the refusal came after promotion (result %+v)", res)
	}
	if tr := d.Sim.Transcript(); strings.Contains(tr, "useradd") || strings.Contains(tr, "usermod") {
		t.Errorf("accounts were changed:\n%s", tr)
	}
	if _, err := os.Stat(filepath.Join(d.HostRoot, "home/operator/.ssh")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the image account's home was written to: %v", err)
	}
}

// worker render writes the host settings next to the units: the accounts and the files a
// --host systemd device would install, with the bridge port among the LAN platform ports.
func TestRenderToWritesHostSettings(t *testing.T) {
	_, key := configtest.NewKey(t)
	out := t.TempDir()
	cfg := hostConfig(key, "[users.guest]\nshell = \"bash\"\n[network.firewall.inbound.lan]\ntcp = [9000]\n")
	if _, err := provision.RenderTo(context.Background(), bytes.NewReader(cfg), out, check.Options{Config: config.Options{BridgePort: 8181}}); err != nil {
		t.Fatal(err)
	}
	acc, _ := os.ReadFile(filepath.Join(out, "host", "accounts.txt"))
	if string(acc) != "admin admin=true shell=/bin/sh key=true\nguest admin=false shell=/bin/bash key=false\n" {
		t.Errorf("accounts.txt = %q", acc)
	}
	rules, _ := os.ReadFile(filepath.Join(out, "host", "etc", "fleetprov", "firewall.nft"))
	if !strings.Contains(string(rules), "tcp dport { 22, 53, 8181, 9000 } accept") {
		t.Errorf("firewall.nft:\n%s", rules)
	}
}

// TestChronyImageGetsChronySources: the device looks at its own host: with chronyd
// installed, [network.ntp] goes to chrony's sources dir.
func TestChronyImageGetsChronySources(t *testing.T) {
	d := provisiontest.NewWithHost(t)
	os.MkdirAll(filepath.Join(d.HostRoot, "usr/sbin"), 0o755)
	os.WriteFile(filepath.Join(d.HostRoot, host.Chronyd), nil, 0o755)
	_, key := configtest.NewKey(t)
	d.Provision(t, hostConfig(key, "[network.ntp]\nservers = [\"time.example.com\"]\n"))
	if got, _ := os.ReadFile(filepath.Join(d.HostRoot, host.ChronySources)); !strings.Contains(string(got), "server time.example.com iburst") {
		t.Errorf("chrony sources = %q", got)
	}
	if _, err := os.Stat(filepath.Join(d.HostRoot, host.TimesyncDropIn)); err == nil {
		t.Error("a timesyncd drop-in on a chrony image")
	}
}

// TestRollbackRestoresAllItCan: a host step that fails while a rollback restores the
// previous state does not stop the rest: the firewall and network files still go back,
// the previous containers are restarted, and the rollback reports the failing command.
func TestRollbackRestoresAllItCan(t *testing.T) {
	d := provisiontest.NewWithHost(t)
	_, keyA := configtest.NewKey(t)
	_, keyB := configtest.NewKey(t)
	d.Provision(t, hostConfig(keyA, "[network.firewall.inbound.wan]\ntcp = [443]\n"))
	// Only the rollback runs "usermod carol": the apply creates carol, the rollback locks her.
	d.Sim.SetHostFail("usermod carol", errors.New("usermod: cannot lock /etc/passwd; try again later."))
	res, events, err := apply(t, d, failingWeb(hostConfig(keyB, "[users.carol]\n[network.interfaces.eth0]\nmode = \"dhcp\"\n[network.firewall.inbound.wan]\ntcp = [8443]\n")))
	if err == nil || res.RollbackStatus != record.RollbackFailed {
		t.Fatalf("apply = %+v, %v; want a rollback that reports its failure", res, err)
	}
	lines := eventLines(events)
	failed := strings.Index(lines, "host | user carol | failed | usermod: cannot lock")
	restarted := strings.LastIndex(lines, "service-deploy | web.service | restarted")
	if failed < 0 || restarted < failed {
		t.Errorf("the rollback stopped at the failing step (or never reached it):\n%s", lines)
	}
	if fw, _ := os.ReadFile(filepath.Join(d.HostRoot, "etc/fleetprov/firewall.nft")); !strings.Contains(string(fw), "tcp dport { 443 }") {
		t.Errorf("the firewall after the rollback:\n%s", fw)
	}
	if _, err := os.Stat(filepath.Join(d.HostRoot, "etc/systemd/network/50-fleetprov-eth0.network")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the new network file survived the rollback: %v", err)
	}
	if key, _ := os.ReadFile(filepath.Join(d.HostRoot, "home/admin/.ssh/authorized_keys")); string(key) != keyA+"\n" {
		t.Errorf("admin's key after the rollback = %q; want the old one", key)
	}
}
