package quadlet_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/quadlet"
)

func unitFile(name, service, content string) quadlet.File {
	return quadlet.File{Unit: config.Unit{Filename: name, Service: service}, Content: []byte(content)}
}

func TestSyncFilesManagesOnlyItsOwn(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	foreign := map[string]string{"admin.container": "[Container]\nImage=mine\n", "container.d/10-nspawn.conf": "[Container]\nPodmanArgs=--cgroups=disabled\n"}
	for p, c := range foreign {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644)
	}
	ch, err := quadlet.SyncFiles(ctx, quadlet.Target{Dir: dir, UID: -1, GID: -1}, []quadlet.File{unitFile("a.container", "a.service", "A1"), unitFile("b.network", "b-network.service", "B1")})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Written, []string{"a.container", "b.network"}) || len(ch.Removed) != 0 {
		t.Errorf("first sync = %+v", ch)
	}
	// Same content: nothing written. b removed, c added, a changed.
	ch, err = quadlet.SyncFiles(ctx, quadlet.Target{Dir: dir, UID: -1, GID: -1}, []quadlet.File{unitFile("a.container", "a.service", "A2"), unitFile("c.volume", "c-volume.service", "C1")})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Written, []string{"a.container", "c.volume"}) || len(ch.Removed) != 1 || ch.Removed[0] != (quadlet.ManagedFile{Name: "b.network", Service: "b-network.service"}) {
		t.Errorf("second sync = %+v", ch)
	}
	ch, _ = quadlet.SyncFiles(ctx, quadlet.Target{Dir: dir, UID: -1, GID: -1}, []quadlet.File{unitFile("a.container", "a.service", "A2"), unitFile("c.volume", "c-volume.service", "C1")})
	if len(ch.Written) != 0 || len(ch.Removed) != 0 {
		t.Errorf("idempotent sync changed things: %+v", ch)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.network")); !os.IsNotExist(err) {
		t.Errorf("b.network still present: %v", err)
	}
	for p, c := range foreign {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != c {
			t.Errorf("foreign file %s changed: %q, %v", p, b, err)
		}
	}
	st, _ := os.Stat(filepath.Join(dir, "a.container"))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("a.container mode = %v; want 0600", st.Mode())
	}
	// A foreign file with a managed name that is not in our manifest is overwritten only
	// when we render that name; removing it from the config never deletes a foreign file.
	ch, _ = quadlet.SyncFiles(ctx, quadlet.Target{Dir: dir, UID: -1, GID: -1}, nil)
	if len(ch.Removed) != 2 {
		t.Errorf("emptying sync removed %v", ch.Removed)
	}
	if _, err := os.Stat(filepath.Join(dir, "admin.container")); err != nil {
		t.Errorf("foreign admin.container removed: %v", err)
	}
}

func TestRestartOrder(t *testing.T) {
	units := []config.Unit{
		{Name: "app", Kind: "container", Mode: "rootless"},
		{Name: "web", Kind: "container", Mode: "rootful"},
		{Name: "rb", Kind: "build", Mode: "rootless"},
		{Name: "b", Kind: "build", Mode: "rootful"},
		{Name: "n", Kind: "network", Mode: "rootful"},
	}
	var got []string
	for _, u := range quadlet.RestartOrder(units) {
		got = append(got, u.Name)
	}
	if want := []string{"b", "web", "n", "rb", "app"}; !slices.Equal(got, want) {
		t.Errorf("RestartOrder = %v; want %v", got, want)
	}
}

// TestValidUnitName: a manifest the app user can write may name plain unit files only.
func TestValidUnitName(t *testing.T) {
	for name, want := range map[string]bool{
		"web.container": true, "db.volume": true, "lan.network": true, "app.kube": true, "x.pod": true, "b.build": true, "i.image": true,
		"": false, ".": false, "..": false, ".container": false, ".hidden.container": false, "../web.container": false,
		"a/web.container": false, `a\web.container`: false, "web.container\x00": false, "web.service": false, "web": false,
		"/etc/passwd": false, "../../config/config.toml": false,
	} {
		if got := quadlet.ValidUnitName(name); got != want {
			t.Errorf("ValidUnitName(%q) = %v; want %v", name, got, want)
		}
	}
}
