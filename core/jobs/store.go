package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/state"
)

// store keeps one JSON file per job in dir; an empty dir keeps nothing.
type store struct{ dir string }

// load reads every readable record in the dir, oldest first. Unreadable files are
// reported through skip and left alone.
func (s store) load(skip func(name string)) ([]record.Job, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading jobs dir: %w", err)
	}
	var out []record.Job
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		var j record.Job
		if err != nil || json.Unmarshal(b, &j) != nil || !ValidID(j.ID) {
			if skip != nil {
				skip(e.Name())
			}
			continue
		}
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].SubmittedAt.Before(out[b].SubmittedAt) })
	return out, nil
}

// write stores a record; durable ones are fsynced (state changes), event updates are
// renamed into place without the fsync.
func (s store) write(j record.Job, durable bool) error {
	if s.dir == "" {
		return nil
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding job record: %w", err)
	}
	p := filepath.Join(s.dir, j.ID+".json")
	if durable {
		return state.WriteFileAtomic(p, b, 0o600)
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("writing job record: %w", err)
	}
	return os.Rename(tmp, p)
}

func (s store) remove(id string) {
	if s.dir != "" {
		os.Remove(filepath.Join(s.dir, id+".json"))
	}
}

// ReadRecords lists the job records in dir, newest first, without changing them (for
// status displays in another process).
func ReadRecords(dir string) ([]record.Job, error) {
	out, err := store{dir: dir}.load(nil)
	if err != nil {
		return nil, err
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
