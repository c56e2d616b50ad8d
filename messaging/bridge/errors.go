package bridge

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/envelope"
)

// httpError is an error with its public face: status, stable code and a safe message.
// Err is the cause, logged but never sent.
type httpError struct {
	Status int
	Code   string
	Msg    string
	Err    error
}

func (e *httpError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *httpError) Unwrap() error { return e.Err }

func errf(status int, code, msg string, cause error) *httpError {
	return &httpError{Status: status, Code: code, Msg: msg, Err: cause}
}

// statusOf maps wire codes to HTTP statuses.
var statusOf = map[string]int{
	"busy": http.StatusConflict, "unauthorized": http.StatusUnauthorized, "expired": http.StatusUnauthorized,
	"replayed": http.StatusUnauthorized, "invalid": http.StatusBadRequest, "wrong-target": http.StatusForbidden,
	"not-found": http.StatusNotFound, "too-large": http.StatusRequestEntityTooLarge, "internal": http.StatusInternalServerError,
	"forbidden": http.StatusForbidden,
}

// errorBody is every error response.
type errorBody struct {
	Error  string         `json:"error"`
	Code   string         `json:"code"`
	Errors []config.Entry `json:"errors,omitempty"`
}

// writeError is the one place errors become responses: it picks the status and a safe
// message, and logs the cause.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	body := errorBody{Code: "internal", Error: "internal error"}
	status := http.StatusInternalServerError
	var he *httpError
	var ee *envelope.Error
	var ie *provision.InvalidError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		status, body.Code, body.Error = he.Status, he.Code, he.Msg
	case errors.As(err, &mbe):
		status, body.Code, body.Error = http.StatusRequestEntityTooLarge, "too-large", "request body over the upload limit"
	case errors.As(err, &ie):
		status, body.Code, body.Error = http.StatusBadRequest, "invalid", ie.Error()
		body.Errors = ie.Report.Errors()
	case errors.As(err, &ee):
		status, body.Code, body.Error = statusOf[ee.Code], ee.Code, ee.Error()
		if status == 0 {
			status = http.StatusInternalServerError
		}
	case errors.Is(err, jobs.ErrBusy):
		status, body.Code, body.Error = http.StatusConflict, "busy", "another job is running"
	case errors.Is(err, jobs.ErrNotFound):
		status, body.Code, body.Error = http.StatusNotFound, "not-found", "job not found"
	case errors.Is(err, state.ErrNoActive):
		status, body.Code, body.Error = http.StatusNotFound, "not-found", "the device is not provisioned"
	case errors.Is(err, auth.ErrNonce), errors.Is(err, auth.ErrMissingSignature), errors.Is(err, auth.ErrBadSignature),
		errors.Is(err, auth.ErrUnknownSigner), errors.Is(err, auth.ErrNamespace), errors.Is(err, auth.ErrKeyNotValid),
		errors.Is(err, auth.ErrSignersUnreadable):
		status, body.Code, body.Error = http.StatusUnauthorized, "unauthorized", "unauthorized: "+safeAuthMessage(err)
	case errors.Is(err, auth.ErrForbidden):
		status, body.Code, body.Error = http.StatusForbidden, "forbidden", "signer not allowed for this operation"
	}
	if status >= 500 {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		log.Warn("request refused", "method", r.Method, "path", r.URL.Path, "code", body.Code, "err", err)
	}
	writeJSON(w, status, body)
}

// safeAuthMessage names the failed check without echoing request data.
func safeAuthMessage(err error) string {
	for _, s := range []error{auth.ErrNonce, auth.ErrMissingSignature, auth.ErrBadSignature, auth.ErrUnknownSigner,
		auth.ErrNamespace, auth.ErrKeyNotValid, auth.ErrSignersUnreadable} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "signature check failed"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
