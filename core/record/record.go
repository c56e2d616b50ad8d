// Package record holds what a job produces and every transport carries: its Event,
// State, RollbackStatus, Result and the Job record itself. Activation, the pipeline, the
// job manager, the device service, the HTTP bridge, the fleet client and the CLIs all
// use these one set of types, so an event is never copied field by field.
//
// It is a leaf: it imports nothing of fleetprov, so the publisher can link it without the
// device's pipeline.
package record

import (
	"encoding/json"
	"time"
)

// Event is one step of a job, from activation to the wire. ElapsedSeconds is set by the
// job manager when the event is recorded.
type Event struct {
	Step           string  `json:"step"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Message        string  `json:"message,omitempty"`
	Service        string  `json:"service,omitempty"`
	Mode           string  `json:"mode,omitempty"`
	Status         string  `json:"status,omitempty"`
}

// State of a job.
type State string

// Job states.
const (
	Submitted State = "submitted"
	Running   State = "running"
	Succeeded State = "succeeded"
	Failed    State = "failed"
)

// Finished reports whether the state is final.
func (s State) Finished() bool { return s == Succeeded || s == Failed }

// RollbackStatus says what happened to the previous state after a failed apply.
type RollbackStatus string

// Rollback statuses (spec/pipeline.md).
const (
	// RollbackNone: the job did not need a rollback.
	RollbackNone RollbackStatus = ""
	// RollbackCompleted: the previous state is active and healthy again.
	RollbackCompleted RollbackStatus = "completed"
	// RollbackFailed: restoring the previous state failed too; see the job's events.
	RollbackFailed RollbackStatus = "failed"
	// RollbackDiscarded: an initial apply failed; the new state was discarded and the
	// device is unprovisioned again.
	RollbackDiscarded RollbackStatus = "discarded"
)

// Failure codes of a failed job (Job.Code).
const (
	CodeInvalid      = "invalid"      // the input was invalid; nothing changed
	CodeUnauthorized = "unauthorized" // the signer was not (or no longer) authorized at job start; nothing changed
	CodeRolledBack   = "rolled-back"  // activation failed and the previous state is back
	CodeFailed       = "failed"       // any other failure
	CodeInterrupted  = "interrupted"  // the worker stopped while the job ran
)

// Result is what a finished job produced.
type Result struct {
	Warnings   []string `json:"warnings"`
	Reapply    bool     `json:"reapply"`
	RolledBack bool     `json:"rolled_back"`
	// Data carries an op's answer (validate report, current state) as JSON.
	Data json.RawMessage `json:"data,omitempty"`
}

// Job is a job's record, as kept on disk and sent on the wire.
type Job struct {
	ID             string         `json:"id"`
	Op             string         `json:"op"`
	State          State          `json:"state"`
	Stage          string         `json:"stage,omitempty"`
	Source         string         `json:"source,omitempty"`
	Signer         string         `json:"signer,omitempty"`
	SubmittedAt    time.Time      `json:"submitted_at"`
	StartedAt      *time.Time     `json:"started_at,omitempty"`
	FinishedAt     *time.Time     `json:"finished_at,omitempty"`
	Events         []Event        `json:"events"`
	Result         *Result        `json:"result,omitempty"`
	Error          string         `json:"error,omitempty"`
	Code           string         `json:"code,omitempty"`
	RollbackStatus RollbackStatus `json:"rollback_status,omitempty"`
}

// Clone returns a deep copy (events and result are not shared).
func (j Job) Clone() Job {
	c := j
	c.Events = append([]Event(nil), j.Events...)
	if c.Events == nil {
		c.Events = []Event{}
	}
	if j.Result != nil {
		r := *j.Result
		c.Result = &r
	}
	return c
}

// Plan is what an apply of an input would change on a device, computed without changing
// anything (Salt's test=True): the Quadlet units it would add, change or remove against
// the active ones, and the host steps (accounts, keys, files, firewall, services).
type Plan struct {
	Units []UnitChange `json:"units"`
	// HostManaged is false when the device applies no host settings (--host none).
	HostManaged bool       `json:"host_managed"`
	Host        []HostStep `json:"host"`
	// Confirm is how a network change would be confirmed ("" when the plan has none).
	Confirm        string `json:"confirm,omitempty"`
	ConfirmSeconds int    `json:"confirm_seconds,omitempty"`
}

// UnitChange is one Quadlet unit an apply would add, change or remove.
type UnitChange struct {
	Unit   string `json:"unit"` // the Quadlet file, e.g. web.container
	Mode   string `json:"mode"` // rootful or rootless
	Action string `json:"action"`
}

// HostStep is one change to the host: an account, a key, a file, the firewall table or a
// service command.
type HostStep struct {
	Kind   string `json:"kind"`   // user, key, file, firewall, service
	Object string `json:"object"` // an account, a path, the table, a unit or command
	Action string `json:"action"` // create, update, lock, write, remove, load, delete, reload, restart, enable, disable
	Detail string `json:"detail,omitempty"`
	// Network is true for a change that can cut the device off (network, DNS, firewall,
	// dnsmasq): an apply with one is commit-confirmed.
	Network bool `json:"network,omitempty"`
}

func (s HostStep) String() string {
	out := s.Kind + " " + s.Object + ": " + s.Action
	if s.Detail != "" {
		out += " (" + s.Detail + ")"
	}
	return out
}
