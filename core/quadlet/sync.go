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
}

// Dirs are the two Quadlet directories.
type Dirs struct {
	Rootful  string // default /etc/containers/systemd
	Rootless string // default ~appsvc/.config/containers/systemd
}

// SyncFiles writes the rendered files of one mode into dir and deletes the files of the
// previous manifest that are no longer wanted. Files not in the manifest are never
// touched. Writes are atomic (temp file in dir, fsync, chmod 0644, rename, fsync dir).
func SyncFiles(ctx context.Context, dir string, files []File) (Change, error) {
	ch := Change{Dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ch, fmt.Errorf("creating quadlet dir: %w", err)
	}
	old, err := readManifest(dir)
	if err != nil {
		return ch, err
	}
	wanted := map[string]bool{}
	var next Manifest
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return ch, err
		}
		name := f.Unit.Filename
		wanted[name] = true
		next.Files = append(next.Files, ManagedFile{Name: name, Service: f.Unit.Service})
		p := filepath.Join(dir, name)
		if cur, err := os.ReadFile(p); err == nil && bytes.Equal(cur, f.Content) {
			continue
		}
		if err := state.WriteFileAtomic(p, f.Content, 0o644); err != nil {
			return ch, fmt.Errorf("writing unit: %w", err)
		}
		ch.Written = append(ch.Written, name)
	}
	for _, mf := range old.Files {
		if wanted[mf.Name] {
			continue
		}
		if err := os.Remove(filepath.Join(dir, mf.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return ch, fmt.Errorf("removing unit %s: %w", mf.Name, err)
		}
		ch.Removed = append(ch.Removed, mf)
	}
	if len(ch.Removed) > 0 {
		if err := state.SyncDir(dir); err != nil {
			return ch, err
		}
	}
	sort.Slice(next.Files, func(i, j int) bool { return next.Files[i].Name < next.Files[j].Name })
	b, _ := json.MarshalIndent(next, "", "  ")
	if err := state.WriteFileAtomic(filepath.Join(dir, ManifestName), append(b, '\n'), 0o644); err != nil {
		return ch, fmt.Errorf("writing manifest: %w", err)
	}
	return ch, nil
}

func readManifest(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, fmt.Errorf("reading manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("reading manifest %s: %w", filepath.Join(dir, ManifestName), err)
	}
	return m, nil
}

// Disappearing returns the managed files of dir's manifest that files no longer contains:
// the units a sync will remove. Their services are stopped before the sync, while systemd
// still has their full definition (after a daemon-reload a vanished Quadlet unit keeps
// running without its ExecStop and is only killed at TimeoutStopSec).
func Disappearing(dir string, files []File) ([]ManagedFile, error) {
	old, err := readManifest(dir)
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
