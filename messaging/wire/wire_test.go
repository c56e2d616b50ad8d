package wire

import (
	"errors"
	"fmt"
	"testing"
)

func TestReplyErrKeepsCode(t *testing.T) {
	reply := Refuse("gw1", Errorf(ErrReplayed, "seen"))
	if err := reply.Err(); !errors.Is(err, ErrReplayed) || errors.Is(err, ErrBusy) {
		t.Errorf("Reply.Err() = %v; want a replayed error", err)
	}
}

func TestErrorKeepsCause(t *testing.T) {
	cause := errors.New("disk on fire")
	err := Errorf(ErrInvalid, "fetching payload: %w", cause)
	if !errors.Is(err, cause) || !errors.Is(err, ErrInvalid) {
		t.Errorf("Errorf(%%w) = %v; want both the cause and the code in its chain", err)
	}
	wrapped := fmt.Errorf("handling: %w", Wrap(ErrInternal, "x", cause))
	if !errors.Is(wrapped, cause) {
		t.Errorf("Wrap cause lost through %%w: %v", wrapped)
	}
}

func TestInternalTextStaysPrivate(t *testing.T) {
	secret := errors.New("open /var/lib/fleetprov/secret: permission denied")
	for _, err := range []error{secret, Wrap(ErrInternal, "open failed", secret), fmt.Errorf("x: %w", secret)} {
		r := Refuse("d", err)
		if r.Code != "internal" || r.Error != "internal error; the device's log has the cause" {
			t.Errorf("Refuse(%v) = %+v; want code internal and the generic message", err, r)
		}
	}
}

func TestCodesAreUniqueAndHaveSentinels(t *testing.T) {
	sentinels := map[string]bool{}
	for _, e := range []*Error{ErrBusy, ErrUnauthorized, ErrForbidden, ErrExpired, ErrReplayed, ErrInvalid,
		ErrWrongTarget, ErrNotFound, ErrTooLarge, ErrInternal} {
		sentinels[e.Code] = true
	}
	seen := map[string]bool{}
	for _, c := range Codes {
		if seen[c.Code] {
			t.Errorf("code %q listed twice", c.Code)
		}
		seen[c.Code] = true
		if !sentinels[c.Code] {
			t.Errorf("code %q has no sentinel", c.Code)
		}
	}
	for c := range sentinels {
		if !seen[c] {
			t.Errorf("sentinel %q missing from Codes", c)
		}
	}
}
