package wire

import (
	"errors"
	"fmt"
)

// Error is a failure that crosses the wire: a stable code plus a public message. Err is
// the cause, kept for logs and errors.Is/As on the device, never sent. Is compares codes,
// so errors.Is(err, wire.ErrReplayed) holds for an error decoded from a reply.
type Error struct {
	Code string
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	msg := e.Code
	if e.Msg != "" {
		msg += ": " + e.Msg
	}
	if e.Err != nil && (e.Msg == "" || e.Code == ErrInternal.Code) {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Codes is the one table of wire error codes; the README, the OpenAPI document and the
// HTTP statuses are checked against it.
var Codes = []struct{ Code, Meaning string }{
	{"busy", "another job is running on the device; try again when it has finished"},
	{"unauthorized", "missing or bad signature, unknown signer, or a bad, used or expired nonce"},
	{"forbidden", "the signer is known but not allowed this op or target ([fleet.signers] policy)"},
	{"expired", "the envelope is past expires_at, or issued too far in the future"},
	{"replayed", "this envelope id was already accepted by the device"},
	{"invalid", "the envelope or its payload is malformed, or the config is invalid"},
	{"wrong-target", "the envelope names another device, group or fleet than the subject it came on"},
	{"not-found", "no such job, or the device is not provisioned (no active config)"},
	{"too-large", "the payload is over the device's upload limit"},
	{"internal", "the device failed to handle the request; its log has the cause"},
}

// Sentinels for the codes.
var (
	ErrBusy         = &Error{Code: "busy"}
	ErrUnauthorized = &Error{Code: "unauthorized"}
	ErrForbidden    = &Error{Code: "forbidden"}
	ErrExpired      = &Error{Code: "expired"}
	ErrReplayed     = &Error{Code: "replayed"}
	ErrInvalid      = &Error{Code: "invalid"}
	ErrWrongTarget  = &Error{Code: "wrong-target"}
	ErrNotFound     = &Error{Code: "not-found"}
	ErrTooLarge     = &Error{Code: "too-large"}
	ErrInternal     = &Error{Code: "internal"}
)

// Errorf makes an *Error with code's code and a formatted public message; an error
// formatted with %w becomes its cause as well.
func Errorf(code *Error, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code.Code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// Wrap makes an *Error with a fixed public message and a private cause.
func Wrap(code *Error, msg string, cause error) *Error {
	return &Error{Code: code.Code, Msg: msg, Err: cause}
}

// Public returns the code and message a client may see: the *Error's own, or internal
// with a generic message for anything else.
func Public(err error) (code, msg string) {
	var e *Error
	if errors.As(err, &e) {
		if e.Code == ErrInternal.Code {
			return e.Code, "internal error; the device's log has the cause"
		}
		return e.Code, e.Msg
	}
	return ErrInternal.Code, "internal error; the device's log has the cause"
}
