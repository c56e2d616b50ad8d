package device

import (
	"errors"
	"strings"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// authFailures are the signature checks that fail as unauthorized; their text names the
// failed check without echoing request data.
var authFailures = []error{auth.ErrNonce, auth.ErrMissingSignature, auth.ErrBadSignature, auth.ErrUnknownSigner,
	auth.ErrNamespace, auth.ErrKeyNotValid, auth.ErrSignersUnreadable, auth.ErrUnsupported, auth.ErrFirstBootClosed}

// FromError is the one mapping from an error to its wire code and public message, used
// by every transport. An *wire.Error passes through; core sentinels get their code; the
// rest is internal (generic message, the cause kept for the log).
func FromError(err error) *wire.Error {
	if err == nil {
		return nil
	}
	var we *wire.Error
	var ie *provision.InvalidError
	switch {
	case errors.As(err, &we):
		return we
	case errors.As(err, &ie):
		var msgs []string
		for _, e := range ie.Report.Errors() {
			msgs = append(msgs, e.Error())
		}
		if len(msgs) == 0 {
			msgs = []string{ie.Error()}
		}
		return wire.Wrap(wire.ErrInvalid, strings.Join(msgs, "; "), err)
	case errors.Is(err, auth.ErrForbidden):
		return wire.Wrap(wire.ErrForbidden, auth.ErrForbidden.Error(), err)
	case errors.Is(err, auth.ErrReplayed):
		return wire.Wrap(wire.ErrReplayed, "this envelope id was already accepted", err)
	case errors.Is(err, auth.ErrNonceLimit):
		return wire.Wrap(wire.ErrBusy, "too many outstanding nonces; use them or wait for them to expire", err)
	case errors.Is(err, jobs.ErrBusy):
		return wire.Wrap(wire.ErrBusy, "another job is running", err)
	case errors.Is(err, jobs.ErrShuttingDown):
		return wire.Wrap(wire.ErrBusy, "the worker is shutting down", err)
	case errors.Is(err, jobs.ErrNotFound):
		return wire.Wrap(wire.ErrNotFound, "job not found", err)
	case errors.Is(err, jobs.ErrInvalidID), errors.Is(err, jobs.ErrExists):
		return wire.Wrap(wire.ErrInvalid, "bad or reused job id", err)
	case errors.Is(err, state.ErrNoActive):
		return wire.Wrap(wire.ErrNotFound, "the device is not provisioned: apply a whole config first", err)
	}
	for _, s := range authFailures {
		if errors.Is(err, s) {
			return wire.Wrap(wire.ErrUnauthorized, s.Error(), err)
		}
	}
	if errors.Is(err, config.ErrInvalid) || errors.Is(err, config.ErrEmpty) || errors.Is(err, config.ErrUnsupportedVersion) {
		return wire.Wrap(wire.ErrInvalid, err.Error(), err)
	}
	return wire.Wrap(wire.ErrInternal, "", err)
}
