package quadlet_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/quadlet/quadlettest"
)

var update = flag.Bool("update", false, "rewrite golden files")

func render(t *testing.T, raw []byte) quadlet.Rendered {
	t.Helper()
	m, r, err := config.Parse(raw, config.Options{})
	if err != nil {
		t.Fatalf("Parse() error = %v\n%s", err, r.String())
	}
	out, err := quadlet.Render(m, quadlet.Options{ConfigDir: "/data/config"})
	if err != nil {
		t.Fatalf("Render() error = %v", err)
	}
	return out
}

// checkGolden compares every rendered file with testdata/golden/<name>/<mode>/<file>.
func checkGolden(t *testing.T, name string, r quadlet.Rendered) {
	t.Helper()
	files := map[string][]byte{"quadlet-runtime.json": r.RuntimeJSON()}
	for _, f := range r.Files {
		files[filepath.Join(f.Unit.Mode, f.Unit.Filename)] = f.Content
	}
	dir := filepath.Join("testdata", "golden", name)
	if *update {
		os.RemoveAll(dir)
		for p, b := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
			if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var onDisk []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			onDisk = append(onDisk, rel)
		}
		return nil
	})
	if len(onDisk) != len(files) {
		t.Errorf("golden %s has %d files, render made %d (run with -update and review the diff)", name, len(onDisk), len(files))
	}
	for p, b := range files {
		want, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("golden %s/%s: %v (run with -update)", name, p, err)
			continue
		}
		if string(want) != string(b) {
			t.Errorf("%s/%s differs from golden:\n--- got ---\n%s--- want ---\n%s", name, p, b, want)
		}
	}
}

// oracle runs Podman's generator over each mode's files and returns the services.
func oracle(t *testing.T, r quadlet.Rendered) map[string]string {
	t.Helper()
	rootful, rootless := quadlet.ByMode(r.Files)
	out := map[string]string{}
	for _, set := range []struct {
		files []quadlet.File
		user  bool
	}{{rootful, false}, {rootless, true}} {
		if len(set.files) == 0 {
			continue
		}
		m := map[string][]byte{}
		for _, f := range set.files {
			m[f.Unit.Filename] = f.Content
		}
		for k, v := range quadlettest.DryRun(t, quadlettest.WriteUnits(t, m), set.user) {
			out[k] = v
		}
	}
	for _, f := range r.Files {
		if _, ok := out[f.Unit.Service]; !ok {
			t.Errorf("generator made no %s from %s", f.Unit.Service, f.Unit.Filename)
		}
	}
	return out
}

func execStart(t *testing.T, svc string) string {
	t.Helper()
	for _, line := range strings.Split(svc, "\n") {
		if strings.HasPrefix(line, "ExecStart=") {
			return line
		}
	}
	t.Fatalf("no ExecStart in:\n%s", svc)
	return ""
}

func TestRenderVMFull(t *testing.T) {
	r := render(t, configtest.Fixture(t, "vm-full.config.toml"))
	checkGolden(t, "vm-full", r)
	byName := map[string]string{}
	for _, f := range r.Files {
		byName[f.Unit.Filename] = string(f.Content)
	}
	edge := byName["edgeproxy.container"]
	if n := strings.Count(edge, "\nEnvironment="); n != 2 {
		t.Errorf("edgeproxy.container has %d Environment= lines; want 2", n)
	}
	my := byName["myapp.container"]
	for _, want := range []string{"Network=pasta\n", "PublishPort=127.0.0.1:10080:80\n", "PublishPort=127.0.0.1:10081:81\n",
		"Volume=/data/config/files/app/config.yaml:/app/config.yaml:ro\n", "Volume=/data/config/local.env:/app/local.env:ro\n"} {
		if !strings.Contains(my, want) {
			t.Errorf("myapp.container lacks %q:\n%s", want, my)
		}
	}
	if n := strings.Count(my, "Network="); n != 1 {
		t.Errorf("myapp.container has %d Network= lines; want 1", n)
	}
	svcs := oracle(t, r)
	// Two Exec lines would leave only the last argument (Quadlet keeps the last Exec=);
	// the config means both.
	if es := execStart(t, svcs["edgeproxy.service"]); !strings.HasSuffix(es, "ghcr.io/example/edgeproxy:latest --serve --port=8080") ||
		!strings.Contains(es, "--network host") {
		t.Errorf("edgeproxy ExecStart = %s", es)
	}
	if es := execStart(t, svcs["myapp.service"]); !strings.Contains(es, "--network pasta") || !strings.Contains(es, "--publish 127.0.0.1:10081:81") {
		t.Errorf("myapp ExecStart = %s", es)
	}
	if es := execStart(t, svcs["custom-ws-build.service"]); !strings.Contains(es, "--file /data/config/files/cockpit/Containerfile") {
		t.Errorf("custom-ws-build ExecStart = %s", es)
	}
}

func TestRenderCaddy(t *testing.T) {
	r := render(t, configtest.CaddyWithKey(t, configtest.AdminKey))
	checkGolden(t, "caddy-oidc", r)
	svcs := oracle(t, r)
	if es := execStart(t, svcs["caddy-gateway.service"]); !strings.Contains(es, "-v /data/config/files/caddy/Caddyfile:/etc/caddy/Caddyfile:ro") {
		t.Errorf("caddy-gateway ExecStart = %s", es)
	}
}

// TestRenderShapes renders a table of unit shapes and has Podman's generator accept each.
func TestRenderShapes(t *testing.T) {
	base := "version = 1\n[users.admin]\nisAdmin = true\nssh_key = \"" + configtest.AdminKey + "\"\n[activation]\nrequired = [\"c\"]\n"
	tests := []struct {
		name  string
		units string
		check map[string]string // service -> text its output must contain
	}{
		{"rootful_lists_bools_ints", `
[containers.container.c]
privileged = true
[containers.container.c.Unit]
After = ["network-online.target", "x.service"]
[containers.container.c.Container]
Image = "docker.io/library/busybox:latest"
Environment = ["A=1", "B=has space", "C=\"quoted\""]
Exec = ["httpd", "-f", "-p", 8080]
ReadOnly = true
StopTimeout = 20
PodmanArgs = ["--pids-limit=100"]
Label = ["a=b", "c=d"]
[containers.container.c.Install]
WantedBy = "multi-user.target"`, map[string]string{"c.service": `--env "B=has space"`}},
		{"rootless_rewrites", `
[containers.container.c]
privileged = false
[containers.container.c.Container]
Image = "docker.io/library/busybox:latest"
Network = "bridge"
PublishPort = ["8080:80", "localhost:8443:443/tcp", "[::1]:53:53/udp", "10.0.0.1:9000-9001:9000-9001"]
Volume = ["data:/data", "${FILES_DIR}/cfg:/cfg:ro"]
[containers.volume.data.Volume]
Driver = "local"`, map[string]string{"c.service": "--publish 127.0.0.1:9000-9001:9000-9001"}},
		{"every_kind", `
[containers.container.c]
privileged = true
[containers.container.c.Container]
Image = "b.build"
Pod = "p.pod"
[containers.build.b.Build]
ImageTag = "localhost/b:latest"
File = "${FILES_DIR}/Containerfile"
SetWorkingDirectory = "${FILES_DIR}"
[containers.pod.p.Pod]
PodName = "p"
[containers.image.i.Image]
Image = "docker.io/library/alpine:latest"
[containers.kube.k.Kube]
Yaml = "${FILES_DIR}/k.yaml"
[containers.network.n.Network]
Subnet = "10.90.0.0/24"
Internal = true
[containers.volume.v.Volume]
Label = ["x=y"]`, map[string]string{"k.service": "kube play", "p-pod.service": "pod create", "i-image.service": "image pull"}},
		{"build_used_by_both_modes", `
[containers.container.c]
privileged = true
[containers.container.c.Container]
Image = "localhost/b:latest"
[containers.container.d]
privileged = false
[containers.container.d.Container]
Image = "localhost/b:latest"
[containers.build.b.Build]
ImageTag = "localhost/b:latest"
File = "${FILES_DIR}/Containerfile"`, map[string]string{"b-build.service": "podman build"}},
		// Podman's own health: with Notify=healthy the unit turns active only once the
		// container's HealthCmd passes, so activation's "active" means healthy.
		{"podman_health_notify_healthy", `
[containers.container.c]
privileged = true
[containers.container.c.Container]
Image = "docker.io/library/nginx:alpine"
HealthCmd = "wget -q -O /dev/null http://127.0.0.1/"
HealthInterval = "2s"
HealthRetries = 5
HealthStartPeriod = "10s"
Notify = "healthy"`, map[string]string{"c.service": "--health-cmd \"wget -q -O /dev/null http://127.0.0.1/\""}},
		{"podman_health_rootless", `
[containers.container.c]
privileged = false
[containers.container.c.Container]
Image = "docker.io/library/nginx:alpine"
HealthCmd = "wget -q -O /dev/null http://127.0.0.1/"
Notify = "healthy"`, map[string]string{"c.service": "--sdnotify=healthy"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := render(t, []byte(base+tc.units))
			svcs := oracle(t, r)
			for svc, want := range tc.check {
				if !strings.Contains(svcs[svc], want) {
					t.Errorf("%s lacks %q:\n%s", svc, want, svcs[svc])
				}
			}
		})
	}
}

func TestRenderRuntimeAndModes(t *testing.T) {
	r := render(t, []byte("version = 1\n[users.admin]\nisAdmin = true\nssh_key = \""+configtest.AdminKey+"\"\n[activation]\nrequired = [\"c\"]\n"+`
[containers.container.c]
privileged = true
[containers.container.c.Container]
Image = "x"
Volume = "shared:/s"
[containers.container.d]
privileged = false
[containers.container.d.Container]
Image = "y"
Volume = "shared.volume:/s"
[containers.volume.shared.Volume]
Driver = "local"`))
	var got []string
	for _, f := range r.Files {
		got = append(got, f.Unit.Mode+"/"+f.Unit.Filename)
	}
	want := "rootful/c.container rootless/d.container rootful/shared.volume rootless/shared.volume"
	if strings.Join(got, " ") != want {
		t.Errorf("rendered = %v; want %s", got, want)
	}
	if _, err := quadlet.Render(config.Model{}, quadlet.Options{ConfigDir: "relative"}); err == nil {
		t.Errorf("Render with a relative config dir succeeded")
	}
}
