// Package provisiontest builds a Provisioner on the simulate backend in temp dirs, and
// compares state trees byte for byte, for tests of the pipeline and of the transports.
package provisiontest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/core/system/simulate"
)

// Device is one simulated device.
type Device struct {
	Prov     *provision.Provisioner
	Sim      *simulate.Sim
	StateDir string
	Rootful  string
	Rootless string
	Home     string
	// HostRoot is the simulated host's root ("" when the device applies no host settings).
	HostRoot string
}

// New returns a simulated device whose paths are all under t.TempDir().
func New(t testing.TB, mutate ...func(*provision.Options)) *Device {
	t.Helper()
	return NewAs(t, 0, 0, mutate...)
}

// NewAs is New with the app account's uid and gid (0: the simulate default, 1000); the
// app user's home belongs to that account.
func NewAs(t testing.TB, uid, gid int, mutate ...func(*provision.Options)) *Device {
	t.Helper()
	return newDevice(t, uid, gid, false, mutate)
}

// NewWithHost is New with a simulated host (HostRoot): the device applies host settings
// (--host simulate).
func NewWithHost(t testing.TB, mutate ...func(*provision.Options)) *Device {
	t.Helper()
	return newDevice(t, 0, 0, true, mutate)
}

func newDevice(t testing.TB, uid, gid int, withHost bool, mutate []func(*provision.Options)) *Device {
	t.Helper()
	root := t.TempDir()
	d := &Device{
		StateDir: filepath.Join(root, "state"),
		Rootful:  filepath.Join(root, "etc-containers-systemd"),
		Home:     filepath.Join(root, "home-appsvc"),
	}
	d.Rootless = filepath.Join(d.Home, ".config", "containers", "systemd")
	if err := os.MkdirAll(d.Home, 0o755); err != nil {
		t.Fatal(err)
	}
	if uid != 0 {
		if err := os.Chown(d.Home, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if withHost {
		d.HostRoot = filepath.Join(root, "host")
		if err := os.MkdirAll(d.HostRoot, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.Sim = simulate.New(simulate.Options{QuadletDirs: []string{d.Rootful, d.Rootless}, Home: d.Home, AppUID: uid, AppGID: gid, HostRoot: d.HostRoot})
	opts := provision.Options{
		State:        state.Dir{Root: d.StateDir},
		Backend:      d.Sim.Backend(),
		Quadlet:      quadlet.Dirs{Rootful: d.Rootful, Rootless: d.Rootless},
		PollInterval: 20 * time.Millisecond,
		HostRoot:     d.HostRoot,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, m := range mutate {
		m(&opts)
	}
	d.Prov = provision.New(opts)
	return d
}

// Tree returns "path mode sha256" lines for every entry below dir, so two trees can be
// compared byte for byte (a missing dir gives "").
func Tree(t testing.TB, dir string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := e.Info()
		if err != nil {
			return nil
		}
		line := rel + " " + info.Mode().String()
		if e.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			sum := sha256.Sum256(b)
			line += " " + hex.EncodeToString(sum[:8])
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Provision applies cfg (a config.toml) directly, as the device's first job, and fails
// the test when it does not succeed: a provisioned device to mount requests against.
func (d *Device) Provision(t testing.TB, cfg []byte) {
	t.Helper()
	if _, err := d.Prov.Apply(context.Background(), provision.Input{Reader: bytes.NewReader(cfg)}, nil); err != nil {
		t.Fatalf("provisioning: %v", err)
	}
}
