package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// layout describes a state dir: which trees exist and what config.toml they hold.
type layout struct {
	marker                      bool
	active, rollback, candidate string // config.toml content; "" = absent, "-" = dir without config.toml
}

func build(t *testing.T, l layout) Dir {
	t.Helper()
	d := Dir{Root: t.TempDir()}
	for name, content := range map[string]string{ActiveName: l.active, RollbackName: l.rollback, CandidateName: l.candidate} {
		switch content {
		case "":
		case "-":
			os.MkdirAll(filepath.Join(d.Root, name, "files"), 0o700)
		default:
			os.MkdirAll(filepath.Join(d.Root, name), 0o700)
			os.WriteFile(filepath.Join(d.Root, name, "config.toml"), []byte(content), 0o600)
		}
	}
	if l.marker {
		os.WriteFile(filepath.Join(d.Root, MarkerName), nil, 0o600)
	}
	return d
}

func TestRecoverTable(t *testing.T) {
	tests := []struct {
		name       string
		in         layout
		wantAction Action
		wantActive string // "" = unprovisioned
	}{
		{"marker_rollback_restores", layout{marker: true, active: "new", rollback: "old", candidate: "x"}, ActionRestoredRollback, "old"},
		{"marker_rollback_no_active", layout{marker: true, rollback: "old", candidate: "new"}, ActionRestoredRollback, "old"},
		{"marker_keeps_good_active", layout{marker: true, active: "new", candidate: "x"}, ActionKeptActive, "new"},
		{"marker_partial_active_unprovisioned", layout{marker: true, active: "-", candidate: "x"}, ActionDiscarded, ""},
		{"marker_nothing_unprovisioned", layout{marker: true, candidate: "x"}, ActionDiscarded, ""},
		{"no_marker_drops_candidate", layout{active: "cur", rollback: "stale", candidate: "x"}, ActionDroppedCandidate, "cur"},
		{"no_marker_no_active_drops_candidate", layout{candidate: "x"}, ActionDroppedCandidate, ""},
		{"no_marker_rollback_promoted", layout{rollback: "old"}, ActionPromotedRollback, "old"},
		{"clean", layout{active: "cur"}, ActionNone, "cur"},
		{"empty", layout{}, ActionNone, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := build(t, tc.in)
			act, err := d.Recover(nil)
			if err != nil || act != tc.wantAction {
				t.Fatalf("Recover() = %s, %v; want %s", act, err, tc.wantAction)
			}
			got, err := d.ReadActive()
			switch {
			case tc.wantActive == "" && !errors.Is(err, ErrNoActive):
				t.Errorf("ReadActive() = %q, %v; want ErrNoActive", got, err)
			case tc.wantActive != "" && string(got) != tc.wantActive:
				t.Errorf("ReadActive() = %q, %v; want %q", got, err, tc.wantActive)
			}
			for _, gone := range []string{CandidateName, MarkerName} {
				if exists(filepath.Join(d.Root, gone)) {
					t.Errorf("%s left after recovery", gone)
				}
			}
			if act2, _ := d.Recover(nil); act2 != ActionNone {
				t.Errorf("second Recover() = %s; want none (idempotent)", act2)
			}
		})
	}
}

func TestPromoteCommitRollback(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	cand, _ := d.NewCandidate()
	os.WriteFile(filepath.Join(cand, "config.toml"), []byte("v1"), 0o600)
	if re, err := d.Promote(); err != nil || re {
		t.Fatalf("initial Promote() = %v, %v", re, err)
	}
	if err := d.Commit(); err != nil {
		t.Fatal(err)
	}
	cand, _ = d.NewCandidate()
	os.WriteFile(filepath.Join(cand, "config.toml"), []byte("v2"), 0o600)
	if re, err := d.Promote(); err != nil || !re {
		t.Fatalf("re-apply Promote() = %v, %v", re, err)
	}
	if b, _ := d.ReadActive(); string(b) != "v2" {
		t.Fatalf("active = %q", b)
	}
	if err := d.RestoreRollback(); err != nil {
		t.Fatal(err)
	}
	d.Finish()
	if b, _ := d.ReadActive(); string(b) != "v1" {
		t.Errorf("after rollback active = %q; want v1", b)
	}
	if _, err := d.Promote(); !errors.Is(err, ErrNoCandidate) {
		t.Errorf("Promote() without candidate = %v", err)
	}
	if err := d.RestoreRollback(); !errors.Is(err, ErrNoRollback) {
		t.Errorf("RestoreRollback() without rollback = %v", err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	d := Dir{Root: t.TempDir()}
	unlock, err := d.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := d.Lock(ctx); !errors.Is(err, ErrLocked) {
		t.Errorf("second Lock() = %v; want ErrLocked", err)
	}
	unlock()
	unlock2, err := d.Lock(context.Background())
	if err != nil {
		t.Errorf("Lock() after unlock = %v", err)
	} else {
		unlock2()
	}
}

func TestWriteFileAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, c := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(c), 0o640); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		st, _ := os.Stat(p)
		if string(b) != c || st.Mode().Perm() != 0o640 {
			t.Errorf("content %q mode %v", b, st.Mode())
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
}
