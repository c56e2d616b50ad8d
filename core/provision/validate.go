package provision

import (
	"context"

	"github.com/fleetprov/fleetprov/core/config"
)

// Validate checks an input (config.toml) exactly as an apply would before touching the
// device, and returns the model and the full report. The error is one of config's
// sentinels when the input is invalid.
func Validate(ctx context.Context, input []byte, opts config.Options) (config.Model, config.Report, error) {
	if err := ctx.Err(); err != nil {
		return config.Model{}, config.Report{}, err
	}
	return config.Parse(input, opts)
}
