package bridge

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/messaging/device"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/wire"
	"github.com/fleetprov/fleetprov/schemas"
)

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	svc := s.o.Service
	s.writeSigned(w, http.StatusOK, map[string]any{"status": "ok", "provisioned": svc.Provisioned(), "device": svc.Device(),
		"fleet": svc.Fleet(), "version": svc.Version()})
	return nil
}

// writeSigned is writeJSON with the device's signature of the exact body
// (wire.DeviceSignatureHeader), for what `publisher --via` believes: health and job records.
func (s *Server) writeSigned(w http.ResponseWriter, status int, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	b = append(b, '\n')
	if sig := s.o.Service.Sign(b); sig != "" {
		w.Header().Set(wire.DeviceSignatureHeader, sig)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func (s *Server) nonce(w http.ResponseWriter, r *http.Request) error {
	nonce, err := s.o.Nonces.Issue(clientAddr(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]string{"nonce": nonce})
	return nil
}

// accepted answers 202 with the job and its URL.
func accepted(w http.ResponseWriter, id string) {
	url := "/api/jobs/" + id
	w.Header().Set("Location", url)
	writeJSON(w, http.StatusAccepted, map[string]string{"job_id": id, "state": "submitted", "job_url": url})
}

// submit starts a mutating job through the device service, so its events also go out on
// every other transport; release runs when the job no longer needs its input.
func (s *Server) submit(op, source, signer string, in provision.Input, release func()) (string, error) {
	j, err := s.o.Service.SubmitJob(device.JobSpec{Op: op, Source: source, Signer: signer, Input: in, Release: release})
	if err != nil {
		return "", err
	}
	return j.ID, nil
}

// maxPatchBody bounds a partial update's JSON: one user or resource, or one section.
const maxPatchBody = 1 << 20

func (s *Server) postConfig(w http.ResponseWriter, r *http.Request) error {
	if s.o.Service.FirstBootUnsigned() {
		if err := s.firstBootGuard(r); err != nil {
			return err
		}
	}
	isSigned := hasSignature(r) || !s.o.Service.FirstBootUnsigned()
	var sg signed
	if isSigned {
		var err error
		if sg, err = s.takeNonce(r); err != nil {
			return err
		}
	}
	b, err := s.spool(w, r, s.o.MaxBody)
	if err != nil {
		return err
	}
	rd, err := b.Reader()
	if err != nil {
		b.Close()
		return err
	}
	in := provision.Input{Reader: rd}
	signer := ""
	if isSigned {
		dec, recheck, err := s.authorize(r, sg, b.sum, "apply")
		if err != nil {
			b.Close()
			return err
		}
		in.Check, in.Authorize, signer = dec.CheckPossession(), recheck, dec.Principal
	} else {
		// First boot, operator on the LAN with the device in hand: no signature (the
		// first-boot guard above ran); the job fails if the device gets provisioned, or
		// the first-boot window closes, meanwhile.
		in.RequireUnprovisioned, in.Authorize = true, s.o.Service.FirstBootRecheck
		signer = "first-boot"
	}
	id, err := s.submit("apply", "http", signer, in, b.Close)
	if err != nil {
		return err
	}
	accepted(w, id)
	return nil
}

func (s *Server) validate(w http.ResponseWriter, r *http.Request) error {
	sg, err := s.takeNonce(r)
	if err != nil {
		return err
	}
	b, err := s.spool(w, r, s.o.MaxBody)
	if err != nil {
		return err
	}
	defer b.Close()
	if _, _, err := s.authorize(r, sg, b.sum, "validate"); err != nil {
		return err
	}
	rd, err := b.Reader()
	if err != nil {
		return err
	}
	res := s.o.Service.Validate(r.Context(), rd)
	status := http.StatusOK
	if !res.OK {
		status = http.StatusBadRequest
	}
	writeJSON(w, status, res)
	return nil
}

func (s *Server) current(w http.ResponseWriter, r *http.Request) error {
	if err := s.verify(r, "current"); err != nil {
		return err
	}
	cur, err := s.o.Service.Current(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, cur)
	return nil
}

func (s *Server) export(w http.ResponseWriter, r *http.Request) error {
	if err := s.verify(r, "export"); err != nil {
		return err
	}
	format, ctype, name := bundle.FormatZstd, "application/zstd", "config.tar.zst"
	switch r.URL.Query().Get("format") {
	case "", "bundle", "tar.zst":
	case "toml":
		format, ctype, name = bundle.FormatTOML, "application/toml", "config.toml"
	case "tar.gz":
		format, ctype, name = bundle.FormatGzip, "application/gzip", "config.tar.gz"
	default:
		return errf(wire.ErrInvalid, "format must be bundle, tar.gz or toml", nil)
	}
	b, err := s.o.Service.Export(r.Context(), format)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Write(b)
	return nil
}

// keyed serves PUT/DELETE of a named user or resource.
func (s *Server) keyed(kind string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		op := "put"
		if r.Method == http.MethodDelete {
			op = "delete"
		}
		return s.patch(w, r, config.Patch{Kind: kind, Name: r.PathValue("name"), Op: op})
	}
}

// merge serves PATCH of network or activation (RFC 7396; null deletes a key).
func (s *Server) merge(kind string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		return s.patch(w, r, config.Patch{Kind: kind, Op: "merge"})
	}
}

// patch validates a partial update synchronously (400 with every error) before it
// becomes a job.
func (s *Server) patch(w http.ResponseWriter, r *http.Request, p config.Patch) error {
	sg, err := s.takeNonce(r)
	if err != nil {
		return err
	}
	b, err := s.spool(w, r, maxPatchBody)
	if err != nil {
		return err
	}
	defer b.Close()
	dec, recheck, err := s.authorize(r, sg, b.sum, "patch")
	if err != nil {
		return err
	}
	body, err := b.Bytes()
	if err != nil {
		return err
	}
	if p.Op != "delete" {
		if !json.Valid(body) {
			return errf(wire.ErrInvalid, "body must be JSON", nil)
		}
		p.Value = body
	}
	in, err := s.o.Service.PreparePatch(p)
	if err != nil {
		return err
	}
	in.Authorize = recheck
	id, err := s.submit("patch", "http", dec.Principal, in, nil)
	if err != nil {
		return err
	}
	accepted(w, id)
	return nil
}

// envelope accepts a publisher envelope over HTTP (publisher --via): the envelope's own
// signature, the same checks and handlers as over NATS, the same reply.
func (s *Server) envelope(w http.ResponseWriter, r *http.Request) error {
	if s.o.Service.FirstBootUnsigned() {
		if err := s.firstBootGuard(r); err != nil {
			return err
		}
	}
	if r.Header.Get(envelope.SignatureHeader) == "" {
		return fmt.Errorf("%w: send the envelope's signature in %s", auth.ErrMissingSignature, envelope.SignatureHeader)
	}
	b, err := s.spool(w, r, s.o.MaxBody)
	if err != nil {
		return err
	}
	raw, err := b.Bytes()
	b.Close()
	if err != nil {
		return err
	}
	reply := s.o.Service.HandleEnvelope(r.Context(), raw, int(s.o.MaxBody), r.Header.Get(envelope.SignatureHeader), "http",
		(*envelope.Envelope).BindDirect, false)
	status := http.StatusOK
	switch {
	case !reply.Accepted:
		s.reject(reply.Code)
		status = statusOf(reply.Code)
	case reply.JobID != "":
		status = http.StatusAccepted
		w.Header().Set("Location", "/api/jobs/"+reply.JobID)
	}
	// The device signs the reply's exact bytes, as over NATS.
	s.writeSigned(w, status, reply)
	return nil
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) error {
	j, err := s.o.Service.Job(r.PathValue("id"))
	if err != nil {
		return err
	}
	s.writeSigned(w, http.StatusOK, j)
	return nil
}

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) error {
	b, err := schemas.Raw("openapi.json")
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
	return nil
}
