package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Names inside the state directory.
const (
	ActiveName    = "config"
	CandidateName = "config.candidate"
	RollbackName  = "config.rollback"
	MarkerName    = "config.promoting"
	LockName      = ".lock"
	trashPrefix   = "config.trash-"
)

// Dir is a device state directory. Fault, when set, is called at every step boundary of
// promotion, commit and rollback with the step's name; tests use it to crash the process
// there. Production code leaves it nil.
type Dir struct {
	Root  string
	Fault func(point string)
}

// Active returns the path of the active config tree.
func (d Dir) Active() string { return filepath.Join(d.Root, ActiveName) }

// Candidate returns the path of the candidate tree.
func (d Dir) Candidate() string { return filepath.Join(d.Root, CandidateName) }

// Rollback returns the path of the rollback tree.
func (d Dir) Rollback() string { return filepath.Join(d.Root, RollbackName) }

func (d Dir) marker() string { return filepath.Join(d.Root, MarkerName) }

func (d Dir) fault(point string) {
	if d.Fault != nil {
		d.Fault(point)
	}
}

// Init creates the state directory if needed. It is 0711: others may traverse it (rootless
// containers mount files below config/) but not list it.
func (d Dir) Init() error {
	if err := os.MkdirAll(d.Root, 0o711); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	return nil
}

// HasActive reports whether an active config exists.
func (d Dir) HasActive() bool { return exists(filepath.Join(d.Active(), "config.toml")) }

// ReadActive returns the active config.toml, or ErrNoActive.
func (d Dir) ReadActive() ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(d.Active(), "config.toml"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoActive
	}
	if err != nil {
		return nil, fmt.Errorf("reading active config: %w", err)
	}
	return b, nil
}

// Lock takes the exclusive state lock, shared by the daemon, the CLI and boot services.
// It waits until ctx ends and then returns ErrLocked. The returned func releases it.
func (d Dir) Lock(ctx context.Context) (func(), error) {
	if err := d.Init(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(d.Root, LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking state dir: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ErrLocked
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// NewCandidate removes any stale candidate and creates an empty one (0700).
func (d Dir) NewCandidate() (string, error) {
	if err := os.RemoveAll(d.Candidate()); err != nil {
		return "", fmt.Errorf("removing stale candidate: %w", err)
	}
	if err := os.Mkdir(d.Candidate(), 0o700); err != nil {
		return "", fmt.Errorf("creating candidate: %w", err)
	}
	return d.Candidate(), nil
}

// DropCandidate removes the candidate tree (after a failed build).
func (d Dir) DropCandidate() error {
	if err := os.RemoveAll(d.Candidate()); err != nil {
		return fmt.Errorf("removing candidate: %w", err)
	}
	return nil
}

// Promote makes the candidate active. On a re-apply the old active becomes the rollback.
// Order: remove old rollback; fsync the candidate tree; write the marker; rename active to
// rollback; rename candidate to active; the parent dir is fsynced after the marker and
// after each rename. It reports whether this was a re-apply.
func (d Dir) Promote() (reapply bool, err error) {
	if !exists(d.Candidate()) {
		return false, ErrNoCandidate
	}
	if err := d.trash(d.Rollback()); err != nil {
		return false, fmt.Errorf("removing old rollback: %w", err)
	}
	d.fault("promote:rollback-removed")
	if err := SyncTree(d.Candidate()); err != nil {
		return false, err
	}
	d.fault("promote:candidate-synced")
	if err := WriteFileAtomic(d.marker(), []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		return false, fmt.Errorf("writing promotion marker: %w", err)
	}
	d.fault("promote:marker-written")
	reapply = exists(d.Active())
	if reapply {
		if err := d.rename(d.Active(), d.Rollback()); err != nil {
			return false, err
		}
		d.fault("promote:active-to-rollback")
	}
	if err := d.rename(d.Candidate(), d.Active()); err != nil {
		return reapply, err
	}
	d.fault("promote:candidate-to-active")
	return reapply, nil
}

// Commit ends a successful promotion: the marker goes first (from then on the new state
// is final), then the rollback.
func (d Dir) Commit() error {
	if err := d.removeMarker(); err != nil {
		return err
	}
	d.fault("commit:marker-removed")
	if err := d.trash(d.Rollback()); err != nil {
		return fmt.Errorf("removing rollback: %w", err)
	}
	d.fault("commit:rollback-removed")
	return nil
}

// RestoreRollback puts the previous state back after a failed re-apply: the failed active
// is moved aside, the rollback renamed to active. The marker stays until Finish, so a
// crash before then is recovered to the previous state too.
func (d Dir) RestoreRollback() error {
	if !exists(d.Rollback()) {
		return ErrNoRollback
	}
	if exists(d.Active()) {
		if err := d.trash(d.Active()); err != nil {
			return fmt.Errorf("moving failed config aside: %w", err)
		}
	}
	d.fault("rollback:failed-removed")
	if err := d.rename(d.Rollback(), d.Active()); err != nil {
		return err
	}
	d.fault("rollback:restored")
	return nil
}

// Discard drops a failed initial apply: the new active is moved aside, then the marker
// removed, leaving the device unprovisioned.
func (d Dir) Discard() error {
	if exists(d.Active()) {
		if err := d.trash(d.Active()); err != nil {
			return fmt.Errorf("discarding failed config: %w", err)
		}
	}
	d.fault("discard:active-removed")
	return d.removeMarker()
}

// Finish removes the marker after a rollback has been re-activated.
func (d Dir) Finish() error { return d.removeMarker() }

func (d Dir) removeMarker() error {
	if err := os.Remove(d.marker()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing promotion marker: %w", err)
	}
	return SyncDir(d.Root)
}

func (d Dir) rename(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", filepath.Base(from), filepath.Base(to), err)
	}
	return SyncDir(d.Root)
}

// trash moves a tree out of the way with one atomic rename, then deletes it: a crash
// never leaves a half-deleted tree under a name recovery trusts.
func (d Dir) trash(p string) error {
	if !exists(p) {
		return nil
	}
	tmp, err := os.MkdirTemp(d.Root, trashPrefix)
	if err != nil {
		return fmt.Errorf("creating trash dir: %w", err)
	}
	dst := filepath.Join(tmp, filepath.Base(p))
	if err := os.Rename(p, dst); err != nil {
		return fmt.Errorf("moving %s aside: %w", filepath.Base(p), err)
	}
	if err := SyncDir(d.Root); err != nil {
		return err
	}
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("removing %s: %w", tmp, err)
	}
	return nil
}

// Action says what Recover did.
type Action string

// Recovery actions (pipeline.md section 3).
const (
	ActionNone             Action = "none"
	ActionRestoredRollback Action = "restored-rollback"
	ActionKeptActive       Action = "kept-active"
	ActionDiscarded        Action = "discarded"
	ActionDroppedCandidate Action = "dropped-candidate"
	ActionPromotedRollback Action = "promoted-rollback"
)

// Recover brings the directory to a consistent state after a crash, following the table
// in pipeline.md. Callers hold the lock. log may be nil.
func (d Dir) Recover(log *slog.Logger) (Action, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := d.Init(); err != nil {
		return ActionNone, err
	}
	if err := d.emptyTrash(); err != nil {
		return ActionNone, err
	}
	marker := exists(d.marker())
	rollback := exists(d.Rollback())
	activeOK := d.HasActive()
	candidate := exists(d.Candidate())
	action := ActionNone
	var err error
	switch {
	case marker && rollback:
		action = ActionRestoredRollback
		if err = d.trash(d.Active()); err == nil {
			err = d.rename(d.Rollback(), d.Active())
		}
		if err == nil {
			err = d.dropCandidateAndMarker()
		}
	case marker && activeOK:
		action = ActionKeptActive
		err = d.dropCandidateAndMarker()
	case marker:
		action = ActionDiscarded
		if err = d.trash(d.Active()); err == nil {
			err = d.dropCandidateAndMarker()
		}
	case activeOK && candidate:
		action = ActionDroppedCandidate
		err = d.DropCandidate()
	case candidate:
		action = ActionDroppedCandidate
		err = d.DropCandidate()
	case !activeOK && rollback:
		action = ActionPromotedRollback
		if err = d.trash(d.Active()); err == nil {
			err = d.rename(d.Rollback(), d.Active())
		}
	}
	if err != nil {
		return action, fmt.Errorf("recovering state dir (%s): %w", action, err)
	}
	if action != ActionNone {
		log.Warn("state recovered", "action", string(action), "path", d.Root)
	}
	return action, nil
}

func (d Dir) dropCandidateAndMarker() error {
	if err := d.trash(d.Candidate()); err != nil {
		return err
	}
	return d.removeMarker()
}

func (d Dir) emptyTrash() error {
	entries, err := os.ReadDir(d.Root)
	if err != nil {
		return fmt.Errorf("reading state dir: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), trashPrefix) || strings.HasPrefix(e.Name(), "."+MarkerName+".tmp-") {
			if err := os.RemoveAll(filepath.Join(d.Root, e.Name())); err != nil {
				return fmt.Errorf("emptying trash: %w", err)
			}
		}
	}
	return nil
}
