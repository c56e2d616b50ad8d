package auth

import "errors"

var (
	// ErrBadSignature is returned when a signature does not parse or does not verify.
	ErrBadSignature = errors.New("bad signature")
	// ErrMissingSignature is returned when a request that needs a signature has none.
	ErrMissingSignature = errors.New("missing signature")
	// ErrUnknownSigner is returned when the signing key is not an allowed signer.
	ErrUnknownSigner = errors.New("unknown signer")
	// ErrNamespace is returned when a signature was made for another namespace, or the
	// signer is not allowed to sign in this one.
	ErrNamespace = errors.New("wrong signature namespace")
	// ErrKeyNotValid is returned when the signer's key is outside its valid-after /
	// valid-before window.
	ErrKeyNotValid = errors.New("signer key not valid at this time")
	// ErrForbidden is returned when a known signer may not run this op on this target.
	ErrForbidden = errors.New("signer not allowed for this operation")
	// ErrSignersUnreadable is returned when the device has signers but cannot read them:
	// it fails closed.
	ErrSignersUnreadable = errors.New("allowed signers unreadable")
	// ErrReplayFull is returned when the replay dir holds its maximum of unexpired ids.
	ErrReplayFull = errors.New("too many recent envelopes recorded")
	// ErrReplayed is returned for an id that was already accepted.
	ErrReplayed = errors.New("replayed id")
	// ErrUnsupported is returned for allowed_signers features fleetprov refuses
	// (cert-authority).
	ErrUnsupported = errors.New("unsupported allowed_signers entry")
	// ErrFirstBootClosed is returned for a first-boot request (unsigned, or signed by
	// possession) after the first-boot window: only a fleet trust file can provision.
	ErrFirstBootClosed = errors.New("first-boot window closed: provision with a fleet trust file signer")
	// ErrNonceLimit is returned by Nonces.Issue when the client, or the device, has as
	// many unexpired nonces as allowed.
	ErrNonceLimit = errors.New("too many outstanding nonces")
	// ErrNonce is returned for an unknown, used or expired nonce.
	ErrNonce = errors.New("invalid nonce")
)
