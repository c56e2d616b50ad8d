package provision

import (
	"context"
	"errors"

	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/record"
)

// JobFunc adapts an apply to a job: events go to the job, the rollback status and the
// result are recorded. Every transport (NATS, HTTP, CLI) submits applies through it.
func JobFunc(p *Provisioner, in Input) jobs.Func {
	return func(ctx context.Context, r *jobs.Run) (*record.Result, error) {
		res, err := p.Apply(ctx, in, r.Emit)
		r.SetRollbackStatus(res.RollbackStatus)
		out := &record.Result{Warnings: res.Warnings, Reapply: res.Reapply, RolledBack: res.RolledBack}
		if out.Warnings == nil {
			out.Warnings = []string{}
		}
		if err != nil {
			code := record.CodeFailed
			switch {
			case isInvalid(err):
				code = record.CodeInvalid
			case errors.Is(err, ErrNotAuthorized), errors.Is(err, ErrProvisioned):
				code = record.CodeUnauthorized
			case res.RolledBack:
				code = record.CodeRolledBack
			}
			return out, &jobs.CodedError{Code: code, Err: err}
		}
		return out, nil
	}
}

func isInvalid(err error) bool {
	var ie *InvalidError
	return errors.As(err, &ie)
}

// ValidateOptions returns the validation options of this device.
func (p *Provisioner) ValidateOptions() check.Options {
	return check.Options{Config: p.opts.Config, Limits: p.opts.Limits, ConfigDir: p.opts.State.Active()}
}
