package device

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/blob"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// Handler serves one op of a verified request, like net/http's Handler.
type Handler interface {
	Handle(ctx context.Context, r *Request) (envelope.Reply, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, r *Request) (envelope.Reply, error)

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, r *Request) (envelope.Reply, error) {
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
	}
}

func (s *Service) run(ctx context.Context, r *Request) (envelope.Reply, error) {
	h, ok := s.handlers[r.Env.Op]
	if !ok {
		r.Close()
		return envelope.Reply{}, envelope.Errorf(envelope.ErrInvalid, "unknown op %q", r.Env.Op)
	}
	return h.Handle(ctx, r)
}

// Submit starts a mutating job for a verified request.
func (s *Service) Submit(r *Request, in provision.Input, op, source string) (jobs.Job, error) {
	return s.SubmitJob(r.Env.ID, op, source, r.Decision.Principal, in, r.Close)
}

// SubmitJob starts a mutating pipeline job whatever transport it came by, and publishes its
// events and final record on NATS. release runs when the job no longer needs its input.
// Busy is an *envelope.Error with code busy.
func (s *Service) SubmitJob(id, op, source, signer string, in provision.Input, release func()) (jobs.Job, error) {
	if release == nil {
		release = func() {}
	}
	j, events, cancel, err := s.o.Jobs.SubmitWatch(jobs.Spec{ID: id, Op: op, Source: source, Signer: signer, Mutating: true,
		Run: func(ctx context.Context, run *jobs.Run) (*jobs.Result, error) {
			defer release()
			return provision.JobFunc(s.o.Prov, in)(ctx, run)
		}})
	if err != nil {
		release()
		if errors.Is(err, jobs.ErrBusy) {
			return jobs.Job{}, envelope.Errorf(envelope.ErrBusy, "%v", err)
		}
		return jobs.Job{}, envelope.Errorf(envelope.ErrInternal, "%v", err)
	}
	s.publishEvents(j.ID, events, cancel)
	return j, nil
}

// Run dispatches a verified request to its op's handler (the HTTP bridge's
// POST /api/envelopes uses it, so an envelope behaves the same however it arrived).
func (s *Service) Run(ctx context.Context, r *Request) (envelope.Reply, error) { return s.run(ctx, r) }

func (s *Service) apply(ctx context.Context, r *Request) (envelope.Reply, error) {
	in := provision.Input{Reader: r.Payload, Check: r.Decision.CheckPossession()}
	j, err := s.Submit(r, in, "apply", "nats")
	if err != nil {
		return envelope.Reply{}, err
	}
	return envelope.Reply{Accepted: true, JobID: j.ID}, nil
}

// ValidationResult is the answer to validate.
type ValidationResult struct {
	OK       bool           `json:"ok"`
	Errors   []config.Entry `json:"errors"`
	Warnings []config.Entry `json:"warnings"`
}

// NewValidationResult folds a report into a result.
func NewValidationResult(rep config.Report) ValidationResult {
	v := ValidationResult{OK: !rep.Fatal(), Errors: rep.Errors(), Warnings: rep.Warnings()}
	if v.Errors == nil {
		v.Errors = []config.Entry{}
	}
	if v.Warnings == nil {
		v.Warnings = []config.Entry{}
	}
	return v
}

func (s *Service) validate(ctx context.Context, r *Request) (envelope.Reply, error) {
	defer r.Close()
	_, rep, _ := provision.Validate(ctx, r.Payload, s.o.Prov.ValidateOptions())
	return s.ok(NewValidationResult(rep)), nil
}

func (s *Service) current(ctx context.Context, r *Request) (envelope.Reply, error) {
	defer r.Close()
	cur, err := s.o.Prov.Current(ctx)
	if err != nil {
		return envelope.Reply{}, envelope.Errorf(envelope.ErrInternal, "%v", err)
	}
	return s.ok(cur), nil
}

// ExportResult carries an exported bundle inline, or a reference to fetch it from.
type ExportResult struct {
	Format  string               `json:"format"`
	SHA256  string               `json:"sha256"`
	Size    int64                `json:"size"`
	Inline  string               `json:"inline,omitempty"` // base64
	Payload *envelope.PayloadRef `json:"payload_ref,omitempty"`
}

func (s *Service) export(ctx context.Context, r *Request) (envelope.Reply, error) {
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
	var buf bytes.Buffer
	if err := s.o.Prov.Export(ctx, &buf, format); err != nil {
		if errors.Is(err, state.ErrNoActive) {
			return envelope.Reply{}, envelope.Errorf(envelope.ErrNotFound, "the device is not provisioned")
		}
		return envelope.Reply{}, envelope.Errorf(envelope.ErrInternal, "%v", err)
	}
	res := ExportResult{Format: format.String(), SHA256: envelope.Digest(buf.Bytes()), Size: int64(buf.Len())}
	if buf.Len() < int(s.o.Conn.MaxPayload())/2 {
		res.Inline = base64.StdEncoding.EncodeToString(buf.Bytes())
		return s.ok(res), nil
	}
	subj := subjects.Subject{Fleet: s.o.Fleet, Kind: subjects.Blob, Name: "exp-" + r.Env.ID}.String()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	stop, err := blob.Serve(sctx, s.o.Conn, subj, buf.Bytes())
	if err != nil {
		cancel()
		return envelope.Reply{}, envelope.Errorf(envelope.ErrInternal, "%v", err)
	}
	go func() { <-sctx.Done(); stop(); cancel() }()
	res.Payload = &envelope.PayloadRef{Subject: subj, Size: res.Size}
	return s.ok(res), nil
}

func (s *Service) patch(ctx context.Context, r *Request) (envelope.Reply, error) {
	var p provision.Patch
	if err := json.NewDecoder(r.Payload).Decode(&p); err != nil {
		r.Close()
		return envelope.Reply{}, envelope.Errorf(envelope.ErrInvalid, "patch body: %v", err)
	}
	m, err := s.o.Prov.PreparePatch(p)
	if err != nil {
		r.Close()
		return envelope.Reply{}, PatchError(err)
	}
	j, err := s.Submit(r, provision.Input{Model: &m}, "patch", "nats")
	if err != nil {
		return envelope.Reply{}, err
	}
	return envelope.Reply{Accepted: true, JobID: j.ID}, nil
}

// PatchError maps a PreparePatch error to a wire error, keeping every finding.
func PatchError(err error) error {
	var ie *provision.InvalidError
	switch {
	case errors.As(err, &ie):
		var msgs []string
		for _, e := range ie.Report.Errors() {
			msgs = append(msgs, e.Error())
		}
		return envelope.Errorf(envelope.ErrInvalid, "%s", strings.Join(msgs, "; "))
	case errors.Is(err, state.ErrNoActive):
		return envelope.Errorf(envelope.ErrInvalid, "the device is not provisioned: apply a whole config first")
	}
	return envelope.Errorf(envelope.ErrInternal, "%v", err)
}
