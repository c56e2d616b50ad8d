package state

import "errors"

var (
	// ErrNoActive is returned when the device has no active config: it is unprovisioned,
	// which is a normal state on first boot.
	ErrNoActive = errors.New("no active config")
	// ErrLocked is returned by Lock when another process holds the state lock until the
	// context ends.
	ErrLocked = errors.New("state directory is locked by another process")
	// ErrNoCandidate is returned by Promote when there is no candidate to promote.
	ErrNoCandidate = errors.New("no candidate config")
	// ErrNoRollback is returned by RestoreRollback when there is no previous state.
	ErrNoRollback = errors.New("no rollback config")
)
