package envelope

import (
	"errors"
	"fmt"
)

// Error is a failure that crosses the wire: a stable code plus a message. Is compares
// codes, so errors.Is(err, envelope.ErrReplayed) holds for an error decoded from a reply.
type Error struct {
	Code string
	Msg  string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return e.Code
	}
	return e.Code + ": " + e.Msg
}

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

// Codes is the one table of wire error codes; docs and schemas are checked against it.
var Codes = []struct{ Code, Meaning string }{
	{"busy", "another job is running on the device; try again when it has finished"},
	{"unauthorized", "missing or bad signature, unknown signer, or signer not allowed for this op or target"},
	{"expired", "the envelope is past expires_at, or issued too far in the future"},
	{"replayed", "this envelope id was already accepted by the device"},
	{"invalid", "the envelope or its payload is malformed, or the config is invalid"},
	{"wrong-target", "the envelope names another device, group or fleet than the subject it came on"},
	{"not-found", "no job with that id on this device"},
	{"too-large", "the payload is over the device's upload limit"},
	{"internal", "the device failed to handle the request; see its logs"},
}

// Sentinels for the codes.
var (
	ErrBusy         = &Error{Code: "busy"}
	ErrUnauthorized = &Error{Code: "unauthorized"}
	ErrExpired      = &Error{Code: "expired"}
	ErrReplayed     = &Error{Code: "replayed"}
	ErrInvalid      = &Error{Code: "invalid"}
	ErrWrongTarget  = &Error{Code: "wrong-target"}
	ErrNotFound     = &Error{Code: "not-found"}
	ErrTooLarge     = &Error{Code: "too-large"}
	ErrInternal     = &Error{Code: "internal"}
)

// Errorf makes an *Error with code's code and a formatted message.
func Errorf(code *Error, format string, args ...any) *Error {
	return &Error{Code: code.Code, Msg: fmt.Sprintf(format, args...)}
}
