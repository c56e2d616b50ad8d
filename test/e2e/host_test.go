//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/internal/fptest"
)

// The addresses of the host-settings machine's two links. The host holds .1 on the WAN
// side (the hub's leafnode listener is bound there) and .50 on the LAN side; the machine's
// image brings eth0 up as .2, and its config moves it to .3 and makes it the LAN gateway.
const (
	wanHost  = "10.77.0.1"
	wanImage = "10.77.0.2"
	wanAddr  = "10.77.0.3"
	lanHost  = "10.78.0.50"
	lanAddr  = "10.78.0.1"
	cutAddr  = "10.79.0.3" // a subnet with no route to the hub
	webPort  = 8081        // allowed on the WAN
	deniedAt = 9999        // a listener no rule allows
)

// hostNet makes the network namespace of a machine with its own network: eth0 (WAN) and
// eth1 (LAN) inside, veth peers on the host with wanHost and lanHost.
func hostNet(t *testing.T, name string) {
	t.Helper()
	wan, lan := name+"-w", name+"-l"
	cleanup := func() {
		exec.Command("ip", "netns", "del", name).Run()
		exec.Command("ip", "link", "del", wan).Run()
		exec.Command("ip", "link", "del", lan).Run()
	}
	cleanup() // an interrupted run's leftovers
	t.Cleanup(cleanup)
	for _, args := range [][]string{
		{"netns", "add", name},
		{"link", "add", wan, "type", "veth", "peer", "name", "eth0", "netns", name},
		{"link", "add", lan, "type", "veth", "peer", "name", "eth1", "netns", name},
		{"addr", "add", wanHost + "/24", "dev", wan},
		{"addr", "add", lanHost + "/24", "dev", lan},
		{"link", "set", wan, "up"},
		{"link", "set", lan, "up"},
		{"-n", name, "link", "set", "lo", "up"},
	} {
		run(t, "ip", args...)
	}
}

// gatewayConfig is the config of the host-settings machine: its admin with key, eth0 at
// eth0Addr (with the hub's side as default gateway when on its subnet), eth1 as LAN
// gateway, NTP, and a WAN firewall that lets in SSH and the web container only.
func gatewayConfig(key, eth0Addr string, confirmSeconds int, broken bool) string {
	var b strings.Builder
	required := `"web"`
	if broken {
		required += `, "broken"`
	}
	fmt.Fprintf(&b, `version = 1

[users.admin]
isAdmin = true
ssh_key = %q

[network]
`, key)
	if strings.HasPrefix(eth0Addr, "10.77.0.") {
		fmt.Fprintf(&b, "default_gateway = %q\n", wanHost)
	}
	fmt.Fprintf(&b, `
[network.interfaces.eth0]
mode = "static"
address = "%s/24"

[network.interfaces.eth1]
mode = "static"
address = "%s/24"

[network.ntp]
servers = [%q]

[network.firewall.inbound.wan]
tcp = [22, %d]

[activation]
required = [%s]
timeout_seconds = 30
confirm_seconds = %d
`, eth0Addr, lanAddr, wanHost, webPort, required, confirmSeconds)
	b.WriteString(webContainer(webPort))
	if broken {
		b.WriteString(brokenContainer)
	}
	return b.String()
}

// dial connects to addr: nil when something answers, a timeout when the packets are
// dropped, "connection refused" when nothing listens.
func dial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

func dropped(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ssh logs in as admin with key and runs id -un.
func ssh(key, addr string) (string, error) {
	out, err := exec.Command("ssh", "-i", key, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
		"-o", "LogLevel=ERROR", "admin@"+addr, "id", "-un").CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestHostSettings applies a config's host part for real in a machine with its own
// network: the admin account and its SSH key (sshd in the image), a static eth0 and the
// LAN gateway on eth1 by systemd-networkd, the nftables WAN rules, the timesyncd drop-in;
// a failing container rolls all of it back, and a network change that cuts the hub link
// is rolled back when the confirm window closes.
func TestHostSettings(t *testing.T) {
	need(t, os.Geteuid() == 0, "root")
	requireTools(t, [2]string{"iproute2", "ip"}, [2]string{"openssh-client", "ssh"})
	start := time.Now()
	defer func() { t.Logf("host e2e wall time %s", time.Since(start).Round(time.Second)) }()
	const name = "e2e-dev3"
	hostNet(t, name)
	e := newEnv(t, wanHost+":-1")
	base := rootfs(t)
	d := newDevice(t, base, e.bins, name, 3, e.hub.LeafURL(), `"e2e-gw"`)
	d.netns = name
	// The image's own network setup: eth0 at wanImage until the config says otherwise
	// (a 90- file: fleetprov's 50- files come first), and sshd.
	for _, u := range []string{"ssh.service", "ssh.socket"} {
		os.Remove(filepath.Join(d.dir, "etc/systemd/system", u))
	}
	os.WriteFile(filepath.Join(d.dir, "etc/systemd/network/90-image-eth0.network"),
		[]byte("[Match]\nName=eth0\n\n[Network]\nAddress="+wanImage+"/24\n"), 0o644)
	t.Cleanup(d.stop)
	d.boot()
	d.exec("systemctl", "enable", "--now", "systemd-networkd.service")
	d.prepareWorkloads()
	// An account the image made, which fleetprov must never touch.
	d.exec("sh", "-c", "useradd -m -s /bin/sh opsuser && mkdir -p /home/opsuser/.ssh && echo 'ssh-ed25519 AAAA opsuser' > /home/opsuser/.ssh/authorized_keys")
	foreign := func() string {
		return d.exec("sh", "-c", "getent passwd opsuser; getent shadow opsuser; id -nG opsuser; sha256sum /home/opsuser/.ssh/authorized_keys; stat -c '%U %a' /home/opsuser/.ssh/authorized_keys")
	}
	image := foreign()
	d.exec("busybox", "httpd", "-p", fmt.Sprint(deniedAt), "-h", "/tmp")
	if !fptest.Eventually(30*time.Second, func() bool { return dial(fmt.Sprintf("%s:%d", wanImage, deniedAt)) == nil }) {
		out, _ := d.execOut("sh", "-c", "ip addr; networkctl --no-pager; ss -ltnp; journalctl --no-pager -n 30 -u systemd-networkd")
		t.Fatalf("%s:%d does not answer from the host:\n%s", wanImage, deniedAt, out)
	}
	e.enrol(t, d, name)

	key1, key2 := filepath.Join(e.keys, "id"), filepath.Join(e.keys, "id2")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key2)
	pub2, _ := os.ReadFile(key2 + ".pub")
	use := func(t *testing.T) func() {
		d.t, e.t = t, t
		return func() { d.t, e.t = e.root, e.root }
	}
	push := func(file, cfg string, args ...string) (int, string) {
		p := filepath.Join(e.keys, file)
		os.WriteFile(p, []byte(cfg), 0o644)
		return e.publisher(append([]string{"push", p, "--device", name, "--timeout", "3m"}, args...)...)
	}
	addrs := func(dev string) string { return d.exec("ip", "-4", "-o", "addr", "show", "dev", dev) }

	t.Run("1_users_network_firewall_ntp", func(t *testing.T) {
		defer use(t)()
		code, out := push("gw-a.toml", gatewayConfig(e.adminLine, wanAddr, 60, false))
		if code != 0 {
			t.Fatalf("push = %d\n%s\n%s", code, out, d.exec("journalctl", "--no-pager", "-n", "80", "-u", "fleetprov-worker.service"))
		}
		j := d.lastJob()
		events, _ := j["events"].([]any)
		confirmed := ""
		for _, ev := range events {
			if m, ok := ev.(map[string]any); ok && m["step"] == "confirm" && m["status"] == "confirmed" {
				confirmed = fmt.Sprint(m["message"])
			}
		}
		if confirmed == "" {
			t.Errorf("the network change was not confirmed through the hub: %v", events)
		}
		t.Logf("the hub link over the new address: %s", confirmed)
		if a := addrs("eth0"); !strings.Contains(a, wanAddr+"/24") {
			t.Errorf("eth0 (networkd): %s", a)
		}
		if a := addrs("eth1"); !strings.Contains(a, lanAddr+"/24") {
			t.Errorf("eth1, the LAN gateway (networkd): %s", a)
		}
		if r := d.exec("ip", "-4", "route", "show", "default"); !strings.Contains(r, "via "+wanHost+" dev eth0") {
			t.Errorf("default route: %q", r)
		}
		if who, err := ssh(key1, wanAddr); err != nil || who != "admin" {
			t.Errorf("ssh admin@%s with the admin's key: %q, %v", wanAddr, who, err)
		}
		if err := dial(fmt.Sprintf("%s:%d", wanAddr, webPort)); err != nil {
			t.Errorf("the allowed WAN port %d: %v", webPort, err)
		}
		if err := dial(fmt.Sprintf("%s:%d", wanAddr, deniedAt)); !dropped(err) {
			t.Errorf("port %d on the WAN, which no rule allows: %v; want it dropped (a timeout)", deniedAt, err)
		}
		if err := dial(fmt.Sprintf("%s:%d", lanAddr, deniedAt)); err != nil {
			t.Errorf("port %d from the LAN (open without an allowlist): %v", deniedAt, err)
		}
		if ntp := d.exec("cat", "/etc/systemd/timesyncd.conf.d/50-fleetprov.conf"); !strings.Contains(ntp, "NTP="+wanHost) {
			t.Errorf("timesyncd drop-in: %q", ntp)
		}
	})

	t.Run("2_failed_container_restores_the_host", func(t *testing.T) {
		defer use(t)()
		cfg := gatewayConfig(strings.TrimSpace(string(pub2)), wanAddr, 60, true)
		// The plan first, from the device itself (nft -c on its host); it applies nothing.
		code, out := push("gw-b.toml", cfg, "--plan")
		for _, want := range []string{"unit  add     broken.container (rootful)", "host  key admin: write (~/.ssh/authorized_keys)"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("push --plan = %d, without %q\n%s", code, want, out)
			}
		}
		if strings.Contains(out, "host  file") || strings.Contains(out, "web.container") {
			t.Errorf("push --plan lists what stays the same:\n%s", out)
		}
		if who, err := ssh(key2, wanAddr); err == nil {
			t.Fatalf("push --plan installed the new key: %q", who)
		}
		code, out = push("gw-b.toml", cfg)
		if code != 1 || !strings.Contains(out, "rolled-back") {
			t.Fatalf("push with a broken container = %d\n%s", code, out)
		}
		if j := d.lastJob(); !strings.Contains(fmt.Sprint(j["events"]), "authorized_keys") {
			t.Errorf("the job did not write the new key before it rolled back: %v", j["events"])
		}
		if who, err := ssh(key1, wanAddr); err != nil || who != "admin" {
			t.Errorf("the admin's old key after the rollback: %q, %v", who, err)
		}
		if who, err := ssh(key2, wanAddr); err == nil {
			t.Errorf("the rolled-back key still logs in: %q", who)
		}
	})

	t.Run("3_cut_hub_link_rolls_back", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		code, out := push("gw-c.toml", gatewayConfig(e.adminLine, cutAddr, 10, false), "--detach")
		if code != 0 {
			t.Fatalf("push --detach = %d\n%s", code, out)
		}
		d.waitFor("the change to be applied", 60*time.Second, func() bool { return strings.Contains(addrs("eth0"), cutAddr) })
		d.waitFor("the confirm window to close and roll back", 90*time.Second, func() bool {
			j := d.lastJob()
			return j["state"] != nil && j["state"] != "running"
		})
		j := d.lastJob()
		t.Logf("rolled back %s after the push: %v / %v", time.Since(t0).Round(100*time.Millisecond), j["state"], j["error"])
		if !strings.Contains(fmt.Sprint(j["error"]), "network change not confirmed") {
			t.Errorf("job = %v / %v; want not confirmed", j["state"], j["error"])
		}
		if a := addrs("eth0"); !strings.Contains(a, wanAddr+"/24") || strings.Contains(a, cutAddr) {
			t.Errorf("eth0 after the rollback: %s", a)
		}
		d.waitFor("the hub link to come back", 60*time.Second, func() bool {
			code, _ := e.publisher("ls", "--device", name, "--reply-timeout", "2s")
			return code == 0
		})
		if who, err := ssh(key1, wanAddr); err != nil || who != "admin" {
			t.Errorf("ssh after the rollback: %q, %v", who, err)
		}
	})

	if got := foreign(); got != image {
		t.Errorf("the image's own account changed:\nbefore %s\nafter  %s", image, got)
	}
}
