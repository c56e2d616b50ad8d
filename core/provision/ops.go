package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/state"
)

// RenderTo writes what an apply of the input would install (config.toml as given, derived
// files, quadlet/ units, quadlet-runtime.json) into out, touching nothing else: a dry-run
// plan.
func RenderTo(ctx context.Context, r io.Reader, out string, opts check.Options) (config.Report, error) {
	v, err := check.Input(ctx, r, opts)
	if err != nil {
		return v.Report, err
	}
	files, err := derivedFiles(v.Model)
	if err != nil {
		return v.Report, err
	}
	files["config.toml"] = v.Raw
	files["quadlet-runtime.json"] = v.Rendered.RuntimeJSON()
	for _, f := range v.Rendered.Files {
		files[filepath.Join("quadlet", f.Unit.Mode, f.Unit.Filename)] = f.Content
	}
	// The host settings a --host systemd device applies: its files under host/, the
	// accounts in host/accounts.txt.
	hd := host.Render(v.Model, host.Options{BridgePort: opts.Config.BridgePort})
	var acc strings.Builder
	for _, u := range hd.Users {
		fmt.Fprintf(&acc, "%s admin=%v shell=%s key=%v\n", u.Name, u.Admin, u.Shell, u.Key != "")
	}
	files[filepath.Join("host", "accounts.txt")] = []byte(acc.String())
	for _, f := range hd.Files {
		files[filepath.Join("host", filepath.FromSlash(f.Path))] = f.Content
	}
	for name, b := range files {
		p := filepath.Join(out, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return v.Report, fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return v.Report, fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return v.Report, nil
}

// Current is the device's desired state as the API reports it.
type Current struct {
	Provisioned bool          `json:"provisioned"`
	Digest      string        `json:"config_sha256,omitempty"`
	Config      *config.Model `json:"config,omitempty"`
	// Drift lists the files on disk that no longer match what the active config renders to.
	Drift []string `json:"drift"`
	// Secrets lists the declared secrets: names, keyed digests and when each was set,
	// never values.
	Secrets []SecretInfo `json:"secrets,omitempty"`
}

// Current reads the active config and checks it for drift. Read-only; never fixes.
func (p *Provisioner) Current(ctx context.Context) (Current, error) {
	raw, err := p.opts.State.ReadActive()
	if errors.Is(err, state.ErrNoActive) {
		return Current{Drift: []string{}}, nil
	}
	if err != nil {
		return Current{}, err
	}
	m, _, err := config.Parse(raw, p.opts.Config)
	if err != nil {
		return Current{}, fmt.Errorf("parsing active config: %w", err)
	}
	drift, err := p.drift(ctx, m)
	if err != nil {
		return Current{}, err
	}
	infos, err := p.secretInfos(m)
	if err != nil {
		return Current{}, err
	}
	return Current{Provisioned: true, Digest: Digest(raw), Config: &m, Drift: drift, Secrets: infos}, nil
}

// Digest returns the hex sha256 of a config.
func Digest(raw []byte) string { return sha256Hex(raw) }

// drift compares the derived files and units of the active dir, and the managed files in
// the Quadlet dirs, with a fresh render of the active config.
func (p *Provisioner) drift(ctx context.Context, m config.Model) ([]string, error) {
	active := p.opts.State.Active()
	want, err := derivedFiles(m)
	if err != nil {
		return nil, err
	}
	r, err := quadlet.Render(m, quadlet.Options{ConfigDir: active, AppUser: p.opts.AppUser})
	if err != nil {
		return nil, err
	}
	want["quadlet-runtime.json"] = r.RuntimeJSON()
	for _, f := range r.Files {
		want[filepath.Join("quadlet", f.Unit.Mode, f.Unit.Filename)] = f.Content
	}
	drift := []string{}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join(active, name))
		if err != nil || !bytes.Equal(got, b) {
			drift = append(drift, filepath.Join(active, name))
		}
	}
	acc, err := p.appAccount(ctx)
	if err != nil {
		return nil, err
	}
	rootful := quadlet.Target{Dir: p.opts.Quadlet.Rootful, UID: -1, GID: -1}
	rootless := p.rootlessTarget(acc, p.rootlessDir(acc))
	for _, f := range r.Files {
		t := rootful
		if f.Unit.Mode == config.ModeRootless {
			t = rootless
		}
		got, err := quadlet.ReadUnit(t, f.Unit.Filename)
		if err != nil || !bytes.Equal(got, f.Content) {
			drift = append(drift, filepath.Join(t.Dir, f.Unit.Filename))
		}
	}
	sort.Strings(drift)
	return drift, nil
}

// Export writes the active config as a bundle (config.toml + files/) in the given format,
// or as raw TOML for bundle.FormatTOML. Recovery runs first, under the lock; while a
// network change awaits confirmation it exports that change (what runs) and leaves its
// rollback alone.
func (p *Provisioner) Export(ctx context.Context, w io.Writer, format bundle.Format) error {
	unlock, err := p.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := p.recoverState(); err != nil && !errors.Is(err, ErrAwaitingConfirm) {
		return err
	}
	raw, err := p.opts.State.ReadActive()
	if err != nil {
		return err
	}
	if format == bundle.FormatTOML {
		_, err := w.Write(raw)
		return err
	}
	files := filepath.Join(p.opts.State.Active(), "files")
	if !dirExists(files) {
		return bundle.Create(w, format, raw, nil)
	}
	// The app user owns files/ and may swap a file for a link or a FIFO while it is
	// bundled: read it through state.RegularFS, so nothing is followed out of it (to the
	// identity key, say) and nothing blocks the export under the state lock.
	root, err := os.OpenRoot(files)
	if err != nil {
		return fmt.Errorf("opening %s: %w", files, err)
	}
	defer root.Close()
	return bundle.Create(w, format, raw, state.RegularFS(root))
}

// ActiveModel returns the parsed active config, or state.ErrNoActive.
func (p *Provisioner) ActiveModel() (config.Model, error) { return p.activeModel() }
