package device

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"time"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/check"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// Handler serves one op of a verified request, like net/http's Handler.
type Handler interface {
	Handle(ctx context.Context, r *Request) (wire.Reply, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) (wire.Reply, error)

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, r *Request) (wire.Reply, error) {
	return f(ctx, r)
}

// newHandlers maps each signed op to its handler; built in code, not registered from init.
func (s *Service) newHandlers() map[string]Handler {
	return map[string]Handler{
		"apply":    HandlerFunc(s.apply),
		"validate": HandlerFunc(s.validate),
		"current":  HandlerFunc(s.current),
		"export":   HandlerFunc(s.export),
		"patch":    HandlerFunc(s.patch),
		"confirm":  HandlerFunc(s.confirm),
	}
}

// Handle dispatches a verified request to its op's handler, so an envelope behaves the
// same however it arrived.
func (s *Service) Handle(ctx context.Context, r *Request) (wire.Reply, error) {
	h, ok := s.handlers[r.Env.Op]
	if !ok {
		r.Close()
		return wire.Reply{}, wire.Errorf(wire.ErrInvalid, "unknown op %q", r.Env.Op)
	}
	return h.Handle(ctx, r)
}

// submit starts the job of a verified request; its id is the envelope's, and it checks
// the request's authorization again when it starts.
func (s *Service) submit(r *Request, in provision.Input) (wire.Reply, error) {
	in.Authorize = s.recheck(r)
	j, err := s.SubmitJob(JobSpec{ID: r.Env.ID, Op: r.Env.Op, Source: r.Source, Signer: r.Decision.Principal,
		Input: in, Release: r.Close})
	if err != nil {
		return wire.Reply{}, err
	}
	// A pushed change is newer than any durable desired state issued before it.
	if err := s.setMark(Mark{ID: r.Env.ID, IssuedAt: r.Env.IssuedAt}); err != nil {
		s.log.Error("recording the applied mark", "job_id", j.ID, "err", err)
	}
	return wire.Reply{Accepted: true, JobID: j.ID}, nil
}

func (s *Service) apply(ctx context.Context, r *Request) (wire.Reply, error) {
	return s.submit(r, provision.Input{Reader: r.Payload, Check: r.Decision.CheckPossession(), Secrets: r.Env.Secrets})
}

// confirm confirms the network change that awaits an operator's confirmation
// (activation.confirm = "operator"); the signer must be trusted by the new state, the one
// that made the change.
func (s *Service) confirm(ctx context.Context, r *Request) (wire.Reply, error) {
	defer r.Close()
	if err := s.o.Prov.Confirm(); err != nil {
		return wire.Reply{}, wire.Errorf(wire.ErrNotFound, "%w", err)
	}
	return wire.OK(nil), nil
}

// ConfirmJob confirms the network change that job id awaits from an operator
// (activation.confirm = "operator"): the Boot UI's confirm, from the browser session
// that started that job. provision.ErrNothingToConfirm when that job awaits none.
func (s *Service) ConfirmJob(id string) error {
	if j, err := s.Job(id); err != nil || j.State != record.Running {
		return provision.ErrNothingToConfirm
	}
	return s.o.Prov.ConfirmOperator()
}

// Validate checks an input offline as this device would (its validation options).
func (s *Service) Validate(ctx context.Context, r io.Reader) wire.ValidationResult {
	v, _ := check.Input(ctx, r, s.o.Prov.ValidateOptions())
	return wire.NewValidationResult(v.Report)
}

// validate answers a signed validate op: the report, and for a valid input the plan of
// what an apply would change here (units and host steps), computed without changing
// anything. The plan tells about the device's state and host (its accounts, its units),
// so only a signer who may also apply gets it; others get the plain validation. A plan
// the host refuses (an account fleetprov may not touch, a ruleset nft rejects) is an
// invalid input, as the apply's check-host stage would make it.
func (s *Service) validate(ctx context.Context, r *Request) (wire.Reply, error) {
	defer r.Close()
	target := auth.Target{Kind: r.Env.Target, Group: r.Env.Group}
	if err := s.o.Trust.Allows(r.Decision, "apply", target, s.Groups()); err != nil {
		v, _ := check.Input(ctx, r.Payload, s.o.Prov.ValidateOptions())
		return wire.OK(wire.NewValidationResult(v.Report)), nil
	}
	plan, rep, err := s.o.Prov.PlanFor(ctx, r.Payload)
	res := wire.NewValidationResult(rep)
	switch {
	case err == nil || !res.OK:
	case errors.Is(err, provision.ErrAwaitingConfirm):
		return wire.Reply{}, wire.Errorf(wire.ErrBusy, "%w", err)
	case errors.Is(err, provision.ErrHostRefused):
		res.OK = false
		res.Errors = append(res.Errors, config.Entry{Severity: config.SeverityError, Path: "host", Message: err.Error()})
	default:
		return wire.Reply{}, wire.Errorf(wire.ErrInternal, "planning: %w", err)
	}
	res.Plan = plan
	return wire.OK(res), nil
}

// Current is the device's desired state and drift.
func (s *Service) Current(ctx context.Context) (provision.Current, error) {
	return s.cachedCurrent(ctx)
}

func (s *Service) current(ctx context.Context, r *Request) (wire.Reply, error) {
	defer r.Close()
	_, data, err := s.cachedCurrentJSON(ctx)
	if err != nil {
		return wire.Reply{}, err
	}
	return wire.Reply{Accepted: true, Data: data}, nil
}

// Export writes the active config in format; state.ErrNoActive when unprovisioned.
func (s *Service) Export(ctx context.Context, format bundle.Format) ([]byte, error) {
	var buf bytes.Buffer
	if err := s.o.Prov.Export(ctx, &buf, format); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (s *Service) export(ctx context.Context, r *Request) (wire.Reply, error) {
	defer r.Close()
	format := bundle.FormatZstd
	var q struct {
		Format string `json:"format"`
	}
	if r.Size > 0 {
		json.NewDecoder(r.Payload).Decode(&q)
	}
	if q.Format == "toml" {
		format = bundle.FormatTOML
	}
	b, err := s.Export(ctx, format)
	if err != nil {
		return wire.Reply{}, err
	}
	res := wire.ExportResult{Format: format.String(), SHA256: envelope.Digest(b), Size: int64(len(b))}
	if s.o.Payloads == nil || len(b) < s.o.Payloads.MaxInline() {
		res.Inline = base64.StdEncoding.EncodeToString(b)
		return wire.OK(res), nil
	}
	// Offered for two minutes, or until the service closes.
	sctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	ref, err := s.o.Payloads.Serve(sctx, "exp-"+r.Env.ID, b)
	if err != nil {
		cancel()
		return wire.Reply{}, wire.Wrap(wire.ErrInternal, "offering the export", err)
	}
	context.AfterFunc(sctx, cancel) // releases the context once it ends
	res.Payload = ref
	return wire.OK(res), nil
}

// PreparePatch applies a partial update to the active config and validates the result.
func (s *Service) PreparePatch(p config.Patch) (provision.Input, error) {
	return s.o.Prov.PreparePatch(p)
}

func (s *Service) patch(ctx context.Context, r *Request) (wire.Reply, error) {
	var p config.Patch
	if err := json.NewDecoder(r.Payload).Decode(&p); err != nil {
		r.Close()
		return wire.Reply{}, wire.Errorf(wire.ErrInvalid, "patch body: %w", err)
	}
	if provision.IsSecretsSet(p) && r.Env.Secrets == nil {
		r.Close()
		return wire.Reply{}, wire.Errorf(wire.ErrInvalid, "a secrets set carries no secrets")
	}
	in, err := s.PreparePatch(p)
	if err != nil {
		r.Close()
		return wire.Reply{}, err
	}
	in.Secrets = r.Env.Secrets
	return s.submit(r, in)
}
