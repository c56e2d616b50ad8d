package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/fleetprov/fleetprov/core/state"
)

// ReplayGuard remembers accepted envelope ids on disk until they expire, so a replay is
// refused even after a restart. Each id is one file created with O_EXCL: the check and
// the record are one atomic step, also across processes.
type ReplayGuard struct {
	Dir string
	// Skew is kept on top of an envelope's expiry (the clock skew allowance).
	Skew time.Duration
	Now  func() time.Time
}

var replayIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Accept records id as used until expires; it returns ErrReplayed if it was seen before.
func (g *ReplayGuard) Accept(id string, expires time.Time) error {
	if !replayIDRE.MatchString(id) {
		return fmt.Errorf("replay guard: invalid id %q", id)
	}
	if err := os.MkdirAll(g.Dir, 0o700); err != nil {
		return fmt.Errorf("creating replay dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(g.Dir, id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return ErrReplayed
	}
	if err != nil {
		return fmt.Errorf("recording id: %w", err)
	}
	_, werr := f.WriteString(expires.UTC().Format(time.RFC3339Nano))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("recording id: %w", err)
	}
	return state.SyncDir(g.Dir)
}

// Prune forgets ids whose envelopes expired (plus the skew); it returns how many.
func (g *ReplayGuard) Prune() (int, error) {
	now := time.Now()
	if g.Now != nil {
		now = g.Now()
	}
	entries, err := os.ReadDir(g.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading replay dir: %w", err)
	}
	n := 0
	for _, e := range entries {
		p := filepath.Join(g.Dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		exp, err := time.Parse(time.RFC3339Nano, string(b))
		if err != nil || now.After(exp.Add(g.Skew)) {
			if os.Remove(p) == nil {
				n++
			}
		}
	}
	return n, nil
}
