package host_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/system"
	"github.com/fleetprov/fleetprov/core/system/simulate"
)

var update = flag.Bool("update", false, "rewrite the golden transcripts in testdata/")

const (
	keyA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfm/RhPyisFyBAwigDt2AnnOU1fMAVk4XaCj3S/k/3Z admin@a"
	keyB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIvY5EHYk7Hpb6nrcZ0IYsi0d2PpGDGEVwqUi3T7e3xN admin@b"
)

// cfg is a config.toml with the given host sections and one container.
func cfg(t *testing.T, sections string) config.Model {
	t.Helper()
	raw := sections + `
[activation]
required = ["web"]

[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "docker.io/library/nginx:1"
`
	if !strings.Contains(raw, "version = 1") {
		raw = "version = 1\n" + raw
	}
	m, r, err := config.Parse([]byte(raw), config.Options{})
	if err != nil {
		t.Fatalf("config: %v\n%v", err, r.Errors())
	}
	return m
}

type rig struct {
	t    *testing.T
	sim  *simulate.Sim
	env  *host.Env
	root string
	out  strings.Builder
}

func newRig(t *testing.T, users ...system.HostUser) *rig {
	root := t.TempDir()
	sim := simulate.New(simulate.Options{HostRoot: root, HostUsers: users})
	return &rig{t: t, sim: sim, root: root, env: &host.Env{Root: root, Host: sim.Backend().Host, Record: filepath.Join(t.TempDir(), "accounts.json")}}
}

// apply converges to m and appends the events, the simulated OS's transcript and the
// managed files to the golden output.
func (r *rig) apply(title string, m *config.Model) error {
	r.t.Helper()
	d := host.Desired{}
	if m != nil {
		d = host.Render(*m, host.Options{})
	}
	r.sim.Reset()
	fmt.Fprintf(&r.out, "== %s\n", title)
	plan, err := host.Apply(context.Background(), r.env, d, func(ev record.Event) {
		fmt.Fprintf(&r.out, "event: %s %s: %s", ev.Step, ev.Service, ev.Status)
		if ev.Message != "" {
			fmt.Fprintf(&r.out, " (%s)", ev.Message)
		}
		r.out.WriteString("\n")
	})
	if err != nil {
		fmt.Fprintf(&r.out, "error: %v\n", err)
	}
	fmt.Fprintf(&r.out, "network change: %v\n", plan.Network())
	r.out.WriteString("-- transcript\n" + strings.TrimSuffix(r.sim.Transcript(), "\n") + "\n")
	r.out.WriteString("-- files\n" + r.files())
	return err
}

// files lists the files under the root (but the simulated shells) with their contents.
func (r *rig) files() string {
	var b strings.Builder
	var paths []string
	filepath.WalkDir(r.root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(p, filepath.Join(r.root, "bin")) {
			paths = append(paths, p)
		}
		return nil
	})
	sort.Strings(paths)
	for _, p := range paths {
		raw, _ := os.ReadFile(p)
		info, _ := os.Stat(p)
		fmt.Fprintf(&b, "%s (%v)\n", strings.TrimPrefix(p, r.root), info.Mode().Perm())
		for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
			if !strings.HasPrefix(line, "# Written by fleetprov") {
				b.WriteString("  | " + line + "\n")
			}
		}
	}
	return b.String()
}

func (r *rig) golden(name string) {
	r.t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, []byte(r.out.String()), 0o644); err != nil {
			r.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		r.t.Fatalf("%v (run go test ./core/host -update to write it)", err)
	}
	if string(want) != r.out.String() {
		r.t.Errorf("%s differs from the golden transcript (go test ./core/host -update rewrites it; review the diff)\n--- got\n%s", p, r.out.String())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestUsersGolden(t *testing.T) {
	r := newRig(t, system.HostUser{Name: "ops", UID: 900, GID: 900, Home: "/home/ops", Shell: "/bin/bash"})
	v1 := cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n[users.guest]\nshell = \"bash\"\n", keyA))
	must(t, r.apply("create an admin with a key and a guest", &v1))
	must(t, r.apply("the same config again changes nothing", &v1))
	v2 := cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n[users.dev]\nssh_key = %q\n", keyB, keyA))
	must(t, r.apply("rotate the admin's key, drop guest (locked), add dev", &v2))
	must(t, r.apply("roll back to the first config (guest unlocked, the old key back, dev locked)", &v1))
	must(t, r.apply("no config: every account of ours locked and its key removed", nil))
	r.golden("users")
	if u, _ := r.sim.HostUser("ops"); u.Expired || u.Shell != "/bin/bash" {
		t.Errorf("the image's account ops was changed: %+v", u)
	}
	if u, _ := r.sim.HostUser("admin"); !u.Expired {
		t.Errorf("admin is not locked after the config that created it went: %+v", u)
	}
}

func TestNetworkGolden(t *testing.T) {
	r := newRig(t)
	users := fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n", keyA)
	v1 := cfg(t, users+`
[network]
dns_servers = ["9.9.9.9", "2620:fe::fe"]
dns_search_domains = ["Example.COM."]
default_gateway = "192.0.2.1"
[network.interfaces.eth0]
mode = "static"
address = "192.0.2.10/24"
[network.interfaces.eth1]
mode = "static"
address = "10.44.0.1/24"
dns_servers = ["10.44.0.1"]
[network.dnsmasq]
gateway_cidr = "10.44.0.1/24"
domain = "lab"
gateway_aliases = ["atomixos", "gw.lab"]
[network.ntp]
servers = ["time.example.com", "192.0.2.123"]
[network.firewall.inbound.wan]
tcp = [22, 443]
udp = [51820]
[os_upgrade]
server_url = "https://updates.example.com/"
`)
	must(t, r.apply("static WAN, LAN gateway with dnsmasq, DNS, NTP, firewall, OS upgrade", &v1))
	v2 := cfg(t, users+`
[network.interfaces.eth0]
mode = "dhcp"
[network.firewall.inbound.wan]
tcp = [443]
[network.firewall.inbound.lan]
tcp = [9000]
`)
	must(t, r.apply("eth0 to DHCP, LAN allowlist, no dnsmasq/NTP/DNS/OS upgrade", &v2))
	v3 := cfg(t, users)
	must(t, r.apply("no [network]: our files and table go, nothing else", &v3))
	r.golden("network")
}

func TestRefusals(t *testing.T) {
	r := newRig(t, system.HostUser{Name: "ops", UID: 900, GID: 900, Home: "/home/ops", Shell: "/bin/bash"})
	m := cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n[users.ops]\n[users.z]\nshell = \"zsh\"\n", keyA))
	_, err := host.Check(context.Background(), r.env, host.Render(m, host.Options{}))
	for _, want := range []string{"users.ops: the account exists and was not created by fleetprov", "users.z.shell: /bin/zsh is not installed"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check = %v; want it to say %q", err, want)
		}
	}
	if !errors.Is(err, host.ErrForeignAccount) {
		t.Errorf("Check = %v; want ErrForeignAccount", err)
	}
	if tr := r.sim.Transcript(); strings.Contains(tr, "useradd") || strings.Contains(tr, "usermod") {
		t.Errorf("Check changed accounts:\n%s", tr)
	}
	r2 := newRig(t)
	r2.sim = simulate.New(simulate.Options{HostRoot: r2.root, HostGroups: []string{"users"}})
	r2.env.Host = r2.sim.Backend().Host
	_, err = host.Check(context.Background(), r2.env, host.Render(cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n", keyA)), host.Options{}))
	if err == nil || !strings.Contains(err.Error(), "users.admin.isAdmin: this device has no admin group (sudo or wheel)") {
		t.Errorf("Check without an admin group = %v", err)
	}
}

// A host command that fails stops the apply there, and the error names the command and
// what it said.
func TestFailingCommandStopsTheApply(t *testing.T) {
	r := newRig(t)
	r.sim.SetHostFail("networkctl reload", errors.New("Failed to reload network settings: Unit dbus-org.freedesktop.network1.service not found."))
	m := cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n[network.interfaces.eth0]\nmode = \"dhcp\"\n[network.ntp]\nservers = [\"time.example.com\"]\n", keyA))
	err := r.apply("networkctl fails", &m)
	want := "host service networkctl reload: run: networkctl reload failed with exit code 1: Failed to reload network settings"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Apply = %v; want %q", err, want)
	}
	if strings.Contains(r.sim.Transcript(), "timesyncd") {
		t.Errorf("steps after the failed one ran:\n%s", r.sim.Transcript())
	}
}

// An account fleetprov manages cannot stop it from locking that account: whatever it puts
// at ~/.ssh/authorized_keys (a link loop, a link out of its home, a directory) neither
// fails the plan nor is followed, and is replaced or removed.
func TestPlantedKeyEntryCannotBlockTheLock(t *testing.T) {
	for name, plant := range map[string]func(dir string) error{
		"loop":      func(dir string) error { return os.Symlink("authorized_keys", filepath.Join(dir, "authorized_keys")) },
		"link out":  func(dir string) error { return os.Symlink("/dev/zero", filepath.Join(dir, "authorized_keys")) },
		"directory": func(dir string) error { return os.MkdirAll(filepath.Join(dir, "authorized_keys", "x"), 0o700) },
		// The user replaces ~/.ssh itself.
		".ssh a file": func(dir string) error { os.RemoveAll(dir); return os.WriteFile(dir, []byte("x"), 0o600) },
		".ssh links out": func(dir string) error {
			os.RemoveAll(dir)
			return os.Symlink(filepath.Join(filepath.Dir(filepath.Dir(dir)), "elsewhere"), dir)
		},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			users := fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n", keyA)
			v1 := cfg(t, users+fmt.Sprintf("[users.bob]\nssh_key = %q\n", keyB))
			must(t, r.apply("bob", &v1))
			dir := filepath.Join(r.root, "home/bob/.ssh")
			os.Remove(filepath.Join(dir, "authorized_keys"))
			if err := plant(dir); err != nil {
				t.Fatal(err)
			}
			if err := r.apply("bob's key is replaced", &v1); err != nil {
				t.Fatalf("apply with a planted entry = %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "authorized_keys")); err != nil || string(b) != keyB+"\n" {
				t.Errorf("bob's key = %q, %v", b, err)
			}
			if err := os.Remove(filepath.Join(dir, "authorized_keys")); err != nil {
				t.Fatal(err)
			}
			if err := plant(dir); err != nil {
				t.Fatal(err)
			}
			v2 := cfg(t, users)
			if err := r.apply("bob dropped", &v2); err != nil {
				t.Fatalf("dropping bob with a planted entry = %v", err)
			}
			if u, _ := r.sim.HostUser("bob"); !u.Expired {
				t.Errorf("bob is not locked: %+v", u)
			}
			if _, err := os.Lstat(filepath.Join(dir, "authorized_keys")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the planted entry survived: %v", err)
			}
		})
	}
}

// A name useradd refused (a group of that name exists) is not left in the record, so an
// account made later under that name is not taken for fleetprov's.
func TestFailedCreateIsForgotten(t *testing.T) {
	r := newRig(t)
	r.sim.SetHostFailOnce("useradd docker", errors.New("useradd: group docker exists"))
	m := cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n[users.docker]\n", keyA))
	if err := r.apply("useradd docker fails", &m); err == nil {
		t.Fatal("the failed useradd did not fail the apply")
	}
	r.sim.AddHostUser(system.HostUser{Name: "docker", UID: 999, GID: 999, Home: "/home/docker", Shell: "/bin/sh"})
	if _, err := host.Check(context.Background(), r.env, host.Render(m, host.Options{})); !errors.Is(err, host.ErrForeignAccount) {
		t.Errorf("an account made by someone else after the failure = %v; want it foreign", err)
	}
}

// TestChronyWhenTheImageRunsIt: on an image with chronyd the NTP servers go to chrony's
// sources dir and chrony reloads its sources; switching back to timesyncd (the image
// changed) removes our sources file.
func TestChronyWhenTheImageRunsIt(t *testing.T) {
	r := newRig(t)
	if host.HasChrony(r.root) {
		t.Fatal("HasChrony on a root without chronyd")
	}
	must(t, os.MkdirAll(filepath.Join(r.root, "usr/sbin"), 0o755))
	must(t, os.WriteFile(filepath.Join(r.root, host.Chronyd), nil, 0o755))
	if !host.HasChrony(r.root) {
		t.Fatal("HasChrony misses chronyd")
	}
	m := cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n[network.ntp]\nservers = [\"time.example.com\", \"192.0.2.123\"]\n", keyA))
	if _, err := host.Apply(context.Background(), r.env, host.Render(m, host.Options{Chrony: true}), func(record.Event) {}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(r.root, host.ChronySources))
	if !strings.Contains(string(got), "server time.example.com iburst\nserver 192.0.2.123 iburst\n") {
		t.Errorf("chrony sources:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(r.root, host.TimesyncDropIn)); err == nil {
		t.Error("a timesyncd drop-in on a chrony image")
	}
	if tr := r.sim.Transcript(); !strings.Contains(tr, "host: chronyc reload sources") || strings.Contains(tr, "timesyncd") {
		t.Errorf("transcript:\n%s", tr)
	}
	r.sim.Reset()
	if _, err := host.Apply(context.Background(), r.env, host.Render(m, host.Options{}), func(record.Event) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(r.root, host.ChronySources)); err == nil {
		t.Error("our chrony sources stayed after the switch to timesyncd")
	}
	if tr := r.sim.Transcript(); !strings.Contains(tr, "host: chronyc reload sources") || !strings.Contains(tr, "systemd-timesyncd") {
		t.Errorf("transcript after the switch:\n%s", tr)
	}
}

// A rollback restores all it can: a user it can no longer plan (its shell was removed
// meanwhile) is reported, and the firewall still goes back.
func TestRestorePutsBackWhatItCan(t *testing.T) {
	r := newRig(t)
	conf := func(port int) config.Model {
		return cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n[users.guest]\nshell = \"bash\"\n"+
			"[network.firewall.inbound.wan]\ntcp = [%d]\n", keyA, port))
	}
	v1, v2 := conf(443), conf(8443)
	must(t, r.apply("v1", &v1))
	must(t, r.apply("v2", &v2))
	if err := os.Remove(filepath.Join(r.root, "bin", "bash")); err != nil {
		t.Fatal(err)
	}
	err := host.Restore(context.Background(), r.env, host.Render(v1, host.Options{}), func(record.Event) {})
	if err == nil || !strings.Contains(err.Error(), "shell") {
		t.Errorf("Restore with the shell gone = %v; want the shell reported", err)
	}
	b, err := os.ReadFile(filepath.Join(r.root, host.FirewallRuleset))
	if err != nil || !strings.Contains(string(b), "443") || strings.Contains(string(b), "8443") {
		t.Errorf("after the rollback the ruleset is (%v):\n%s\nwant v1's port 443 back", err, b)
	}
}

// lookupFails is a host whose user database fails for one account.
type lookupFails struct {
	system.Host
	name string
}

func (h lookupFails) LookupUser(ctx context.Context, name string) (system.HostUser, bool, error) {
	if name == h.name {
		return system.HostUser{}, false, fmt.Errorf("getent passwd %s: database unavailable", name)
	}
	return h.Host.LookupUser(ctx, name)
}

// A rollback restores all it can when an account it would lock cannot be looked up (an
// unnamed supplementary group fails the lookup): the account is reported, and the
// firewall still goes back.
func TestRestorePastAnUnplannableStaleAccount(t *testing.T) {
	r := newRig(t)
	conf := func(extra string, port int) config.Model {
		return cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n%s[network.firewall.inbound.wan]\ntcp = [%d]\n", keyA, extra, port))
	}
	v1, v2 := conf("", 443), conf("[users.guest]\nshell = \"bash\"\n", 8443)
	must(t, r.apply("v1", &v1))
	must(t, r.apply("v2", &v2))
	r.env.Host = lookupFails{Host: r.env.Host, name: "guest"}
	err := host.Restore(context.Background(), r.env, host.Render(v1, host.Options{}), func(record.Event) {})
	if err == nil || !strings.Contains(err.Error(), "guest") {
		t.Errorf("Restore with guest unreadable = %v; want guest reported", err)
	}
	b, err := os.ReadFile(filepath.Join(r.root, host.FirewallRuleset))
	if err != nil || !strings.Contains(string(b), "443") || strings.Contains(string(b), "8443") {
		t.Errorf("after the rollback the ruleset is (%v):\n%s\nwant v1's port 443 back", err, b)
	}
}
