package bridge

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/messaging/device"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// errf makes a wire error for a failure only HTTP has (a bad form, a bad query); the
// status follows from the code, like every other error.
func errf(code *wire.Error, msg string, cause error) *wire.Error {
	return wire.Wrap(code, msg, cause)
}

// statuses maps every wire code to its HTTP status; a test checks it covers wire.Codes.
var statuses = map[string]int{
	"busy": http.StatusConflict, "unauthorized": http.StatusUnauthorized, "forbidden": http.StatusForbidden,
	"expired": http.StatusUnauthorized, "replayed": http.StatusUnauthorized, "invalid": http.StatusBadRequest,
	"wrong-target": http.StatusForbidden, "not-found": http.StatusNotFound,
	"too-large": http.StatusRequestEntityTooLarge, "internal": http.StatusInternalServerError,
}

func statusOf(code string) int {
	if st, ok := statuses[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// errorBody is every error response.
type errorBody struct {
	Error  string         `json:"error"`
	Code   string         `json:"code"`
	Errors []config.Entry `json:"errors,omitempty"`
}

// writeError is the one place errors become responses: device.FromError picks the code
// and the public message (the same as over NATS), the code the status; the cause is
// logged (refusals at most refusalLogRate a second), never sent, and every refusal is
// counted in fleetprov_rejected_total.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = wire.Wrap(wire.ErrTooLarge, "request body over the upload limit", err)
	}
	werr := device.FromError(err)
	code, msg := wire.Public(werr)
	body := errorBody{Code: code, Error: msg}
	var ie *provision.InvalidError
	if errors.As(err, &ie) {
		body.Errors = ie.Report.Errors()
	}
	status := statusOf(code)
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.reject(code)
		if s.refusals.Allow() {
			s.log.Warn("request refused", "method", r.Method, "path", r.URL.Path, "code", code, "err", err)
		}
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
