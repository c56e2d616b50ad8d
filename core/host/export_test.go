package host

import (
	"context"

	"github.com/fleetprov/fleetprov/core/record"
)

// Apply converges the host to d (the tests' one call): it plans, then runs the plan.
func Apply(ctx context.Context, e *Env, d Desired, emit func(record.Event)) (Plan, error) {
	p, err := plan(ctx, e, d, false)
	if err != nil {
		return p, err
	}
	return p, Run(ctx, e, p, emit)
}
