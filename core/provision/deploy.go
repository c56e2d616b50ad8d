package provision

import (
	"context"
	"fmt"

	"github.com/fleetprov/fleetprov/core/activation"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/core/system"
)

// deployed is what deploy learned, for the activation that follows.
type deployed struct {
	rendered quadlet.Rendered
	account  system.Account
	rootless bool
}

// deploy stops the services whose units disappear, syncs the active state's units into the
// Quadlet dirs, reloads the managers and restarts the units in order. With no active state it
// removes every managed unit. Restart failures are reported as events, not errors: the
// health check that follows decides. The active secrets are put into Podman's stores
// before any unit restarts. only, when not nil, picks the units to restart (a secrets
// rotation restarts just their users); nil restarts all. m is the active model when the
// caller has it parsed (nil: parsed here, once, for the host settings and the secrets).
// hostPlan, when set, is the host plan an apply checked under the same lock.
func (p *Provisioner) deploy(ctx context.Context, m *config.Model, hostPlan *host.Plan, emit func(record.Event), only func(config.Unit) bool) (deployed, error) {
	var d deployed
	active := p.opts.State.Active()
	if p.opts.State.HasActive() {
		r, err := quadlet.ReadDir(active)
		if err != nil {
			return d, err
		}
		d.rendered = r
		if m == nil {
			am, err := p.activeModel()
			if err != nil {
				return d, err
			}
			m = &am
		}
	} else {
		m = nil
	}
	// Host settings first: the accounts, network and firewall the containers run with. An
	// apply stops at a failure; a restore goes on to the containers and reports it last.
	hostErr := p.applyHost(ctx, m, hostPlan, emit)
	if hostErr != nil && (hostPlan != nil || ctx.Err() != nil) {
		return d, hostErr
	}
	rootful, rootless := quadlet.ByMode(d.rendered.Files)
	d.rootless = len(rootless) > 0
	acc, err := p.appAccount(ctx)
	if err != nil {
		return d, err
	}
	d.account = acc
	sysUnits, userUnits := p.opts.Backend.System, p.opts.Backend.User(acc)

	rdir := p.rootlessDir(acc)
	syncRootless := d.rootless || dirExists(rdir)
	rootfulT := quadlet.Target{Dir: p.opts.Quadlet.Rootful, UID: -1, GID: -1}
	rootlessT := p.rootlessTarget(acc, rdir)
	// Services whose units disappear are stopped first, while systemd still knows how.
	goneRootful, err := quadlet.Disappearing(rootfulT, rootful)
	if err != nil {
		return d, err
	}
	var goneRootless []quadlet.ManagedFile
	if syncRootless {
		if goneRootless, err = quadlet.Disappearing(rootlessT, rootless); err != nil {
			return d, err
		}
	}
	for _, gone := range []struct {
		units system.Units
		mode  string
		files []quadlet.ManagedFile
	}{{sysUnits, config.ModeRootful, goneRootful}, {userUnits, config.ModeRootless, goneRootless}} {
		for _, f := range gone.files {
			ev := record.Event{Step: "service-stop", Service: f.Service, Mode: gone.mode, Status: "stopped"}
			if err := gone.units.Stop(ctx, f.Service); err != nil {
				ev.Status, ev.Message = "failed", err.Error()
			}
			emit(ev)
		}
	}
	if _, err := quadlet.SyncFiles(ctx, rootfulT, rootful); err != nil {
		return d, fmt.Errorf("syncing rootful units: %w", err)
	}
	if syncRootless {
		if err := ensureOwnedDir(rdir, acc.Home, acc); err != nil {
			return d, err
		}
		ch, err := quadlet.SyncFiles(ctx, rootlessT, rootless)
		if err != nil {
			return d, fmt.Errorf("syncing rootless units: %w", err)
		}
		if len(ch.Ignored) > 0 {
			p.log.Warn("ignored tampered entries in the rootless Quadlet manifest", "path", rdir, "entries", ch.Ignored)
		}
	}
	p.fault("deploy:synced")
	if err := sysUnits.Reload(ctx); err != nil {
		return d, fmt.Errorf("reloading the system manager: %w", err)
	}
	if d.rootless || len(goneRootless) > 0 {
		if err := p.opts.Backend.Accounts.EnsureUserManager(ctx, acc); err != nil {
			return d, err
		}
		if err := userUnits.Reload(ctx); err != nil {
			return d, fmt.Errorf("reloading the user manager: %w", err)
		}
	}
	removeSecrets, err := p.syncSecrets(ctx, m, acc, emit)
	if err != nil {
		return d, fmt.Errorf("installing secrets: %w", err)
	}
	for _, u := range quadlet.RestartOrder(d.rendered.Runtime.Units) {
		if only != nil && !only(u) {
			continue
		}
		mgr := sysUnits
		if u.Mode == config.ModeRootless {
			mgr = userUnits
		}
		ev := record.Event{Step: "service-deploy", Service: u.Service, Mode: u.Mode, Status: "restarted"}
		if err := mgr.Restart(ctx, u.Service); err != nil {
			if ctx.Err() != nil {
				return d, ctx.Err()
			}
			ev.Status, ev.Message = "failed", err.Error()
		}
		emit(ev)
	}
	if err := removeSecrets(); err != nil {
		return d, err
	}
	p.fault("deploy:restarted")
	if hostErr != nil {
		return d, fmt.Errorf("restoring the host settings: %w", hostErr)
	}
	return d, nil
}

// activate runs the activation policy of the active state.
func (p *Provisioner) activate(ctx context.Context, m config.Model, d deployed, emit func(record.Event)) error {
	spec := p.spec(m.Activation, m, d.rendered.Runtime.Units, d.account)
	spec.Hook, spec.HookEnv = p.opts.Hook, []string{"FLEETPROV_CONFIG_DIR=" + p.opts.State.Active()}
	return p.runActivation(ctx, spec, emit)
}

// spec is an activation spec of policy over the active state's units; every caller gets
// the containers' Podman names, which exec checks run in (without them a check meant for
// a container would run on the host).
func (p *Provisioner) spec(policy config.Activation, m config.Model, units []config.Unit, acc system.Account) activation.Spec {
	return activation.Spec{Policy: policy, Units: units, AppUser: acc, ContainerNames: containerNames(m)}
}

// runActivation runs an activation spec on this device's backend, reporting its events as
// pipeline events.
func (p *Provisioner) runActivation(ctx context.Context, spec activation.Spec, emit func(record.Event)) error {
	return activation.Activate(ctx, spec, activation.Options{Backend: p.opts.Backend, PollInterval: p.opts.PollInterval}, emit)
}

// activeModel parses the active config.toml.
func (p *Provisioner) activeModel() (config.Model, error) {
	raw, err := p.opts.State.ReadActive()
	if err != nil {
		return config.Model{}, err
	}
	m, _, err := config.Parse(raw, p.opts.Config)
	if err != nil {
		return config.Model{}, fmt.Errorf("parsing active config: %w", err)
	}
	return m, nil
}

// CheckHealth runs the required-health checks of the active config (worker check-health).
func (p *Provisioner) CheckHealth(ctx context.Context, emit func(record.Event)) error {
	m, err := p.activeModel()
	if err != nil {
		return err
	}
	r, err := quadlet.ReadDir(p.opts.State.Active())
	if err != nil {
		return err
	}
	acc, err := p.appAccount(ctx)
	if err != nil {
		return err
	}
	policy := m.Activation
	policy.Restart = nil
	policy.SettleSeconds = 0
	return p.runActivation(ctx, p.spec(policy, m, r.Runtime.Units, acc), emit)
}

// SyncQuadlet re-syncs the active units into the Quadlet dirs and restarts them.
func (p *Provisioner) SyncQuadlet(ctx context.Context, emit func(record.Event)) error {
	unlock, err := p.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if !p.opts.State.HasActive() {
		return state.ErrNoActive
	}
	_, err = p.deploy(ctx, nil, nil, emit, nil)
	return err
}

// containerNames maps each container to its Podman name: ContainerName= when set, else
// Quadlet's default systemd-<name>.
func containerNames(m config.Model) map[string]string {
	out := map[string]string{}
	for name, c := range m.Containers.Container {
		out[name] = "systemd-" + name
		if v := c.Container.Get("ContainerName"); len(v) == 1 && v[0].Kind == config.KindString {
			out[name] = v[0].Str
		}
	}
	return out
}
