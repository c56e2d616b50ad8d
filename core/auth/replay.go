package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/fleetprov/fleetprov/core/state"
)

// ReplayGuard remembers accepted envelope ids on disk until they expire, so a replay is
// refused even after a restart. Each id is one file created with O_EXCL: the check and
// the record are one atomic step, also across processes. The dir is bounded: at Max
// records, expired ones are pruned, and if none has expired the id is refused
// (ErrReplayFull) rather than the dir growing; the worker also prunes every minute.
type ReplayGuard struct {
	Dir string
	// Skew is kept on top of an envelope's expiry (the clock skew allowance).
	Skew time.Duration
	// Max bounds the records (default DefaultReplayMax).
	Max int
	Now func() time.Time

	mu      sync.Mutex
	count   int
	counted bool
}

// DefaultReplayMax bounds the replay dir: a record lives at most 12 minutes (10 min
// lifetime + 2 min skew), and only a trusted signer can make one, so 4096 is far above
// any real rate and the dir stays a few MB.
const DefaultReplayMax = 4096

func (g *ReplayGuard) max() int {
	if g.Max > 0 {
		return g.Max
	}
	return DefaultReplayMax
}

func (g *ReplayGuard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

var replayIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Accept records id as used until expires; it returns ErrReplayed if it was seen before.
func (g *ReplayGuard) Accept(id string, expires time.Time) error {
	if !replayIDRE.MatchString(id) {
		return fmt.Errorf("replay guard: invalid id %q", id)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.counted {
		if _, err := g.prune(); err != nil {
			return err
		}
	}
	if g.count >= g.max() {
		if _, err := g.prune(); err != nil {
			return err
		}
		if g.count >= g.max() {
			return fmt.Errorf("%w: %d unexpired ids recorded", ErrReplayFull, g.count)
		}
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
	g.count++
	return state.SyncDir(g.Dir)
}

// Prune forgets ids whose envelopes expired (plus the skew); it returns how many.
func (g *ReplayGuard) Prune() (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.prune()
}

// prune is Prune with mu held; it recounts the records left.
func (g *ReplayGuard) prune() (int, error) {
	now := g.now()
	entries, err := os.ReadDir(g.Dir)
	if errors.Is(err, os.ErrNotExist) {
		g.count, g.counted = 0, true
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
	g.count, g.counted = len(entries)-n, true
	return n, nil
}
