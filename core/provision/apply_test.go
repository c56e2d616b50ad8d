package provision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetprov/fleetprov/core/activation"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
)

var update = flag.Bool("update", false, "rewrite golden files")

func apply(t *testing.T, d *provisiontest.Device, raw []byte) (provision.Result, []record.Event, error) {
	t.Helper()
	var events []record.Event
	res, err := d.Prov.Apply(context.Background(), provision.Input{Reader: bytes.NewReader(raw)}, func(e record.Event) { events = append(events, e) })
	return res, events, err
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(got), 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("golden %s: %v (run with -update)", name, err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
	}
}

func readJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func TestApplyVMFullDerivedFiles(t *testing.T) {
	d := provisiontest.New(t)
	res, events, err := apply(t, d, configtest.Fixture(t, "vm-full.config.toml"))
	if err != nil {
		t.Fatalf("Apply() error = %v", err)
	}
	if res.Reapply || res.RolledBack || len(res.Warnings) != 2 {
		t.Errorf("Apply() = %+v", res)
	}
	active := filepath.Join(d.StateDir, "config")
	var fw map[string]map[string][]int
	readJSON(t, filepath.Join(active, "firewall-inbound.json"), &fw)
	if diff := cmp.Diff(map[string]map[string][]int{"wan": {"tcp": {80, 443}, "udp": {1194}}, "lan": {"tcp": {443}}}, fw); diff != "" {
		t.Errorf("firewall-inbound.json (-want +got):\n%s", diff)
	}
	var up map[string]string
	readJSON(t, filepath.Join(active, "os-upgrade.json"), &up)
	if up["server_url"] != "https://updates.example.test" {
		t.Errorf("os-upgrade.json = %v", up)
	}
	var pol struct{ Required []string }
	readJSON(t, filepath.Join(active, "activation-policy.json"), &pol)
	if diff := cmp.Diff([]string{"edgeproxy", "myapp"}, pol.Required); diff != "" {
		t.Errorf("activation-policy.json required (-want +got):\n%s", diff)
	}
	var users map[string]map[string]any
	readJSON(t, filepath.Join(active, "users.json"), &users)
	if users["admin"]["isAdmin"] != true || users["admin"]["ssh_key"] != configtest.AdminKey || users["guest"]["isAdmin"] != false || users["guest"]["ssh_key"] != "" {
		t.Errorf("users.json = %v", users)
	}
	if _, err := os.Stat(filepath.Join(active, "ssh-authorized-keys", "guest")); !os.IsNotExist(err) {
		t.Errorf("ssh-authorized-keys/guest exists: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(active, "ssh-authorized-keys", "admin")); string(b) != configtest.AdminKey+"\n" {
		t.Errorf("ssh-authorized-keys/admin = %q", b)
	}
	var lan host.LANSettings
	readJSON(t, filepath.Join(active, "lan-settings.json"), &lan)
	wantLAN := host.LANSettings{GatewayCIDR: "10.44.0.1/24", GatewayIP: "10.44.0.1", SubnetCIDR: "10.44.0.0/24", Netmask: "255.255.255.0",
		DHCPStart: "10.44.0.10", DHCPEnd: "10.44.0.200", Domain: "lab", HostnamePattern: "gateway-{mac}",
		GatewayAliases: []string{"atomixos", "gateway.lab"}, NTPServers: []string{"time.cloudflare.com", "time.google.com"}}
	if diff := cmp.Diff(wantLAN, lan); diff != "" {
		t.Errorf("lan-settings.json (-want +got):\n%s", diff)
	}
	for name, mode := range map[string]os.FileMode{"config.toml": 0o600, "allowed_signers": 0o600, "users.json": 0o600, "quadlet-runtime.json": 0o600, "quadlet/rootful/edgeproxy.container": 0o600} {
		if st, err := os.Stat(filepath.Join(active, name)); err != nil || st.Mode().Perm() != mode {
			t.Errorf("mode of %s = %v, %v; want %v", name, st.Mode(), err, mode)
		}
	}
	for _, f := range []string{"edgeproxy.container", "frontend.network", "app-data.volume", "custom-ws.build"} {
		if _, err := os.Stat(filepath.Join(d.Rootful, f)); err != nil {
			t.Errorf("rootful %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.Rootless, "myapp.container")); err != nil {
		t.Errorf("rootless myapp.container: %v", err)
	}
	var steps []string
	for _, e := range events {
		steps = append(steps, e.Step)
	}
	golden(t, "vm-full-apply.events", strings.Join(steps, "\n")+"\n")
	golden(t, "vm-full-apply.transcript", d.Sim.Transcript())
}

// failing returns vm-full with myapp's image carrying the simulate fail label.
func failing(t *testing.T) []byte {
	return bytes.Replace(configtest.Fixture(t, "vm-full.config.toml"),
		[]byte(`Image = "ghcr.io/example/myapp:latest"`), []byte(`Image = "ghcr.io/example/myapp:latest"`+"\nLabel = \"fleetprov.simulate=fail\""), 1)
}

func withTimeout(raw []byte) []byte {
	return bytes.Replace(raw, []byte("required = [\"edgeproxy\", \"myapp\"]"), []byte("required = [\"edgeproxy\", \"myapp\"]\ntimeout_seconds = 1"), 1)
}

func TestApplyRollback(t *testing.T) {
	d := provisiontest.New(t)
	if _, _, err := apply(t, d, withTimeout(configtest.Fixture(t, "vm-full.config.toml"))); err != nil {
		t.Fatal(err)
	}
	before := provisiontest.Tree(t, filepath.Join(d.StateDir, "config"))
	rootlessBefore := provisiontest.Tree(t, d.Rootless)
	d.Sim.Reset()
	res, events, err := apply(t, d, withTimeout(failing(t)))
	if !errors.Is(err, provision.ErrActivation) || !errors.Is(err, activation.ErrUnitFailed) {
		t.Fatalf("Apply(failing) error = %v; want ErrActivation wrapping ErrUnitFailed (fail fast)", err)
	}
	if !res.Reapply || !res.RolledBack || res.RollbackStatus != "completed" {
		t.Errorf("Apply(failing) = %+v; want a completed rollback", res)
	}
	if after := provisiontest.Tree(t, filepath.Join(d.StateDir, "config")); after != before {
		t.Errorf("active state after rollback differs:\n%s\n---\n%s", before, after)
	}
	if after := provisiontest.Tree(t, d.Rootless); after != rootlessBefore {
		t.Errorf("rootless quadlet dir after rollback differs")
	}
	for _, leftover := range []string{"config.rollback", "config.candidate", "config.promoting"} {
		if _, err := os.Stat(filepath.Join(d.StateDir, leftover)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", leftover, err)
		}
	}
	var steps []string
	for _, e := range events {
		s := e.Step
		if e.Service != "" {
			s += " " + e.Service + " " + e.Status
		}
		steps = append(steps, s)
	}
	golden(t, "rollback.events", strings.Join(steps, "\n")+"\n")
	golden(t, "rollback.transcript", d.Sim.Transcript())
	if got := d.Sim.Running(); !cmp.Equal(got, []string{"system/custom-ws-build.service", "system/app-data-volume.service", "system/edgeproxy.service", "system/frontend-network.service", "user(appsvc)/myapp.service"}, cmpSorted) {
		t.Errorf("running after rollback = %v", got)
	}
}

var cmpSorted = cmp.Transformer("sort", func(in []string) []string {
	out := append([]string(nil), in...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
})

func TestApplyInitialFailureDiscards(t *testing.T) {
	d := provisiontest.New(t)
	res, _, err := apply(t, d, withTimeout(failing(t)))
	if !errors.Is(err, provision.ErrActivation) {
		t.Fatalf("Apply() error = %v", err)
	}
	if res.Reapply || res.RollbackStatus != "discarded" {
		t.Errorf("Apply() = %+v; want discarded", res)
	}
	if d.Prov.State().HasActive() {
		t.Errorf("device provisioned after a failed initial apply")
	}
	entries, _ := os.ReadDir(d.StateDir)
	for _, e := range entries {
		if e.Name() != ".lock" {
			t.Errorf("state dir holds %s after discard", e.Name())
		}
	}
	for _, dir := range []string{d.Rootful, d.Rootless} {
		units, _ := filepath.Glob(filepath.Join(dir, "[^.]*"))
		if len(units) != 0 {
			t.Errorf("%s still holds %v", dir, units)
		}
	}
	if len(d.Sim.Running()) != 0 {
		t.Errorf("units still running: %v", d.Sim.Running())
	}
}

func TestApplyRejectionsKeepActive(t *testing.T) {
	hostile := func(t *testing.T) []byte {
		var b bytes.Buffer
		bundle.Create(&b, bundle.FormatZstd, configtest.Fixture(t, "vm-full.config.toml"), nil)
		raw := b.Bytes()
		return raw[:len(raw)-10]
	}
	tests := []struct {
		name string
		raw  func(t *testing.T) []byte
		want error
	}{
		{"unknown_required_unit", func(t *testing.T) []byte {
			return configtest.Fixture(t, "vm-invalid-unknown-required-unit.config.toml")
		}, config.ErrInvalid},
		{"dhcp_range", func(t *testing.T) []byte {
			return configtest.Fixture(t, "vm-invalid-dhcp-range-includes-gateway.config.toml")
		}, config.ErrInvalid},
		{"truncated_bundle", hostile, bundle.ErrCorrupt},
		{"bzip2_magic", func(t *testing.T) []byte { return []byte("BZh91AY&SY garbage") }, config.ErrInvalid},
		{"empty", func(t *testing.T) []byte { return nil }, bundle.ErrEmpty},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := provisiontest.New(t)
			if _, _, err := apply(t, d, configtest.Fixture(t, "vm-full.config.toml")); err != nil {
				t.Fatal(err)
			}
			before := provisiontest.Tree(t, d.StateDir)
			d.Sim.Reset()
			_, _, err := apply(t, d, tc.raw(t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Apply() error = %v; want %v", err, tc.want)
			}
			if after := provisiontest.Tree(t, d.StateDir); after != before {
				t.Errorf("state dir changed:\n%s\n---\n%s", before, after)
			}
			if tr := d.Sim.Transcript(); tr != "\n" {
				t.Errorf("a rejected apply touched the system:\n%s", tr)
			}
		})
	}
}

func TestFilesKeptAndReplaced(t *testing.T) {
	d := provisiontest.New(t)
	vm := configtest.Fixture(t, "vm-full.config.toml")
	var b bytes.Buffer
	bundle.Create(&b, bundle.FormatGzip, vm, os.DirFS(mkFiles(t, map[string]string{"app/config.yaml": "v1\n"})))
	if _, _, err := apply(t, d, b.Bytes()); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(d.StateDir, "config", "files", "app", "config.yaml")
	if got, _ := os.ReadFile(cfgFile); string(got) != "v1\n" {
		t.Fatalf("files/app/config.yaml = %q", got)
	}
	// A plain config.toml keeps the active files/.
	if _, _, err := apply(t, d, vm); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(cfgFile); string(got) != "v1\n" {
		t.Errorf("plain re-apply lost files/: %q", got)
	}
	// A bundle replaces files/ wholesale.
	b.Reset()
	bundle.Create(&b, bundle.FormatZstd, vm, os.DirFS(mkFiles(t, map[string]string{"other.txt": "x"})))
	if _, _, err := apply(t, d, b.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfgFile); !os.IsNotExist(err) {
		t.Errorf("bundle re-apply kept old files: %v", err)
	}
}

func mkFiles(t *testing.T, files map[string]string) string {
	dir := t.TempDir()
	for p, c := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644)
	}
	return dir
}

func TestExportReapplyIsIdentical(t *testing.T) {
	d := provisiontest.New(t)
	var b bytes.Buffer
	bundle.Create(&b, bundle.FormatZstd, configtest.Fixture(t, "vm-full.config.toml"), os.DirFS(mkFiles(t, map[string]string{"app/config.yaml": "a: 1\n", "cockpit/Containerfile": "FROM x\n"})))
	if _, _, err := apply(t, d, b.Bytes()); err != nil {
		t.Fatal(err)
	}
	before := provisiontest.Tree(t, filepath.Join(d.StateDir, "config"))
	var exp bytes.Buffer
	if err := d.Prov.Export(context.Background(), &exp, bundle.FormatZstd); err != nil {
		t.Fatal(err)
	}
	if _, _, err := apply(t, d, exp.Bytes()); err != nil {
		t.Fatal(err)
	}
	if after := provisiontest.Tree(t, filepath.Join(d.StateDir, "config")); after != before {
		t.Errorf("export + re-apply changed the active state:\n%s\n---\n%s", before, after)
	}
	cur, err := d.Prov.Current(context.Background())
	if err != nil || !cur.Provisioned || len(cur.Drift) != 0 {
		t.Errorf("Current() = %+v, %v; want provisioned without drift", cur, err)
	}
	os.WriteFile(filepath.Join(d.Rootful, "edgeproxy.container"), []byte("tampered"), 0o644)
	cur, _ = d.Prov.Current(context.Background())
	if len(cur.Drift) != 1 || !strings.HasSuffix(cur.Drift[0], "edgeproxy.container") {
		t.Errorf("Current().Drift = %v; want the tampered unit", cur.Drift)
	}
}

// TestUnsignedFirstBootRace: an unsigned first-boot apply fails if the device was
// provisioned by the time it holds the lock, and leaves the state as it was.
func TestUnsignedFirstBootRace(t *testing.T) {
	d := provisiontest.New(t)
	if _, _, err := apply(t, d, configtest.Fixture(t, "vm-full.config.toml")); err != nil {
		t.Fatal(err)
	}
	before := provisiontest.Tree(t, d.StateDir)
	_, err := d.Prov.Apply(context.Background(), provision.Input{Reader: bytes.NewReader(configtest.Fixture(t, "vm-full.config.toml")), RequireUnprovisioned: true}, nil)
	if !errors.Is(err, provision.ErrProvisioned) {
		t.Fatalf("Apply(RequireUnprovisioned) on a provisioned device = %v; want ErrProvisioned", err)
	}
	if after := provisiontest.Tree(t, d.StateDir); after != before {
		t.Errorf("state changed")
	}
}

// TestCheckHealthExecRunsInTheContainer: worker check-health runs an exec check in the
// container it names (as an apply does), never on the host.
func TestCheckHealthExecRunsInTheContainer(t *testing.T) {
	d := provisiontest.New(t)
	cfg := fmt.Sprintf(`version = 1
[users.admin]
isAdmin = true
ssh_key = %q
[activation]
required = ["web"]
[activation.health.web]
exec = ["pg_isready"]
[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "localhost/web:latest"
ContainerName = "db"
`, configtest.AdminKey)
	if _, _, err := apply(t, d, []byte(cfg)); err != nil {
		t.Fatal(err)
	}
	d.Sim.Reset()
	if err := d.Prov.CheckHealth(context.Background(), func(record.Event) {}); err != nil {
		t.Fatal(err)
	}
	if tr := d.Sim.Transcript(); !strings.Contains(tr, "probe exec db: pg_isready") {
		t.Errorf("check-health did not run the exec check in container db:\n%s", tr)
	}
}
