package quadlet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/state"
)

// ManifestName is the file in each Quadlet dir listing what fleetprov manages there.
const ManifestName = ".fleetprov-managed.json"

// Manifest lists the unit files fleetprov wrote into one Quadlet dir.
type Manifest struct {
	Files []ManagedFile `json:"files"`
}

// ManagedFile is one managed unit file and the service Quadlet generates from it.
type ManagedFile struct {
	Name    string `json:"name"`
	Service string `json:"service"`
}

// Change is the result of syncing one directory.
type Change struct {
	Dir     string
	Written []string // new or changed files
	Removed []ManagedFile
	// Ignored lists manifest entries that were not plain unit names (a tampered
	// manifest): they were left alone.
	Ignored []string
}

// Dirs are the two Quadlet directories.
type Dirs struct {
	Rootful  string // default /etc/containers/systemd
	Rootless string // default ~appsvc/.config/containers/systemd
}

// Target is one Quadlet directory to sync, and the trust boundary around it.
type Target struct {
	// Dir is the Quadlet directory.
	Dir string
	// Base is the directory all I/O stays inside (Dir itself, or a directory above it
	// such as the app user's home, which the app user cannot replace). Every open,
	// rename and remove goes through an os.Root on Base, so no symlink planted by whoever
	// can write below Base (the app user, for the rootless dir) leads outside it.
	Base string
	// UID and GID own the written files (set by descriptor before the rename); -1 keeps
	// the writer's. The rootless dir's files belong to the app user, whose generator
	// reads them.
	UID, GID int
}

// open opens Base as a root and, with create, creates Dir inside it; it returns the root
// and Dir relative to it.
func (t Target) open(create bool) (*os.Root, string, error) {
	base := t.Base
	if base == "" {
		base = t.Dir
	}
	rel, err := filepath.Rel(base, t.Dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return nil, "", fmt.Errorf("quadlet dir %s is not inside %s", t.Dir, base)
	}
	if create {
		if err := os.MkdirAll(base, 0o755); err != nil {
			return nil, "", fmt.Errorf("creating quadlet dir: %w", err)
		}
	}
	root, err := os.OpenRoot(base)
	if err != nil {
		return nil, "", fmt.Errorf("opening quadlet dir: %w", err)
	}
	if !create {
		return root, rel, nil
	}
	if err := root.MkdirAll(rel, 0o755); err != nil {
		root.Close()
		return nil, "", fmt.Errorf("creating quadlet dir %s: %w", t.Dir, err)
	}
	return root, rel, nil
}

// unitFileExt are the Quadlet unit kinds a manifest may name: containers and the
// config's resource kinds.
var unitFileExt = func() map[string]bool {
	m := map[string]bool{".container": true}
	for _, rk := range config.ResourceKinds {
		m[rk.Ext] = true
	}
	return m
}()

// ValidUnitName reports whether name is a plain Quadlet unit file name: one path
// element (no separator, so no traversal), not hidden (so not . or ..), a Quadlet
// extension. A manifest in a directory the app user can write may name nothing else.
func ValidUnitName(name string) bool {
	return !strings.ContainsAny(name, "/\\\x00") && !strings.HasPrefix(name, ".") && unitFileExt[filepath.Ext(name)]
}

// SyncFiles writes the rendered files of one mode into t.Dir and deletes the files of
// the previous manifest that are no longer wanted. Files not in the manifest, and
// manifest entries that are not plain unit names (Change.Ignored), are never touched.
// Writes are atomic (temp file, owner and mode 0600 by descriptor, fsync, rename, fsync
// dir), all inside t.Base.
func SyncFiles(ctx context.Context, t Target, files []File) (Change, error) {
	ch := Change{Dir: t.Dir}
	root, dir, err := t.open(true)
	if err != nil {
		return ch, err
	}
	defer root.Close()
	old, ignored, err := readManifest(root, dir)
	if err != nil {
		return ch, err
	}
	ch.Ignored = ignored
	wanted := map[string]bool{}
	var next Manifest
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return ch, err
		}
		name := f.Unit.Filename
		if !ValidUnitName(name) {
			return ch, fmt.Errorf("refusing to write unit %q: not a plain unit file name", name)
		}
		wanted[name] = true
		next.Files = append(next.Files, ManagedFile{Name: name, Service: f.Unit.Service})
		p := filepath.Join(dir, name)
		if cur, err := readRegular(root, p); err == nil && bytes.Equal(cur, f.Content) {
			if err := root.Lchown(p, t.UID, t.GID); err != nil {
				return ch, fmt.Errorf("setting owner of unit %s: %w", name, err)
			}
			if err := root.Chmod(p, UnitMode); err != nil {
				return ch, fmt.Errorf("setting mode of unit %s: %w", name, err)
			}
			continue
		}
		if err := state.WriteFileAtomicIn(root, p, f.Content, UnitMode, t.UID, t.GID); err != nil {
			return ch, fmt.Errorf("writing unit: %w", err)
		}
		ch.Written = append(ch.Written, name)
	}
	for _, mf := range old.Files {
		if wanted[mf.Name] {
			continue
		}
		if err := root.Remove(filepath.Join(dir, mf.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return ch, fmt.Errorf("removing unit %s: %w", mf.Name, err)
		}
		ch.Removed = append(ch.Removed, mf)
	}
	if len(ch.Removed) > 0 {
		if err := state.SyncDirIn(root, dir); err != nil {
			return ch, err
		}
	}
	sort.Slice(next.Files, func(i, j int) bool { return next.Files[i].Name < next.Files[j].Name })
	b, _ := json.MarshalIndent(next, "", "  ")
	if err := state.WriteFileAtomicIn(root, filepath.Join(dir, ManifestName), append(b, '\n'), UnitMode, t.UID, t.GID); err != nil {
		return ch, fmt.Errorf("writing manifest: %w", err)
	}
	return ch, nil
}

// UnitMode is the mode of written units and manifests: units may carry Environment=
// values, so only their owner (root, or the app user for rootless units) reads them.
const UnitMode = 0o600

// readManifest reads dir's manifest inside root; entries that are not plain unit names
// are dropped and returned apart.
func readManifest(root *os.Root, dir string) (Manifest, []string, error) {
	var m Manifest
	b, err := readRegular(root, filepath.Join(dir, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil, nil
	}
	if err != nil {
		return m, nil, fmt.Errorf("reading manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, nil, fmt.Errorf("reading manifest %s: %w", filepath.Join(dir, ManifestName), err)
	}
	var ok []ManagedFile
	var ignored []string
	for _, f := range m.Files {
		if ValidUnitName(f.Name) {
			ok = append(ok, f)
		} else {
			ignored = append(ignored, f.Name)
		}
	}
	m.Files = ok
	return m, ignored, nil
}

// Disappearing returns the managed files of t.Dir's manifest that files no longer
// contains: the units a sync will remove. Their services are stopped before the sync,
// while systemd still has their full definition (after a daemon-reload a vanished
// Quadlet unit keeps running without its ExecStop and is only killed at TimeoutStopSec).
func Disappearing(t Target, files []File) ([]ManagedFile, error) {
	root, dir, err := t.open(false)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // no dir yet: nothing managed there
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()
	old, _, err := readManifest(root, dir)
	if err != nil {
		return nil, err
	}
	wanted := map[string]bool{}
	for _, f := range files {
		wanted[f.Unit.Filename] = true
	}
	var out []ManagedFile
	for _, mf := range old.Files {
		if !wanted[mf.Name] {
			out = append(out, mf)
		}
	}
	return out, nil
}

// ByMode splits rendered files by manager.
func ByMode(files []File) (rootful, rootless []File) {
	for _, f := range files {
		if f.Unit.Mode == config.ModeRootless {
			rootless = append(rootless, f)
		} else {
			rootful = append(rootful, f)
		}
	}
	return rootful, rootless
}

// RestartOrder returns the units in the order they are restarted after a sync: rootful
// builds, other rootful, rootless builds, other rootless.
func RestartOrder(units []config.Unit) []config.Unit {
	rank := func(u config.Unit) int {
		r := 0
		if u.Mode == config.ModeRootless {
			r = 2
		}
		if u.Kind != "build" {
			r++
		}
		return r
	}
	out := append([]config.Unit(nil), units...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out
}

// ReadDir loads the rendered files of an active config dir (its quadlet/<mode>/ trees)
// back, with the runtime metadata, so sync-quadlet can run without re-rendering.
func ReadDir(configDir string) (Rendered, error) {
	var r Rendered
	b, err := os.ReadFile(filepath.Join(configDir, "quadlet-runtime.json"))
	if err != nil {
		return r, fmt.Errorf("reading runtime metadata: %w", err)
	}
	if err := json.Unmarshal(b, &r.Runtime); err != nil {
		return r, fmt.Errorf("reading runtime metadata: %w", err)
	}
	for i, u := range r.Runtime.Units {
		u.Kind = strings.TrimPrefix(filepath.Ext(u.Filename), ".")
		r.Runtime.Units[i] = u
		content, err := os.ReadFile(filepath.Join(configDir, "quadlet", u.Mode, u.Filename))
		if err != nil {
			return r, fmt.Errorf("reading rendered unit: %w", err)
		}
		r.Files = append(r.Files, File{Unit: u, Content: content})
	}
	return r, nil
}

// maxUnitFile bounds what is read of a unit or manifest in a directory the app user may
// write: ours are a few KB.
const maxUnitFile = 1 << 20

// readRegular reads name inside root only if it is a regular file, without blocking on a
// FIFO or a device the app user may have put there (opened non-blocking, checked by
// descriptor, bounded).
func readRegular(root *os.Root, name string) ([]byte, error) {
	return state.ReadRegularIn(root, name, maxUnitFile)
}

// ReadUnit reads a unit file of t.Dir the way SyncFiles does: inside t.Base, regular
// files only, never blocking (drift checks read the rootless dir as root).
func ReadUnit(t Target, name string) ([]byte, error) {
	root, dir, err := t.open(false)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return readRegular(root, filepath.Join(dir, name))
}
