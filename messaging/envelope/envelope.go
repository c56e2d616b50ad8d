// Package envelope is the signed job envelope v1: its JSON form, strict decoding, the
// SSHSIG signature over the exact bytes as sent (never re-encoded), subject binding, the
// time window and the payload digest. Its failures are messaging/wire errors.
package envelope

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// Version is the envelope format version.
const Version = 1

// SignatureHeader carries base64(armored SSHSIG) in NATS and HTTP headers.
const SignatureHeader = "Fleetprov-Signature"

// Limits of the time window (DESIGN.md): an envelope lives at most 10 minutes, and clocks
// may disagree by 2 minutes.
const (
	MaxLifetime = 10 * time.Minute
	ClockSkew   = 2 * time.Minute
	// MaxSize bounds an envelope with an inline payload (the NATS max payload).
	MaxSize = 1 << 20
)

// Content types of payloads.
const (
	TypeTOML    = "application/toml"
	TypeZstd    = "application/zstd"
	TypeGzip    = "application/gzip"
	TypeJSON    = "application/json"
	TypeNone    = "application/octet-stream" // empty payloads
	targetDev   = "device"
	targetGroup = "group"
	targetAll   = "all"
)

// Target kinds.
const (
	TargetDevice = targetDev
	TargetGroup  = targetGroup
	TargetAll    = targetAll
)

// Envelope is envelope v1.
type Envelope struct {
	V             int              `json:"v"`
	ID            string           `json:"id"`
	Op            string           `json:"op"`
	Fleet         string           `json:"fleet"`
	Target        string           `json:"target"`
	Device        string           `json:"device,omitempty"`
	Group         string           `json:"group,omitempty"`
	IssuedAt      time.Time        `json:"issued_at"`
	ExpiresAt     time.Time        `json:"expires_at"`
	PayloadSHA256 string           `json:"payload_sha256"`
	ContentType   string           `json:"content_type"`
	Payload       []byte           `json:"payload,omitempty"`
	PayloadRef    *wire.PayloadRef `json:"payload_ref,omitempty"`
	// ReplyTo binds a read-only request (current, export, validate) sent over NATS to the
	// requester: the reply subject must start with it (the requester's inbox prefix), so a
	// captured envelope sent again with another reply subject is refused.
	ReplyTo string `json:"reply_to,omitempty"`
	// Secrets is a sealed set of secret values (age, binary, to the target device's
	// identity key), for apply and patch only. It is inside the signed bytes: nobody
	// can swap in values of their own.
	Secrets []byte `json:"secrets,omitempty"`
	// Durable marks desired state kept on the hub (JetStream): an apply that a device
	// takes whenever it reads it, however late, if it is newer than what it applied.
	// Only such an envelope, and only when read from the desired-state store, outlives
	// its expires_at; the same envelope sent as a request is held to its window.
	Durable bool `json:"durable,omitempty"`
}

var (
	idRE     = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Digest returns the hex sha256 of a payload.
func Digest(payload []byte) string {
	s := sha256.Sum256(payload)
	return hex.EncodeToString(s[:])
}

// Encode returns the envelope's JSON bytes: what is signed and sent.
func (e *Envelope) Encode() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encoding envelope: %w", err)
	}
	return b, nil
}

// Sign signs the exact bytes b and returns the header value.
func Sign(b []byte, signer ssh.Signer) (string, error) {
	sig, err := auth.Sign(b, signer, auth.NamespaceEnvelope)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// DecodeSignature turns a header value back into an armored signature.
func DecodeSignature(h string) ([]byte, error) {
	if h == "" {
		return nil, auth.ErrMissingSignature
	}
	b, err := base64.StdEncoding.DecodeString(h)
	if err != nil {
		return nil, fmt.Errorf("%w: header is not base64", auth.ErrBadSignature)
	}
	return b, nil
}

// Decode parses envelope bytes strictly: unknown fields, trailing data, a wrong version,
// bad tokens, an unknown op or target, or a malformed digest are *Error{invalid}.
func Decode(b []byte) (*Envelope, error) { return DecodeLimit(b, MaxSize) }

// DecodeLimit is Decode with another size limit (the HTTP bridge's upload limit: over
// HTTP a large payload travels inline).
func DecodeLimit(b []byte, max int) (*Envelope, error) {
	if len(b) > max {
		return nil, wire.Errorf(wire.ErrTooLarge, "envelope is %d bytes (limit %d)", len(b), max)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var e Envelope
	if err := dec.Decode(&e); err != nil {
		return nil, wire.Errorf(wire.ErrInvalid, "decoding envelope: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, wire.Errorf(wire.ErrInvalid, "trailing data after the envelope")
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return &e, nil
}

func (e *Envelope) check() error {
	switch {
	case e.V != Version:
		return wire.Errorf(wire.ErrInvalid, "unsupported envelope version %d (supported: %d)", e.V, Version)
	case !idRE.MatchString(e.ID):
		return wire.Errorf(wire.ErrInvalid, "id must match %s", idRE)
	case !subjects.IsOp(e.Op) || e.Op == "ping" || e.Op == "job":
		return wire.Errorf(wire.ErrInvalid, "op %q cannot be signed (want apply, validate, patch, current, export or confirm)", e.Op)
	case !subjects.ValidToken(e.Fleet):
		return wire.Errorf(wire.ErrInvalid, "fleet %q is not a valid token", e.Fleet)
	case e.IssuedAt.IsZero() || e.ExpiresAt.IsZero():
		return wire.Errorf(wire.ErrInvalid, "issued_at and expires_at are required")
	case !e.ExpiresAt.After(e.IssuedAt):
		return wire.Errorf(wire.ErrInvalid, "expires_at must be after issued_at")
	case e.ExpiresAt.Sub(e.IssuedAt) > MaxLifetime:
		return wire.Errorf(wire.ErrInvalid, "lifetime %s exceeds %s", e.ExpiresAt.Sub(e.IssuedAt), MaxLifetime)
	case !sha256RE.MatchString(e.PayloadSHA256):
		return wire.Errorf(wire.ErrInvalid, "payload_sha256 must be 64 lowercase hex digits")
	case !slices.Contains([]string{TypeTOML, TypeZstd, TypeGzip, TypeJSON, TypeNone}, e.ContentType):
		return wire.Errorf(wire.ErrInvalid, "unsupported content_type %q", e.ContentType)
	case e.Payload != nil && e.PayloadRef != nil:
		return wire.Errorf(wire.ErrInvalid, "payload and payload_ref are exclusive")
	case e.PayloadRef != nil && (e.PayloadRef.Size <= 0 || e.PayloadRef.Size > 1<<30):
		return wire.Errorf(wire.ErrInvalid, "payload_ref.size out of range")
	case e.Secrets != nil && e.Op != "apply" && e.Op != "patch":
		return wire.Errorf(wire.ErrInvalid, "secrets travel only with apply and patch, not %s", e.Op)
	case e.Secrets != nil && len(e.Secrets) == 0:
		return wire.Errorf(wire.ErrInvalid, "secrets is empty")
	case e.Durable && (e.Op != "apply" || e.ReplyTo != ""):
		return wire.Errorf(wire.ErrInvalid, "desired state (durable) is an apply with no reply_to, not %s", e.Op)
	case e.ReplyTo != "" && (len(e.ReplyTo) > 256 || strings.ContainsAny(e.ReplyTo, " \t\r\n*>")):
		return wire.Errorf(wire.ErrInvalid, "reply_to must be a literal subject prefix")
	}
	switch r := e.PayloadRef; {
	case r == nil:
	case r.Object != "":
		// Only durable desired state lives on the hub; its object is named by its digest.
		if !e.Durable || r.Subject != "" || r.Object != e.PayloadSHA256 {
			return wire.Errorf(wire.ErrInvalid, "payload_ref.object names a durable envelope's payload by its payload_sha256, with no subject")
		}
	case e.Durable:
		// Desired state outlives whoever would serve a blob.
		return wire.Errorf(wire.ErrInvalid, "durable desired state carries its payload inline or as payload_ref.object")
	default:
		s, err := subjects.Parse(r.Subject)
		if err != nil || s.Kind != subjects.Blob || s.Fleet != e.Fleet {
			return wire.Errorf(wire.ErrInvalid, "payload_ref.subject must be a blob subject of fleet %s", e.Fleet)
		}
	}
	switch e.Target {
	case targetDev:
		if !subjects.ValidToken(e.Device) || e.Group != "" {
			return wire.Errorf(wire.ErrInvalid, "a device target needs a valid device and no group")
		}
	case targetGroup:
		if !subjects.ValidToken(e.Group) || e.Device != "" {
			return wire.Errorf(wire.ErrInvalid, "a group target needs a valid group and no device")
		}
	case targetAll:
		if e.Device != "" || e.Group != "" {
			return wire.Errorf(wire.ErrInvalid, "an all target names no device or group")
		}
	default:
		return wire.Errorf(wire.ErrInvalid, "target must be device, group or all, got %q", e.Target)
	}
	return nil
}

// CheckTime rejects an envelope outside its window at now (with the clock skew allowance).
func (e *Envelope) CheckTime(now time.Time) error {
	if now.After(e.ExpiresAt.Add(ClockSkew)) {
		return wire.Errorf(wire.ErrExpired, "envelope expired at %s", e.ExpiresAt.Format(time.RFC3339))
	}
	if e.IssuedAt.After(now.Add(ClockSkew)) {
		return wire.Errorf(wire.ErrExpired, "envelope issued in the future (%s); check the clocks", e.IssuedAt.Format(time.RFC3339))
	}
	return nil
}

// CheckIssued is CheckTime for durable desired state (callers check Durable): it must not
// be issued in the future (beyond the clock skew), and its expiry does not apply.
func (e *Envelope) CheckIssued(now time.Time) error {
	if e.IssuedAt.After(now.Add(ClockSkew)) {
		return wire.Errorf(wire.ErrExpired, "envelope issued in the future (%s); check the clocks", e.IssuedAt.Format(time.RFC3339))
	}
	return nil
}

// Newer reports whether e is newer desired state than o (issued_at, then id): the order
// in which a device takes desired state, and never goes back.
func (e *Envelope) Newer(issued time.Time, id string) bool {
	return NewerThan(e.IssuedAt, e.ID, issued, id)
}

// NewerThan is the order of desired state: (issued, id) is newer than (thanIssued,
// thanID) by issue time, then id.
func NewerThan(issued time.Time, id string, thanIssued time.Time, thanID string) bool {
	if !issued.Equal(thanIssued) {
		return issued.After(thanIssued)
	}
	return id > thanID
}

// Bind checks that the envelope addresses the subject it arrived on and this device
// (id, groups, fleet).
func (e *Envelope) Bind(s subjects.Subject, fleet, device string, groups []string) error {
	if e.Fleet != fleet || s.Fleet != fleet {
		return wire.Errorf(wire.ErrWrongTarget, "envelope for fleet %s, device is in fleet %s", e.Fleet, fleet)
	}
	if s.Op != e.Op {
		return wire.Errorf(wire.ErrWrongTarget, "envelope op %s sent on a %s subject", e.Op, s.Op)
	}
	switch s.Kind {
	case subjects.Device:
		if e.Target != targetDev || e.Device != s.Name || e.Device != device {
			return wire.Errorf(wire.ErrWrongTarget, "envelope targets %s %s%s, not this device (%s)", e.Target, e.Device, e.Group, device)
		}
	case subjects.Group:
		if e.Target != targetGroup || e.Group != s.Name || !slices.Contains(groups, e.Group) {
			return wire.Errorf(wire.ErrWrongTarget, "envelope for group %q; this device's groups are %v", e.Group, groups)
		}
	case subjects.All:
		if e.Target != targetAll {
			return wire.Errorf(wire.ErrWrongTarget, "envelope targets %s but came on the all subject", e.Target)
		}
	default:
		return wire.Errorf(wire.ErrWrongTarget, "not a request subject")
	}
	return nil
}

// BindDirect checks an envelope delivered to this device without a subject (over HTTP):
// it must name this device, one of its groups, or all.
func (e *Envelope) BindDirect(fleet, device string, groups []string) error {
	if e.Fleet != fleet {
		return wire.Errorf(wire.ErrWrongTarget, "envelope for fleet %s, device is in fleet %s", e.Fleet, fleet)
	}
	switch {
	case e.Target == targetDev && e.Device == device:
	case e.Target == targetGroup && slices.Contains(groups, e.Group):
	case e.Target == targetAll:
	default:
		return wire.Errorf(wire.ErrWrongTarget, "envelope targets %s %s%s, not this device (%s)", e.Target, e.Device, e.Group, device)
	}
	return nil
}

// CheckPayload verifies a payload against the envelope's digest.
func (e *Envelope) CheckPayload(payload []byte) error {
	if Digest(payload) != e.PayloadSHA256 {
		return wire.Errorf(wire.ErrInvalid, "payload sha256 mismatch")
	}
	return nil
}

// ReadOnly reports whether op only reads the device's state (no job, no change).
func ReadOnly(op string) bool { return op == "current" || op == "export" || op == "validate" }

// BindReply checks a read-only request's reply_to against the reply subject it came
// with: present, and a prefix of it.
func (e *Envelope) BindReply(reply string) error {
	if !ReadOnly(e.Op) {
		return nil
	}
	if e.ReplyTo == "" || !strings.HasPrefix(reply, e.ReplyTo) {
		return wire.Errorf(wire.ErrWrongTarget, "a %s request must name the inbox its answer goes to (reply_to), and come from it", e.Op)
	}
	return nil
}
