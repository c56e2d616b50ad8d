package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/secrets"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/core/system"
)

// Options configure a Provisioner. Every OS path is a field, filled from flags.
type Options struct {
	State   state.Dir
	Backend system.Backend
	// Quadlet dirs; Rootless empty means ~AppUser/.config/containers/systemd.
	Quadlet quadlet.Dirs
	// AppUser runs rootless containers (default appsvc).
	AppUser string
	// IdentityKey is the device's identity key, which opens its secrets (empty:
	// <state>/identity_ed25519).
	IdentityKey string
	// HostRoot is the root host settings are written under (default "/"; the simulate
	// backend's root with --host simulate).
	HostRoot string
	// Hook is the activation hook's path (empty: none).
	Hook string
	// Config carries the device-dependent validation rules (bridge port).
	Config config.Options
	Limits bundle.Limits
	// LockWait bounds how long an apply waits for the state lock (default 30s).
	LockWait time.Duration
	// PollInterval between health checks (default 500ms).
	PollInterval time.Duration
	Logger       *slog.Logger
	// BootIDFile tells this boot from the last (default /proc/sys/kernel/random/boot_id):
	// a reboot while a network change awaits confirmation rolls it back.
	BootIDFile string
	// Fault is called at step boundaries (tests crash the process there); nil in production.
	Fault func(point string)
}

// Provisioner runs the pipeline on one device.
type Provisioner struct {
	opts Options
	log  *slog.Logger
	krMu sync.Mutex
	kr   *secrets.Keyring
	// confirmMu guards the commit-confirm wait: how the device proves it is reachable,
	// and the channel an operator's confirm closes (nil when nothing waits).
	confirmMu sync.Mutex
	reach     Reach
	relink    func() int
	confirmed chan struct{}
	// confirmMode is the mode of the window confirmed waits on.
	confirmMode string
}

// New returns a Provisioner.
func New(opts Options) *Provisioner {
	if opts.AppUser == "" {
		opts.AppUser = config.DefaultAppUser
	}
	opts.Config.AppUser = opts.AppUser
	if opts.LockWait <= 0 {
		opts.LockWait = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.State.Fault = opts.Fault
	return &Provisioner{opts: opts, log: opts.Logger}
}

// State returns the state directory.
func (p *Provisioner) State() state.Dir { return p.opts.State }

func (p *Provisioner) fault(point string) {
	if p.opts.Fault != nil {
		p.opts.Fault(point)
	}
}

func (p *Provisioner) lock(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.LockWait)
	defer cancel()
	return p.opts.State.Lock(ctx)
}

// Recover runs crash recovery under the lock. When it changed the active state, the
// units are re-synced and restarted, so what runs matches what is active. then, when not
// nil, runs while the lock is still held (the worker opens its job history there, so a
// job record left "running" is known to be interrupted, not running in another process).
func (p *Provisioner) Recover(ctx context.Context, then func(state.Action) error) (act state.Action, err error) {
	unlock, err := p.lock(ctx)
	if err != nil {
		return state.ActionNone, err
	}
	defer unlock()
	act, handled, err := p.recoverPending()
	if err != nil {
		return act, err
	}
	if !handled {
		if act, err = p.opts.State.Recover(p.log); err != nil {
			return act, err
		}
	}
	if then != nil {
		defer func() {
			if err == nil {
				err = then(act)
			}
		}()
	}
	switch act {
	case state.ActionRestoredRollback, state.ActionKeptActive, state.ActionPromotedRollback, state.ActionDiscarded:
		if _, err := p.deploy(ctx, nil, nil, func(record.Event) {}, nil); err != nil && !errors.Is(err, state.ErrNoActive) {
			return act, fmt.Errorf("re-deploying after recovery: %w", err)
		}
	}
	return act, nil
}

// appAccount looks up the app user.
func (p *Provisioner) appAccount(ctx context.Context) (system.Account, error) {
	acc, err := p.opts.Backend.Accounts.Lookup(ctx, p.opts.AppUser)
	if err != nil {
		return system.Account{}, fmt.Errorf("looking up app user: %w", err)
	}
	return acc, nil
}

func (p *Provisioner) rootlessDir(acc system.Account) string {
	if p.opts.Quadlet.Rootless != "" {
		return p.opts.Quadlet.Rootless
	}
	return filepath.Join(acc.Home, ".config", "containers", "systemd")
}

// rootlessTarget is the rootless Quadlet dir as a sync target: all I/O stays inside the
// app user's home when the dir is below it (the home itself sits in a root-owned parent),
// and the files belong to the app user when running as root.
func (p *Provisioner) rootlessTarget(acc system.Account, dir string) quadlet.Target {
	t := quadlet.Target{Dir: dir, Base: dir, UID: -1, GID: -1}
	if rel, err := filepath.Rel(acc.Home, dir); acc.Home != "" && err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		t.Base = acc.Home
	}
	if os.Geteuid() == 0 && acc.UID != 0 {
		t.UID, t.GID = acc.UID, acc.GID
	}
	return t
}

// ensureOwnedDir creates dir and any missing parents; those below base (the app user's
// home) are created through an os.Root on base (so no symlink the app user planted
// leads outside it) and given to acc when running as root, so ~/.config stays the user's.
func ensureOwnedDir(dir, base string, acc system.Account) error {
	rel, err := filepath.Rel(base, dir)
	if base == "" || err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
		return nil
	}
	if err := os.MkdirAll(base, 0o755); err != nil { // a home that does not exist yet (simulate)
		return fmt.Errorf("creating %s: %w", base, err)
	}
	root, err := os.OpenRoot(base)
	if err != nil {
		return fmt.Errorf("opening %s: %w", base, err)
	}
	defer root.Close()
	cur := ""
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		err := root.Mkdir(cur, 0o755)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Join(base, cur), err)
		}
		if os.Geteuid() == 0 && acc.UID != 0 {
			if err := root.Lchown(cur, acc.UID, acc.GID); err != nil {
				return fmt.Errorf("chown %s: %w", filepath.Join(base, cur), err)
			}
		}
	}
	return nil
}

// IdentityKeyPath is where the device's identity key is: Options.IdentityKey, or
// <state>/identity_ed25519. It signs what the device says and opens its secrets; the node
// and the local commands take it from here, so they never disagree.
func (p *Provisioner) IdentityKeyPath() string {
	return identity.Path(p.opts.IdentityKey, p.opts.State.Root)
}
