//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/internal/fptest"
)

// cacheDir keeps the debootstrapped root filesystem between runs.
func cacheDir() string {
	if d := os.Getenv("FLEETPROV_E2E_CACHE"); d != "" {
		return d
	}
	return "/var/cache/fleetprov-e2e"
}

// need fails (CI) or skips the test when a prerequisite is missing.
func need(t *testing.T, ok bool, what string) {
	t.Helper()
	fptest.Need(t, ok, "e2e: "+what)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// imagePackages is what the device image has on top of minbase: systemd and Podman for
// the workloads; sshd, nftables and timesyncd for the host settings.
const imagePackages = "systemd,systemd-sysv,dbus,podman,busybox-static,iproute2,ca-certificates,uidmap,passt,libpam-systemd,openssh-server,nftables,systemd-timesyncd"

// rootfs returns the cached base root filesystem, building it on first use (~1-3 min). The
// cache is keyed by the package list, so adding a package rebuilds it.
func rootfs(t *testing.T) string {
	t.Helper()
	sum := sha256.Sum256([]byte(imagePackages))
	dir := filepath.Join(cacheDir(), "rootfs-"+hex.EncodeToString(sum[:4]))
	if _, err := os.Stat(filepath.Join(dir, "usr/bin/podman")); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	os.MkdirAll(cacheDir(), 0o755)
	t.Logf("building the device root filesystem in %s (debootstrap trixie)", tmp)
	start := time.Now()
	run(t, "debootstrap", "--variant=minbase", "--include="+imagePackages, "trixie", tmp)
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	// Older images (another package list) go.
	old, _ := filepath.Glob(filepath.Join(cacheDir(), "rootfs*"))
	for _, o := range old {
		if o != dir {
			os.RemoveAll(o)
		}
	}
	t.Logf("root filesystem built in %s", time.Since(start).Round(time.Second))
	return dir
}

// device is one booted systemd-nspawn machine. It shares the host's network namespace
// (each gets its own ports), or has its own (netns) with eth0 and eth1.
type device struct {
	t        *testing.T
	name     string
	dir      string
	netns    string // /run/netns/<netns>; "" = the host's
	nspawn   *exec.Cmd
	pid      int // the container's systemd (PID 1 inside)
	httpPort int
	natsPort int
	webPort  int
	appPort  int
}

// newDevice copies the base rootfs, installs the worker and its units, and writes the
// test-environment settings (podman without cgroups or keyrings: this host's kernel setup).
func newDevice(t *testing.T, base, bins, name string, n int, hubLeaf string, groups string) *device {
	t.Helper()
	d := &device{t: t, name: name, dir: filepath.Join(t.TempDir(), name),
		httpPort: 18080 + n, natsPort: 14220 + n, webPort: 18180 + n, appPort: 18280 + n}
	run(t, "cp", "-a", base, d.dir)
	write := func(rel, content string, mode os.FileMode) {
		p := filepath.Join(d.dir, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/machine-id", fmt.Sprintf("%032x\n", time.Now().UnixNano()+int64(n)), 0o444)
	write("etc/hostname", name+"\n", 0o644)
	for _, b := range []string{"worker", "publisher"} {
		raw, err := os.ReadFile(filepath.Join(bins, b))
		if err != nil {
			t.Fatal(err)
		}
		write("usr/local/bin/"+b, string(raw), 0o755)
	}
	for _, u := range []string{"fleetprov-worker.service", "fleetprov-worker.socket"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", u))
		if err != nil {
			t.Fatal(err)
		}
		write("etc/systemd/system/"+u, string(raw), 0o644)
	}
	// Enable the socket and the service.
	os.MkdirAll(filepath.Join(d.dir, "etc/systemd/system/sockets.target.wants"), 0o755)
	os.MkdirAll(filepath.Join(d.dir, "etc/systemd/system/multi-user.target.wants"), 0o755)
	os.Symlink("/etc/systemd/system/fleetprov-worker.socket", filepath.Join(d.dir, "etc/systemd/system/sockets.target.wants/fleetprov-worker.socket"))
	os.Symlink("/etc/systemd/system/fleetprov-worker.service", filepath.Join(d.dir, "etc/systemd/system/multi-user.target.wants/fleetprov-worker.service"))
	// sshd would listen on the host's port 22: only a device with its own network runs it.
	for _, u := range []string{"ssh.service", "ssh.socket"} {
		os.Symlink("/dev/null", filepath.Join(d.dir, "etc/systemd/system", u))
	}
	// Devices share the host's network namespace: each socket gets its own port.
	write("etc/systemd/system/fleetprov-worker.socket.d/10-e2e.conf", fmt.Sprintf("[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n", d.httpPort), 0o644)
	write("etc/fleetprov/worker.toml", fmt.Sprintf(`fleet = "e2e"
device-id = %q
groups = [%s]
hub = %q
hub-creds = "/etc/fleetprov/hub.creds"
nats-listen = "127.0.0.1:%d"
bridge-port = %d
heartbeat = "2s"
`, name, groups, hubLeaf, d.natsPort, d.httpPort), 0o644)
	// Test-environment only: this host's kernel setup needs podman without cgroups and
	// keyrings. The product does not need these on a real device.
	write("etc/containers/containers.conf", "[containers]\nkeyring = false\ncgroups = \"disabled\"\ndefault_sysctls = []\n", 0o644)
	write("etc/containers/systemd/container.d/10-nspawn.conf", "[Container]\nPodmanArgs=--cgroups=disabled\n", 0o644)
	write("etc/containers/systemd/users/container.d/10-nspawn.conf", "[Container]\nPodmanArgs=--cgroups=disabled\n", 0o644)
	// A foreign file in the Quadlet dir that fleetprov must never touch.
	write("etc/containers/systemd/README.local", "managed by the image, not by fleetprov\n", 0o644)
	return d
}

// boot starts the machine and waits for systemd to settle.
func (d *device) boot() {
	t := d.t
	t.Helper()
	args := []string{"-D", d.dir, "-M", d.name, "-b", "--register=no", "--keep-unit", "--console=passive"}
	if d.netns != "" {
		// Its own network namespace: nspawn keeps CAP_NET_ADMIN only for a private
		// network, which this is (networkd and nft need it).
		args = append(args, "--network-namespace-path=/run/netns/"+d.netns, "--capability=CAP_NET_ADMIN")
	}
	d.nspawn = exec.Command("systemd-nspawn", args...)
	d.nspawn.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var log bytes.Buffer
	d.nspawn.Stdout, d.nspawn.Stderr = &log, &log
	if err := d.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	if !fptest.Eventually(60*time.Second, func() bool {
		out, _ := exec.Command("ps", "--ppid", strconv.Itoa(d.nspawn.Process.Pid), "-o", "pid=,comm=").Output()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[1] == "systemd" {
				d.pid, _ = strconv.Atoi(f[0])
			}
		}
		return d.pid != 0
	}) {
		t.Fatalf("%s: no systemd inside after 60s:\n%s", d.name, log.String())
	}
	d.waitFor("the system to be running or degraded", 60*time.Second, func() bool {
		out, _ := d.execOut("systemctl", "is-system-running")
		state := strings.TrimSpace(out)
		return state == "running" || state == "degraded"
	})
}

// stop powers the machine off (SIGKILL to nspawn if it does not go).
func (d *device) stop() {
	if d.nspawn == nil || d.nspawn.Process == nil {
		return
	}
	d.execOut("systemctl", "poweroff")
	done := make(chan struct{})
	go func() { d.nspawn.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// Killing nspawn alone would orphan the machine: its PID 1 goes first, which takes
		// the whole PID namespace with it.
		if d.pid > 0 {
			syscall.Kill(d.pid, syscall.SIGKILL)
		}
		syscall.Kill(-d.nspawn.Process.Pid, syscall.SIGKILL)
		<-done
	}
	d.nspawn, d.pid = nil, 0
}

// execOut runs a command inside the device (nsenter into all of PID 1's namespaces).
func (d *device) execOut(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(d.pid), "-a"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *device) exec(args ...string) string {
	d.t.Helper()
	out, err := d.execOut(args...)
	if err != nil {
		d.t.Fatalf("%s: %s: %v\n%s", d.name, strings.Join(args, " "), err, out)
	}
	return out
}

// user runs a command as the app user with its manager's environment.
func (d *device) user(args ...string) (string, error) {
	uid := strings.TrimSpace(d.exec("id", "-u", "appsvc"))
	env := []string{"runuser", "-u", "appsvc", "--", "env", "XDG_RUNTIME_DIR=/run/user/" + uid, "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/" + uid + "/bus"}
	return d.execOut(append(env, args...)...)
}

// waitFor polls cond inside the device.
func (d *device) waitFor(what string, timeout time.Duration, cond func() bool) {
	d.t.Helper()
	fptest.WaitFor(d.t, timeout, d.name+": "+what, cond)
}

// treeDigest hashes the active config tree inside the device.
func (d *device) treeDigest() string {
	return d.exec("sh", "-c", "cd /var/lib/fleetprov/config && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum")
}

var _ = context.Background
