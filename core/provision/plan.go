package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/record"
)

// ErrHostRefused: the host refuses the input's host settings (an account fleetprov did
// not create, a ruleset nft rejects), as an apply's check-host stage would.
var ErrHostRefused = errors.New("this device's host refuses it")

// PlanFor validates an input as an apply would and plans it (record.Plan) against the active state and
// this host. Read-only: it takes no lock, so a job running at the same time may make the
// plan stale. The report says why an invalid input has no plan.
func (p *Provisioner) PlanFor(ctx context.Context, r io.Reader) (*record.Plan, config.Report, error) {
	v, err := check.Input(ctx, r, p.ValidateOptions())
	if err != nil {
		return nil, v.Report, err
	}
	if _, _, waiting := p.AwaitingConfirm(); waiting {
		// An apply would be refused until the change before it is confirmed.
		return nil, v.Report, ErrAwaitingConfirm
	}
	pl := &record.Plan{Units: []record.UnitChange{}, Host: []record.HostStep{}}
	active := map[string][]byte{}
	if p.opts.State.HasActive() {
		cur, err := quadlet.ReadDir(p.opts.State.Active())
		if err != nil {
			return nil, v.Report, fmt.Errorf("reading the active units: %w", err)
		}
		for _, f := range cur.Files {
			active[f.Unit.Mode+"/"+f.Unit.Filename] = f.Content
		}
	}
	for _, f := range v.Rendered.Files {
		k := f.Unit.Mode + "/" + f.Unit.Filename
		old, had := active[k]
		delete(active, k)
		switch {
		case !had:
			pl.Units = append(pl.Units, record.UnitChange{Unit: f.Unit.Filename, Mode: f.Unit.Mode, Action: "add"})
		case !bytes.Equal(old, f.Content):
			pl.Units = append(pl.Units, record.UnitChange{Unit: f.Unit.Filename, Mode: f.Unit.Mode, Action: "change"})
		}
	}
	for k := range active {
		mode, file, _ := strings.Cut(k, "/")
		pl.Units = append(pl.Units, record.UnitChange{Unit: file, Mode: mode, Action: "remove"})
	}
	sort.Slice(pl.Units, func(i, j int) bool {
		a, b := pl.Units[i], pl.Units[j]
		return a.Mode+"/"+a.Unit < b.Mode+"/"+b.Unit
	})
	if env := p.hostEnv(); env != nil {
		pl.HostManaged = true
		hp, err := host.Check(ctx, env, p.hostDesired(&v.Model))
		if err != nil {
			return nil, v.Report, fmt.Errorf("%w: host settings: %w", ErrHostRefused, err)
		}
		for _, st := range hp.Steps {
			pl.Host = append(pl.Host, st.HostStep)
		}
		if hp.Network() && v.Model.Activation.Confirm != config.ConfirmNone {
			pl.Confirm, pl.ConfirmSeconds = string(v.Model.Activation.Confirm), v.Model.Activation.ConfirmSeconds
		}
	}
	return pl, v.Report, nil
}
