package provision

import (
	"context"
	"errors"

	"github.com/fleetprov/fleetprov/core/jobs"
)

// JobFunc adapts an apply to a job: events go to the job, the rollback status and the
// result are recorded. Every transport (NATS, HTTP, CLI) submits applies through it.
func JobFunc(p *Provisioner, in Input) jobs.Func {
	return func(ctx context.Context, r *jobs.Run) (*jobs.Result, error) {
		res, err := p.Apply(ctx, in, func(e Event) {
			r.Emit(jobs.Event{Step: e.Step, Message: e.Message, Service: e.Service, Mode: e.Mode, Status: e.Status})
		})
		r.SetRollbackStatus(res.RollbackStatus)
		out := &jobs.Result{Warnings: res.Warnings, Reapply: res.Reapply, RolledBack: res.RolledBack}
		if out.Warnings == nil {
			out.Warnings = []string{}
		}
		if err != nil {
			code := "failed"
			switch {
			case isInvalid(err):
				code = "invalid"
			case res.RolledBack:
				code = "rolled-back"
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
func (p *Provisioner) ValidateOptions() ValidateOptions {
	return ValidateOptions{Config: p.opts.Config, Limits: p.opts.Limits, ConfigDir: p.opts.State.Active()}
}
