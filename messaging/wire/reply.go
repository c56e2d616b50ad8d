package wire

import (
	"encoding/json"
	"time"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/record"
)

// Reply answers a request: accepted (with a job id for a job, or Data), or refused with
// a code.
type Reply struct {
	Accepted bool   `json:"accepted"`
	JobID    string `json:"job_id,omitempty"`
	Device   string `json:"device,omitempty"`
	Fleet    string `json:"fleet,omitempty"`
	// Request is the id of the envelope this answers: a device-signed reply is bound to
	// its request, so it cannot be replayed as the answer to another.
	Request string          `json:"request,omitempty"`
	Code    string          `json:"code,omitempty"`
	Error   string          `json:"error,omitempty"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Err returns the reply's error as an *Error (nil when accepted).
func (r Reply) Err() error {
	if r.Accepted {
		return nil
	}
	return &Error{Code: r.Code, Msg: r.Error}
}

// Refuse builds a refusal reply from an error: its public code and message (internal
// errors get a generic message; their cause stays in the device's log).
func Refuse(device string, err error) Reply {
	code, msg := Public(err)
	return Reply{Accepted: false, Device: device, Code: code, Error: msg}
}

// OK builds an accepted reply carrying v as JSON.
func OK(v any) Reply {
	b, _ := json.Marshal(v)
	return Reply{Accepted: true, Data: b}
}

// Presence is what a device announces and answers to ping.
type Presence struct {
	Device       string    `json:"device"`
	Fleet        string    `json:"fleet"`
	Groups       []string  `json:"groups"`
	Version      string    `json:"version"`
	Provisioned  bool      `json:"provisioned"`
	ConfigSHA256 string    `json:"config_sha256,omitempty"`
	LastJob      *JobRef   `json:"last_job,omitempty"`
	Busy         bool      `json:"busy"`
	Drift        bool      `json:"drift"`
	DriftFiles   []string  `json:"drift_files,omitempty"`
	Hub          *bool     `json:"hub_connected,omitempty"`
	Time         time.Time `json:"time"`
	// Identity is the fingerprint of the device's identity key (it signs this message).
	Identity string `json:"identity,omitempty"`
	// Enrollment is the publisher's verdict on the signature (enrolled, unenrolled,
	// impostor); the publisher sets it, whatever a device sends.
	Enrollment string `json:"enrollment,omitempty"`
}

// JobRef summarizes the device's last job for everyone who sees its presence: no id (a
// job id is the capability to read its record) and no error text.
type JobRef struct {
	Op             string                `json:"op"`
	State          record.State          `json:"state"`
	Code           string                `json:"code,omitempty"`
	RollbackStatus record.RollbackStatus `json:"rollback_status,omitempty"`
}

// EventMsg is what travels on fleetprov.<fleet>.evt.<device>.<job>: one job event, or the
// final record when Done.
type EventMsg struct {
	JobID  string `json:"job_id"`
	Device string `json:"device"`
	Fleet  string `json:"fleet,omitempty"`
	// Seq numbers a job's messages from 1 (the final record last), so a signed event
	// cannot be replayed into another job or out of order.
	Seq   int           `json:"seq,omitempty"`
	Event *record.Event `json:"event,omitempty"`
	Done  bool          `json:"done,omitempty"`
	Job   *record.Job   `json:"job,omitempty"`
}

// ValidationResult is the answer to validate.
type ValidationResult struct {
	OK       bool           `json:"ok"`
	Errors   []config.Entry `json:"errors"`
	Warnings []config.Entry `json:"warnings"`
	// Plan is what an apply would change on the device (the signed validate op of a
	// valid input; publisher push --plan shows it).
	Plan *record.Plan `json:"plan,omitempty"`
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

// PayloadRef points at a payload too large for one message: its owner serves it in
// chunks on Subject (see messaging/blob), or, for durable desired state, it is the object
// named Object (its SHA-256, hex) in the fleet's payload object store on the hub; Size
// is its length in bytes.
type PayloadRef struct {
	Subject string `json:"subject,omitempty"`
	Object  string `json:"object,omitempty"`
	Size    int64  `json:"size"`
}

// ExportResult carries an exported bundle inline, or a reference to fetch it from.
type ExportResult struct {
	Format  string      `json:"format"`
	SHA256  string      `json:"sha256"`
	Size    int64       `json:"size"`
	Inline  string      `json:"inline,omitempty"` // base64
	Payload *PayloadRef `json:"payload_ref,omitempty"`
}

// FirstBootHeader must be sent (with any value) by every HTTP request that mutates a
// device still open to first-boot requests: a custom header makes a cross-origin
// browser request preflighted, and the bridge answers no preflight, so no web page can
// send it. The publisher sends it on every request.
const FirstBootHeader = "X-Fleetprov-First-Boot"

// DeviceSignatureHeader carries base64(armored SSHSIG, namespace fleetprov-device-v1)
// over the exact body of a device's reply, event or presence message, by the device's
// identity key (NATS header; HTTP response header of POST /api/envelopes).
const DeviceSignatureHeader = "Fleetprov-Device-Signature"

// The fields of a job event's signed form in the HTTP bridge's SSE stream: the EventMsg
// the device would publish over NATS, and its signature (as DeviceSignatureHeader).
// Browsers ignore both; `publisher --via` believes nothing else.
const (
	SSESignedField    = "signed"
	SSESignatureField = "sig"
)

// Status is what a device records on the hub's status stream about its desired state:
// the newest envelope it read (Desired), the last one it applied (Applied), and the job
// that ran it. It is signed by the device's identity key, like its replies.
type Status struct {
	Device string   `json:"device"`
	Fleet  string   `json:"fleet"`
	Groups []string `json:"groups"`
	// Desired is the id of the newest desired-state envelope the device read (empty: none).
	Desired         string    `json:"desired,omitempty"`
	DesiredIssuedAt time.Time `json:"desired_issued_at,omitzero"`
	// Applied is the id of the newest envelope it took, pushed or durable: it never goes
	// back to an older one (anti-rollback).
	Applied         string    `json:"applied,omitempty"`
	AppliedIssuedAt time.Time `json:"applied_issued_at,omitzero"`
	// Job is the job that ran Desired (its id is the envelope's): running, succeeded or
	// failed (rolled back or not), or empty when the device refused the envelope
	// (Code/Error say why).
	JobState       record.State          `json:"job_state,omitempty"`
	Code           string                `json:"code,omitempty"`
	Error          string                `json:"error,omitempty"`
	RollbackStatus record.RollbackStatus `json:"rollback_status,omitempty"`
	ConfigSHA256   string                `json:"config_sha256,omitempty"`
	Drift          bool                  `json:"drift"`
	Time           time.Time             `json:"time"`
	Identity       string                `json:"identity,omitempty"`
}
