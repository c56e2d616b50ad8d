// Package check validates an input (config.toml or bundle) exactly as an apply would
// before it touches a device: unpack into a temp dir that is removed, parse, validate,
// render the Quadlet units. The publisher uses it offline; the device's pipeline uses the
// same function, so both give the same verdict.
//
// It must not import messaging/, net/http or NATS packages, nor the device pipeline
// (core/provision, core/jobs, core/state).
package check

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/quadlet"
)

// DefaultConfigDir is where the active config lives on a device with the default state
// dir; units are rendered for it when Options.ConfigDir is empty.
const DefaultConfigDir = "/var/lib/fleetprov/config"

// Options tune a validation.
type Options struct {
	Config config.Options
	Limits bundle.Limits
	// ConfigDir is the runtime config dir units are rendered for (default DefaultConfigDir).
	ConfigDir string
}

// Result is what one validation produced.
type Result struct {
	Raw      []byte // config.toml as given
	Model    config.Model
	Report   config.Report
	Rendered quadlet.Rendered
}

// Input checks r. Unpack and render failures are added to the report. The error is nil
// only for a valid input; it wraps config.ErrInvalid (or the bundle's sentinel) otherwise.
func Input(ctx context.Context, r io.Reader, opts Options) (Result, error) {
	var v Result
	tmp, err := os.MkdirTemp("", "fleetprov-validate-")
	if err != nil {
		return v, fmt.Errorf("creating temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return v, fmt.Errorf("opening temp dir: %w", err)
	}
	defer root.Close()
	c, err := bundle.Unpack(ctx, r, root, bundle.Options{Limits: opts.Limits})
	if err != nil {
		v.Report.Errorf(nil, "%s", err.Error())
		return v, fmt.Errorf("reading input: %w", err)
	}
	v.Raw = c.Config
	if v.Model, v.Report, err = config.Parse(c.Config, opts.Config); err != nil {
		return v, err
	}
	if opts.ConfigDir == "" {
		opts.ConfigDir = DefaultConfigDir
	}
	if v.Rendered, err = quadlet.Render(v.Model, quadlet.Options{ConfigDir: opts.ConfigDir, AppUser: opts.Config.AppUser}); err != nil {
		v.Report.Errorf(config.Path{"containers"}, "%s", err.Error())
		v.Model = config.Model{}
		return v, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	return v, nil
}
