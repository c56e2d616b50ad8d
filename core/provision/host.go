package provision

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/core/record"
)

// hostAccountsFile records the accounts fleetprov created (in the state dir, outside the
// active and rollback trees: a rollback must still know the accounts the failed apply
// created, to lock them).
const hostAccountsFile = "host-accounts.json"

// hostEnv is where this device's host settings go; nil when the backend applies none
// (--host none: the derived files in the state are all there is).
func (p *Provisioner) hostEnv() *host.Env {
	if p.opts.Backend.Host == nil {
		return nil
	}
	return &host.Env{Root: p.hostRoot(), Host: p.opts.Backend.Host, Record: filepath.Join(p.opts.State.Root, hostAccountsFile)}
}

// hostRoot is the root the host settings go under (--host-root, default /).
func (p *Provisioner) hostRoot() string {
	if p.opts.HostRoot == "" {
		return "/"
	}
	return p.opts.HostRoot
}

// hostDesired is the host state of a model (nil: of no config, which keeps no account of
// ours unlocked and none of our files).
func (p *Provisioner) hostDesired(m *config.Model) host.Desired {
	if m == nil {
		return host.Desired{}
	}
	return host.Render(*m, host.Options{BridgePort: p.opts.Config.BridgePort, Chrony: host.HasChrony(p.hostRoot())})
}

// checkHost vets the candidate's host settings against this host before anything is
// promoted: accounts it may not touch, missing shells, an admin group, the ruleset.
func (a *applyRun) checkHost(ctx context.Context) error {
	env := a.p.hostEnv()
	if env == nil {
		return nil
	}
	d := a.p.hostDesired(&a.model)
	plan, err := host.Check(ctx, env, d)
	if err != nil {
		return fmt.Errorf("host settings: %w", err)
	}
	a.hostPlan = &plan
	if plan.Network() && a.model.Activation.Confirm == config.ConfirmAuto {
		// The proof after the change means something only if it worked before it.
		if reach := a.p.currentReach(); reach != nil {
			a.reachBefore = reach(ctx)
		}
	}
	a.emit(record.Event{Step: "check-host", Message: fmt.Sprintf("%d host changes", len(plan.Steps))})
	return nil
}

// applyHost converges the host to the active model (m, or none when there is no active
// state). An apply runs the plan it checked under the same lock, and stops at the first
// failing step (the apply then rolls back). Without a plan (a rollback, a discard,
// recovery) it restores all it can: a failing step is reported and the rest still run.
// Each change is an event.
func (p *Provisioner) applyHost(ctx context.Context, m *config.Model, plan *host.Plan, emit func(record.Event)) error {
	env := p.hostEnv()
	if env == nil {
		return nil
	}
	if plan != nil {
		return host.Run(ctx, env, *plan, emit)
	}
	return host.Restore(ctx, env, p.hostDesired(m), emit)
}
