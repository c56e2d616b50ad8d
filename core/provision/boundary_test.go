package provision_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/internal/fptest"
)

// appUser returns a real unprivileged account for the boundary tests (made when missing,
// removed after the test that made it),
// and makes the test's temp dirs traversable so it can reach its home.
func appUser(t *testing.T) (uid, gid int) {
	t.Helper()
	fptest.Need(t, os.Geteuid() == 0, "the app-user boundary tests run as root (a real second uid)")
	const name = "fleetprov-test-app"
	if _, err := user.Lookup(name); err != nil {
		useradd := fptest.RequireTool(t, "passwd", "useradd")
		if out, err := exec.Command(useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd: %v: %s", err, out)
		}
		t.Cleanup(func() { exec.Command("userdel", name).Run() }) // leave the machine's accounts as they were
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// asApp runs a shell command as the app user: the attacker is a process of that uid.
func asApp(t *testing.T, uid, gid int, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as the app user: %s: %v: %s", script, err, out)
	}
}

// reachable lets the app user traverse from / to p (t.TempDir makes 0700 dirs).
func reachable(t *testing.T, p string) {
	for d := filepath.Dir(p); d != "/" && strings.HasPrefix(d, os.TempDir()) && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o711)
	}
}

func boundaryDevice(t *testing.T) (*provisiontest.Device, int, int, []byte) {
	uid, gid := appUser(t)
	dev := provisiontest.NewAs(t, uid, gid)
	reachable(t, dev.Home)
	_, line := configtest.NewKey(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	if _, err := dev.Prov.Apply(context.Background(), provision.Input{Reader: bytes.NewReader(cfg)}, nil); err != nil {
		t.Fatalf("first apply: %v", err)
	}
	return dev, uid, gid, cfg
}

// withoutMyapp is cfg without its rootless container, so a re-apply removes units from
// the rootless dir (the manifest is read and acted on).
func withoutMyapp(t *testing.T, cfg []byte) []byte {
	s := string(cfg)
	i := strings.Index(s, "[containers.container.myapp]")
	j := strings.Index(s, `WantedBy = ["default.target"]`)
	if i < 0 || j < i {
		t.Fatal("vm-full layout changed")
	}
	s = s[:i] + s[j+len(`WantedBy = ["default.target"]`):]
	return []byte(strings.Replace(s, `required = ["edgeproxy", "myapp"]`, `required = ["edgeproxy"]`, 1))
}

// TestAppUserCannotSteerRootThroughManifest: the app user rewrites the managed-files
// manifest in its Quadlet dir with a ../ name; the root worker must not delete that file.
func TestAppUserCannotSteerRootThroughManifest(t *testing.T) {
	dev, uid, gid, cfg := boundaryDevice(t)
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("root's"), 0o600)
	rel, _ := filepath.Rel(dev.Rootless, victim)
	manifest := filepath.Join(dev.Rootless, ".fleetprov-managed.json")
	asApp(t, uid, gid, "rm -f "+manifest+" && printf '%s' '{\"files\":[{\"name\":\""+rel+"\",\"service\":\"x.service\"},{\"name\":\"myapp.container\",\"service\":\"myapp.service\"}]}' > "+manifest)
	if _, err := dev.Prov.Apply(context.Background(), provision.Input{Reader: bytes.NewReader(withoutMyapp(t, cfg))}, nil); err != nil {
		t.Fatalf("re-apply: %v", err)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("the root worker deleted %s through a manifest entry %q: %v", victim, rel, err)
	}
}

// TestAppUserCannotRedirectQuadletDir: the app user replaces its Quadlet dir with a link
// to a root-only directory; the root worker must not write units there.
func TestAppUserCannotRedirectQuadletDir(t *testing.T) {
	dev, uid, gid, cfg := boundaryDevice(t)
	rootOnly := filepath.Join(t.TempDir(), "root-only")
	os.Mkdir(rootOnly, 0o700)
	asApp(t, uid, gid, "rm -rf "+dev.Rootless+" && ln -s "+rootOnly+" "+dev.Rootless)
	_, err := dev.Prov.Apply(context.Background(), provision.Input{Reader: bytes.NewReader(cfg)}, nil)
	// The apply must get as far as the rootless sync and be refused there, or the check
	// below proves nothing.
	if err == nil || !strings.Contains(err.Error(), "path escapes from parent") {
		t.Fatalf("apply through the app user's link = %v; want it refused at the rootless Quadlet dir", err)
	}
	entries, _ := os.ReadDir(rootOnly)
	if len(entries) != 0 {
		t.Errorf("the root worker wrote %d file(s) into a root-only dir through the app user's link", len(entries))
	}
}

// TestUnitsAndStateNotWorldReadable walks the state dir and both Quadlet dirs after an
// apply: units can carry Environment= values, so nothing is readable by others.
func TestUnitsAndStateNotWorldReadable(t *testing.T) {
	dev, _, _, _ := boundaryDevice(t)
	for _, root := range []string{dev.StateDir, dev.Rootful, dev.Rootless} {
		filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err != nil {
				return nil
			}
			mode := info.Mode()
			switch {
			case mode.IsRegular() && mode.Perm()&0o077 != 0:
				t.Errorf("%s is %v: readable by others", p, mode)
			case mode.IsDir() && mode.Perm()&0o066 != 0 && p != root:
				t.Errorf("%s is %v: listable or writable by others", p, mode)
			}
			return nil
		})
	}
}

// TestAppUserFIFOCannotHangTheWorker: the app user replaces one of its units with a FIFO;
// the root worker's drift check and its next sync must not block reading it.
func TestAppUserFIFOCannotHangTheWorker(t *testing.T) {
	dev, uid, gid, cfg := boundaryDevice(t)
	unit := filepath.Join(dev.Rootless, "myapp.container")
	asApp(t, uid, gid, "rm -f "+unit+" && mkfifo "+unit)
	done := make(chan error, 1)
	go func() {
		cur, err := dev.Prov.Current(context.Background())
		if err == nil && !slices.Contains(cur.Drift, unit) {
			err = fmt.Errorf("drift = %v; want the replaced unit", cur.Drift)
		}
		if err == nil {
			_, err = dev.Prov.Apply(context.Background(), provision.Input{Reader: bytes.NewReader(cfg)}, nil)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second): // a hang guard: the reads return at once
		t.Fatal("the root worker blocked on a FIFO the app user planted")
	}
	if st, err := os.Lstat(unit); err != nil || !st.Mode().IsRegular() {
		t.Errorf("the unit was not restored as a regular file: %v, %v", st, err)
	}
}
