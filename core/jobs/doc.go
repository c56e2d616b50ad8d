// Package jobs runs provisioning jobs one mutation at a time: a second mutating job while
// one is submitted or running is refused (busy), never queued. Each job keeps its state,
// stage, events with elapsed time, result and error (the record types are core/record's);
// the newest finished jobs are kept on disk, so a job id still answers after a restart,
// and a job that was running when the process died reads back as failed with code
// "interrupted".
//
// manager.go holds the registry, the single-flight rule and the event fan-out; store.go
// the on-disk records (one loader); ids.go the job ids.
//
// It must not import messaging/, net/http or NATS packages.
package jobs

import "errors"

var (
	// ErrBusy is returned by Submit while a mutating job is submitted or running.
	ErrBusy = errors.New("another job is running")
	// ErrNotFound is returned for an unknown job id.
	ErrNotFound = errors.New("job not found")
	// ErrShuttingDown is returned by Submit after Shutdown began.
	ErrShuttingDown = errors.New("worker is shutting down")
	// ErrInvalidID is returned for ids that are not safe file names.
	ErrInvalidID = errors.New("invalid job id")
	// ErrExists is returned by Submit for an id that is already known.
	ErrExists = errors.New("job id already exists")
)
