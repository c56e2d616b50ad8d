//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// workload is the config of one device; every port is the device's own, since the
// machines share the host's network namespace.
type workload struct {
	admin             string
	webPort, appPort  int
	app, broken, slow bool
	check             string // an [activation.health.web] table body
	// secret: web (rootful) mounts secret tok as a file, app (rootless) gets it as $TOK.
	secret bool
}

func (w workload) toml() string {
	var b strings.Builder
	required := []string{`"web"`}
	if w.app {
		required = append(required, `"app"`)
	}
	if w.broken {
		required = append(required, `"broken"`)
	}
	fmt.Fprintf(&b, "version = 1\n\n[users.admin]\nisAdmin = true\nssh_key = %q\n\n[activation]\nrequired = [%s]\ntimeout_seconds = 30\n", w.admin, strings.Join(required, ", "))
	if w.slow {
		b.WriteString("settle_seconds = 10\n")
	}
	b.WriteString(webContainer(w.webPort))
	if w.secret {
		b.WriteString("Secret = [\"tok,type=mount,target=/run/secrets/tok\"]\n")
	}
	if w.app {
		fmt.Fprintf(&b, `
[containers.container.app]
privileged = false
[containers.container.app.Container]
Image = "localhost/busybox:latest"
Pull = "never"
Exec = ["/bin/httpd", "-f", "-p", "8080"]
StopTimeout = 1
PublishPort = ["%d:8080"]
`, w.appPort)
		if w.secret {
			b.WriteString("Secret = [\"tok,type=env,target=TOK\"]\n")
		}
	}
	if w.check != "" {
		b.WriteString("\n[activation.health.web]\n" + w.check + "\n")
	}
	if w.secret {
		b.WriteString("\n[secrets.tok]\ndescription = \"e2e token\"\n")
	}
	if w.broken {
		b.WriteString(brokenContainer)
	}
	return b.String()
}

// webContainer is the rootful web container: busybox httpd on port (the host network).
func webContainer(port int) string {
	return fmt.Sprintf(`
[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "localhost/busybox:latest"
Pull = "never"
Exec = ["/bin/httpd", "-f", "-p", "%d"]
StopTimeout = 1
`, port)
}

// brokenContainer is a required container whose image is missing: it never starts.
const brokenContainer = `
[containers.container.broken]
privileged = true
[containers.container.broken.Container]
Image = "localhost/missing:latest"
Pull = "never"
`

type env struct {
	t, root    *testing.T
	bins, keys string
	hub        *broker.Broker
	adminLine  string
}

// publisher runs the real publisher binary against the hub; it returns the exit code.
func (e *env) publisher(args ...string) (int, string) {
	e.t.Helper()
	if args[0] != "nats" {
		args = append(args, "--server", e.hub.ClientURL())
	}
	args = append(args, "--fleet", "e2e")
	if args[0] == "push" || args[0] == "current" || args[0] == "export" || args[0] == "secrets" {
		args = append(args, "--key", filepath.Join(e.keys, "id"))
	}
	cmd := exec.Command(filepath.Join(e.bins, "publisher"), args...)
	// HOME holds the fleet's NATS keys and publisher.creds (publisher nats init), which
	// every command then uses by default.
	cmd.Env = append(os.Environ(), "FLEETPROV_KNOWN_DEVICES="+filepath.Join(e.keys, "known_devices"), "HOME="+e.keys)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	e.t.Logf("publisher %s -> %d\n%s", strings.Join(args, " "), code, out)
	return code, string(out)
}

func (e *env) writeConfig(name string, w workload) string {
	p := filepath.Join(e.keys, name)
	os.WriteFile(p, []byte(w.toml()), 0o644)
	return p
}

func httpUp(port int) bool {
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return false
	}
	res.Body.Close()
	return true
}

// prepareWorkloads makes the app user and imports the busybox image, rootful and rootless.
func (d *device) prepareWorkloads() {
	d.exec("sh", "-c", "id appsvc >/dev/null 2>&1 || useradd -m -s /bin/sh appsvc")
	d.exec("sh", "-c", `mkdir -p /tmp/bb/bin && cp /bin/busybox /tmp/bb/bin/ && cd /tmp/bb && for a in sh httpd sleep; do ln -sf busybox bin/$a; done && tar -cf /tmp/bb.tar . && chmod 644 /tmp/bb.tar && podman import /tmp/bb.tar localhost/busybox:latest >/dev/null`)
	d.exec("sh", "-c", `loginctl enable-linger appsvc && systemctl start user@$(id -u appsvc).service`)
	if out, err := d.user("podman", "import", "/tmp/bb.tar", "localhost/busybox:latest"); err != nil {
		d.t.Fatalf("rootless import: %v\n%s", err, out)
	}
}

func (d *device) active(unit string) bool {
	out, _ := d.execOut("systemctl", "is-active", unit)
	return strings.TrimSpace(out) == "active"
}

func (d *device) userActive(unit string) bool {
	out, _ := d.user("systemctl", "--user", "is-active", unit)
	return strings.TrimSpace(out) == "active"
}

func (d *device) exists(path string) bool {
	_, err := d.execOut("test", "-e", path)
	return err == nil
}

func (d *device) lastJob() map[string]any {
	out := d.exec("sh", "-c", "ls -t /var/lib/fleetprov/jobs/*.json | head -1 | xargs cat")
	var j map[string]any
	json.Unmarshal([]byte(out), &j)
	return j
}

// requireTools fails (under CI=true; skips elsewhere) without the tools that boot and
// reach the machines, extra ones included.
func requireTools(t *testing.T, extra ...[2]string) {
	t.Helper()
	for _, tool := range append([][2]string{{"debootstrap", "debootstrap"}, {"systemd-container", "systemd-nspawn"}, {"util-linux", "nsenter"}}, extra...) {
		fptest.RequireTool(t, tool[0], tool[1])
	}
}

func TestDevices(t *testing.T) {
	need(t, os.Geteuid() == 0, "root")
	requireTools(t)
	start := time.Now()
	timings := map[string]time.Duration{}
	mark := func(name string, since time.Time) { timings[name] = time.Since(since).Round(100 * time.Millisecond) }
	defer func() {
		t.Logf("e2e wall time %s; steps: %v", time.Since(start).Round(time.Second), timings)
	}()

	t0 := time.Now()
	e := newEnv(t, "127.0.0.1:-1")
	mark("build", t0)
	t0 = time.Now()
	base := rootfs(t)
	mark("rootfs", t0)

	t0 = time.Now()
	d1 := newDevice(t, base, e.bins, "e2e-dev1", 1, e.hub.LeafURL(), `"e2e-grp"`)
	d2 := newDevice(t, base, e.bins, "e2e-dev2", 2, e.hub.LeafURL(), `"e2e-grp"`)
	t.Cleanup(d1.stop)
	t.Cleanup(d2.stop)
	d1.boot()
	d2.boot()
	d1.prepareWorkloads()
	d2.prepareWorkloads()
	mark("boot", t0)
	w1 := workload{admin: e.adminLine, webPort: d1.webPort, appPort: d1.appPort}

	// Device helpers report through the running subtest.
	use := func(t *testing.T) func() {
		d1.t, d2.t, e.t = t, t, t
		return func() { d1.t, d2.t, e.t = e.root, e.root, e.root }
	}
	e.root = t

	t.Run("1_first_boot_over_http", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		defer mark("step1", t0)
		d1.waitFor("the HTTP bridge", 30*time.Second, func() bool { return httpUp(d1.httpPort) })
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/api/config", d1.httpPort), strings.NewReader(w1.toml()))
		req.Header.Set(wire.FirstBootHeader, "1")
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /api/config = %v, %v", res, err)
		}
		var sub struct {
			JobID string `json:"job_id"`
		}
		json.NewDecoder(res.Body).Decode(&sub)
		res.Body.Close()
		var job struct {
			State  string
			Events []struct {
				Step, Service, Status string
				Elapsed               float64 `json:"elapsed_seconds"`
			}
		}
		d1.waitFor("the first job", 120*time.Second, func() bool {
			r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/jobs/%s", d1.httpPort, sub.JobID))
			if err != nil {
				return false
			}
			defer r.Body.Close()
			json.NewDecoder(r.Body).Decode(&job)
			return job.State == "succeeded" || job.State == "failed"
		})
		if job.State != "succeeded" {
			t.Fatalf("first job = %+v\n%s", job, d1.exec("journalctl", "--no-pager", "-n", "60", "-u", "fleetprov-worker.service"))
		}
		if !d1.active("web.service") {
			t.Errorf("web.service not active")
		}
		if !httpUp(d1.webPort) {
			t.Errorf("the web container's port %d does not answer", d1.webPort)
		}
		// The host backend made the admin account (useradd in the machine) with its key,
		// owned by it, 0600.
		if out := d1.exec("sh", "-c", "getent passwd admin | cut -d: -f7; id -nG admin; stat -c '%U %a' /home/admin/.ssh/authorized_keys; cat /home/admin/.ssh/authorized_keys"); !strings.Contains(out, "sudo") || !strings.Contains(out, "admin 600") || !strings.Contains(out, w1.admin) {
			t.Errorf("the admin account in the machine:\n%s", out)
		}
		// The host part's apply time on a real device: from promote to the last host step.
		var promoted, hostDone float64
		for _, ev := range job.Events {
			switch ev.Step {
			case "promote":
				promoted = ev.Elapsed
			case "host":
				hostDone = ev.Elapsed
			}
		}
		t.Logf("host settings applied in %.3fs (promote to the last host step)", hostDone-promoted)
		var steps []string
		for _, ev := range job.Events {
			steps = append(steps, ev.Step+":"+ev.Service+":"+ev.Status)
		}
		if !strings.Contains(strings.Join(steps, " "), "service-deploy:web.service:restarted") || !strings.Contains(strings.Join(steps, " "), "health-check:web.service:healthy") {
			t.Errorf("events = %v", steps)
		}
	})

	t.Run("1b_enrol_by_fingerprint", func(t *testing.T) {
		defer use(t)()
		e.enrol(t, d1, "e2e-dev1") // ends when ls shows it enrolled through the hub
	})

	t.Run("2_rootless_over_nats", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		defer mark("step2", t0)
		w := w1
		w.app = true
		code, out := e.publisher("push", e.writeConfig("d1-app.toml", w), "--device", "e2e-dev1", "--timeout", "3m")
		if code != 0 {
			t.Fatalf("push = %d\n%s\n%s", code, out, d1.exec("journalctl", "--no-pager", "-n", "80"))
		}
		if !d1.active("web.service") || !d1.userActive("app.service") {
			t.Errorf("web active %v, app (rootless) active %v", d1.active("web.service"), d1.userActive("app.service"))
		}
		if !httpUp(d1.appPort) {
			t.Errorf("the rootless container's published port %d does not answer", d1.appPort)
		}
		if !d1.exists("/etc/containers/systemd/web.container") || !d1.exists("/home/appsvc/.config/containers/systemd/app.container") {
			t.Errorf("Quadlet files are not where the spec says")
		}
		if got := d1.exec("cat", "/etc/containers/systemd/README.local"); got != "managed by the image, not by fleetprov\n" {
			t.Errorf("foreign file changed: %q", got)
		}
		if !d1.exists("/etc/containers/systemd/container.d/10-nspawn.conf") {
			t.Errorf("foreign drop-in removed")
		}
		if out := d1.exec("sh", "-c", "stat -c %U /home/appsvc/.config /home/appsvc/.config/containers"); strings.Contains(out, "root") {
			t.Errorf("the app user's config dirs belong to root:\n%s", out)
		}
	})

	t.Run("2b_secrets_rootful_and_rootless", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		defer mark("step2b", t0)
		w := w1
		w.app, w.secret = true, true
		tok := filepath.Join(e.keys, "tok")
		os.WriteFile(tok, []byte("e2e-token-v1"), 0o600)
		code, out := e.publisher("push", e.writeConfig("d1-secret.toml", w), "--device", "e2e-dev1", "--timeout", "3m", "--secret", "tok=@"+tok)
		if code != 0 {
			t.Fatalf("push with a secret = %d\n%s\n%s", code, out, d1.exec("journalctl", "--no-pager", "-n", "60", "-u", "fleetprov-worker.service"))
		}
		read := func() (file, env string) {
			file, _ = d1.execOut("sh", "-c", "podman exec systemd-web /bin/busybox cat /run/secrets/tok 2>/dev/null")
			env, _ = d1.user("podman", "exec", "systemd-app", "/bin/busybox", "env")
			return file, env
		}
		if file, env := read(); file != "e2e-token-v1" || !strings.Contains(env, "TOK=e2e-token-v1") {
			t.Errorf("rootful mounted file = %q; rootless env has TOK: %v", file, strings.Contains(env, "TOK="))
		}
		if out := d1.exec("sh", "-c", "grep -rl e2e-token-v1 /var/lib/fleetprov || true"); strings.TrimSpace(out) != "" {
			t.Errorf("plaintext in the state dir: %s", out)
		}
		// Rotation without the config: both containers see the new value.
		os.WriteFile(tok, []byte("e2e-token-v2"), 0o600)
		if code, out := e.publisher("secrets", "set", "--device", "e2e-dev1", "--secret", "tok=@"+tok); code != 0 {
			t.Fatalf("secrets set = %d\n%s", code, out)
		}
		if file, env := read(); file != "e2e-token-v2" || !strings.Contains(env, "TOK=e2e-token-v2") {
			t.Errorf("after rotation: rootful file = %q; rootless env has the new value: %v", file, strings.Contains(env, "TOK=e2e-token-v2"))
		}
		if code, out := e.publisher("secrets", "ls", "--device", "e2e-dev1"); code != 0 || !strings.Contains(out, "tok") || !strings.Contains(out, "app,web") || strings.Contains(out, "e2e-token") {
			t.Errorf("secrets ls = %d\n%s", code, out)
		}
	})

	t.Run("3_failed_required_container_rolls_back", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		defer mark("step3", t0)
		before := d1.treeDigest()
		w := w1
		w.app, w.broken = true, true
		code, out := e.publisher("push", e.writeConfig("d1-broken.toml", w), "--device", "e2e-dev1", "--timeout", "3m")
		if code != 1 || !strings.Contains(out, "rolled-back") || !strings.Contains(out, "rollback completed") {
			t.Fatalf("push broken = %d\n%s", code, out)
		}
		// Failed fast: the unit that cannot start is named with its result, not waited
		// for until the 30 s timeout.
		if !strings.Contains(out, "required unit failed: broken.service failed") || strings.Contains(out, "timed out") {
			t.Errorf("push broken did not fail fast on the failed unit:\n%s", out)
		}
		if after := d1.treeDigest(); after != before {
			t.Errorf("active config differs after rollback")
		}
		d1.waitFor("the previous containers", 60*time.Second, func() bool { return d1.active("web.service") && d1.userActive("app.service") })
		if d1.exists("/etc/containers/systemd/broken.container") {
			t.Errorf("broken.container left behind")
		}
	})

	t.Run("3b_failing_http_check_rolls_back", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		defer mark("step3b", t0)
		before := d1.treeDigest()
		w := w1
		w.app = true
		// The container runs, but its health endpoint does not answer 200.
		w.check = fmt.Sprintf("http = \"http://127.0.0.1:%d/healthz\"\ninterval_seconds = 1\nretries = 2", w.webPort)
		code, out := e.publisher("push", e.writeConfig("d1-unhealthy.toml", w), "--device", "e2e-dev1", "--timeout", "3m")
		if code != 1 || !strings.Contains(out, "rolled-back") || !strings.Contains(out, "health check failed") ||
			!strings.Contains(out, fmt.Sprintf("http://127.0.0.1:%d/healthz → 404 (want 200)", w.webPort)) {
			t.Fatalf("push with a failing check = %d\n%s", code, out)
		}
		if after := d1.treeDigest(); after != before {
			t.Errorf("active config differs after rollback")
		}
		d1.waitFor("the previous containers", 60*time.Second, func() bool { return d1.active("web.service") && d1.userActive("app.service") })
	})

	t.Run("4_removed_container_is_stopped", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		defer mark("step4", t0)
		code, out := e.publisher("push", e.writeConfig("d1-noapp.toml", w1), "--device", "e2e-dev1", "--timeout", "3m", "--json")
		if code != 0 {
			t.Fatalf("push = %d\n%s", code, out)
		}
		var sum struct {
			Devices []struct {
				JobID string `json:"job_id"`
			}
		}
		json.Unmarshal([]byte(out), &sum)
		if len(sum.Devices) == 1 {
			e.publisher("job", sum.Devices[0].JobID, "--device", "e2e-dev1")
		}
		if d1.exists("/home/appsvc/.config/containers/systemd/app.container") {
			t.Errorf("app.container still there")
		}
		if d1.userActive("app.service") {
			t.Errorf("app.service still active")
		}
		if httpUp(d1.appPort) {
			t.Errorf("port %d still answers", d1.appPort)
		}
	})

	t.Run("5_kill_worker_mid_apply", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		defer mark("step5", t0)
		w := w1
		w.app, w.slow = true, true
		code, out := e.publisher("push", e.writeConfig("d1-slow.toml", w), "--device", "e2e-dev1", "--detach")
		if code != 0 {
			t.Fatalf("push --detach = %d\n%s", code, out)
		}
		d1.waitFor("the job to reach settle", 120*time.Second, func() bool {
			j := d1.lastJob()
			return j["stage"] == "settle"
		})
		d1.exec("systemctl", "kill", "--signal=SIGKILL", "fleetprov-worker.service")
		d1.waitFor("the worker to come back", 60*time.Second, func() bool { return d1.active("fleetprov-worker.service") && httpUp(d1.httpPort) })
		j := d1.lastJob()
		if j["state"] != "failed" || j["error"] != "interrupted" {
			t.Errorf("interrupted job reads back as %v / %v", j["state"], j["error"])
		}
		// Recovery kept the promoted state (a completed promotion is final) or restored the
		// old one; either way what runs matches it, and nothing drifted.
		status := d1.exec("worker", "status")
		if !strings.Contains(status, "drift:        none") {
			t.Errorf("status after recovery:\n%s", status)
		}
		hasApp := d1.exists("/var/lib/fleetprov/config/quadlet/rootless/app.container")
		d1.waitFor("units to match the recovered state", 60*time.Second, func() bool {
			return d1.active("web.service") && d1.userActive("app.service") == hasApp
		})
	})

	// The two machines share the host's network namespace, so one config (its ports)
	// cannot run on both: each gets its own push. A group's offline member taking the
	// group's key is test/fleet's TestDurableDesiredState.
	t.Run("6_push_with_a_device_down", func(t *testing.T) {
		defer use(t)()
		t0 := time.Now()
		defer mark("step6", t0)
		cfg1 := e.writeConfig("grp-d1.toml", w1)
		code, out := e.publisher("push", cfg1, "--device", "e2e-dev1", "--timeout", "3m")
		if code != 0 {
			t.Fatalf("re-converging d1 = %d\n%s", code, out)
		}
		// d2 is unprovisioned: enrolled by fingerprint, then a first-boot apply of its own
		// config (proof of possession).
		e.enrol(t, d2, "e2e-dev2")
		w2 := workload{admin: e.adminLine, webPort: d2.webPort, appPort: d2.appPort}
		code, out = e.publisher("push", e.writeConfig("grp-d2.toml", w2), "--device", "e2e-dev2", "--timeout", "3m")
		if code != 0 {
			t.Fatalf("provisioning d2 = %d\n%s", code, out)
		}
		code, out = e.publisher("ls", "--group", "e2e-grp")
		if code != 0 || !strings.Contains(out, "e2e-dev1") || !strings.Contains(out, "e2e-dev2") {
			t.Fatalf("ls --group = %d\n%s", code, out)
		}
		// Stop d2 and push to it: the hub stores its desired state and the push reports it
		// offline, which is not a failure.
		t0stop := time.Now()
		d2.stop()
		t.Logf("d2 powered off in %s", time.Since(t0stop).Round(100*time.Millisecond))
		w2b := w2
		w2b.app = true // a visible change: its app answers once it converged
		code, out = e.publisher("push", e.writeConfig("grp-d2b.toml", w2b), "--device", "e2e-dev2", "--timeout", "2m", "--reply-timeout", "5s", "--json")
		var sum struct {
			Devices []struct {
				Device, State string
				JobID         string `json:"job_id"`
			}
		}
		json.Unmarshal([]byte(out), &sum)
		if code != 0 || len(sum.Devices) != 1 || sum.Devices[0].State != "offline" {
			t.Fatalf("push with d2 down = %d\n%s", code, out)
		}
		want := sum.Devices[0].JobID
		if code, out := e.publisher("status", "--device", "e2e-dev2"); code == 0 || fptest.Cell(out, "e2e-dev2", 1) != "pending" {
			t.Errorf("status with d2 down = %d\n%s", code, out)
		}
		// It comes back and converges on the stored state by itself: no second push.
		t0back := time.Now()
		d2.boot()
		if !fptest.Eventually(120*time.Second, func() bool {
			code, out = e.publisher("status", "--device", "e2e-dev2")
			return code == 0 && fptest.Cell(out, "e2e-dev2", 1) == "converged"
		}) {
			j, _ := d2.execOut("journalctl", "-b", "--no-pager", "-n", "60", "-u", "fleetprov-worker.service")
			t.Fatalf("d2 did not converge after it came back:\n%s\n%s", out, j)
		}
		t.Logf("d2 converged %s after boot", time.Since(t0back).Round(100*time.Millisecond))
		if j := d2.lastJob(); j["id"] != want || j["state"] != "succeeded" || !d2.active("web.service") || !httpUp(d2.appPort) {
			t.Errorf("d2's last job = %v (want %s succeeded), web active %v, app answers %v", j["id"], want, d2.active("web.service"), httpUp(d2.appPort))
		}
	})
}

// newEnv builds the binaries, makes the operator's key and starts the hub as the README
// sets it up: operator mode on the hub.conf 'publisher nats init' writes, its leafnode
// listener on leafListen.
func newEnv(t *testing.T, leafListen string) *env {
	t.Helper()
	e := &env{t: t, root: t, bins: t.TempDir(), keys: t.TempDir()}
	for _, b := range []string{"worker", "publisher"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(e.bins, b), "../../cmd/"+b)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b, err, out)
		}
	}
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(e.keys, "id"))
	pub, _ := os.ReadFile(filepath.Join(e.keys, "id.pub"))
	e.adminLine = strings.TrimSpace(string(pub))
	if code, out := e.publisher("nats", "init"); code != 0 {
		t.Fatalf("publisher nats init = %d\n%s", code, out)
	}
	var err error
	e.hub, err = broker.Start(context.Background(), broker.Options{Name: "hub", Listen: "127.0.0.1:-1", LeafListen: leafListen,
		ConfigFile: filepath.Join(e.keys, ".config", "fleetprov", "nats", "e2e", "hub.conf"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.hub.Shutdown)
	return e
}

// enrol is the enrolment flow: the device boots with no hub credentials (the
// operator-mode hub refuses it), the key and fingerprint read on its console (worker
// identity) are enrolled offline, with a wrong fingerprint refused as an impostor; the hub
// credentials minted at enrolment are installed and the worker restarted, and the device
// answers through the hub.
func (e *env) enrol(t *testing.T, d *device, id string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(d.exec("worker", "identity")), "\n")
	key, fp := lines[len(lines)-2], lines[len(lines)-1]
	if !strings.HasPrefix(fp, "SHA256:") || !strings.HasPrefix(key, "ssh-ed25519 ") {
		t.Fatalf("worker identity printed %q", lines)
	}
	if code, out := e.publisher("ls", "--device", id, "--reply-timeout", "2s"); code == 0 {
		t.Errorf("%s answers through the hub before it has credentials: ls = %d\n%s", id, code, out)
	}
	if code, out := e.publisher("enroll", "--device", id, "--pubkey", key, "--fingerprint", "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); code != 5 {
		t.Errorf("enroll with a wrong fingerprint = %d; want 5 (impostor)\n%s", code, out)
	}
	creds := filepath.Join(e.keys, id+".creds")
	if code, out := e.publisher("enroll", "--device", id, "--pubkey", key, "--fingerprint", fp, "--groups", "e2e-grp", "--creds-out", creds); code != 0 || !strings.Contains(out, "enrolled") {
		t.Fatalf("enroll %s = %d\n%s", id, code, out)
	}
	raw, err := os.ReadFile(creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "etc", "fleetprov", "hub.creds"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	d.exec("systemctl", "restart", "fleetprov-worker.service")
	d.waitFor("its hub link with the new credentials", 60*time.Second, func() bool {
		code, out := e.publisher("ls", "--device", id)
		return code == 0 && fptest.Cell(out, id, -1) == "enrolled"
	})
}
