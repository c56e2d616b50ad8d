package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/record"
)

func TestSingleFlight(t *testing.T) {
	m, err := New(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var ran sync.WaitGroup
	var mu sync.Mutex
	accepted, busy := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Submit(Spec{Op: "apply", Mutating: true, Run: func(ctx context.Context, r *Run) (*record.Result, error) {
				ran.Add(1)
				defer ran.Done()
				<-release
				return &record.Result{}, nil
			}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted++
			case errors.Is(err, ErrBusy):
				busy++
			default:
				t.Errorf("Submit() error = %v", err)
			}
		}()
	}
	wg.Wait()
	if accepted != 1 || busy != 19 {
		t.Fatalf("accepted %d, busy %d; want exactly one running", accepted, busy)
	}
	// Read-only jobs are not single flight.
	if _, err := m.Submit(Spec{Op: "validate", Run: func(context.Context, *Run) (*record.Result, error) { return &record.Result{}, nil }}); err != nil {
		t.Errorf("non-mutating Submit while busy: %v", err)
	}
	close(release)
	if err := m.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestHistoryDurableAndBounded(t *testing.T) {
	dir := t.TempDir()
	m, _ := New(Options{Dir: dir, Keep: 5})
	var ids []string
	for i := 0; i < 8; i++ {
		j, err := m.Submit(Spec{Op: "apply", Mutating: true, Run: func(ctx context.Context, r *Run) (*record.Result, error) {
			r.Emit(record.Event{Step: "prepare"})
			if i%2 == 1 {
				return nil, &CodedError{Code: "invalid", Err: fmt.Errorf("bad %d", i)}
			}
			return &record.Result{Warnings: []string{}}, nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Wait(context.Background(), j.ID); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(files) != 5 || len(m.List()) != 5 {
		t.Errorf("kept %d files, %d listed; want 5", len(files), len(m.List()))
	}
	if _, err := m.Get(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("oldest job still there: %v", err)
	}
	m.Shutdown(context.Background())
	// A restart reads the history back.
	m2, err := New(Options{Dir: dir, Keep: 5})
	if err != nil {
		t.Fatal(err)
	}
	j, err := m2.Get(ids[7])
	if err != nil || j.State != record.Failed || j.Code != "invalid" || j.Error != "bad 7" || len(j.Events) != 2 {
		t.Errorf("after restart Get(last) = %+v, %v", j, err)
	}
	j, _ = m2.Get(ids[6])
	if j.State != record.Succeeded || j.Events[1].Step != "prepare" {
		t.Errorf("after restart Get(6) = %+v", j)
	}
}

func TestInterruptedAfterCrash(t *testing.T) {
	dir := t.TempDir()
	// A record left running by a process that died.
	now := time.Now().UTC()
	os.WriteFile(filepath.Join(dir, "0001.json"), []byte(`{"id":"0001","op":"apply","state":"running","submitted_at":"`+now.Format(time.RFC3339Nano)+`","events":[{"step":"promote","elapsed_seconds":0.1}]}`), 0o600)
	m, err := New(Options{Dir: dir, Recovered: "restored-rollback"})
	if err != nil {
		t.Fatal(err)
	}
	j, err := m.Get("0001")
	if err != nil || j.State != record.Failed || j.Error != "interrupted" || j.FinishedAt == nil {
		t.Fatalf("Get() = %+v, %v; want failed/interrupted", j, err)
	}
	last := j.Events[len(j.Events)-1]
	if last.Step != "interrupted" || last.Message != "the worker stopped while this job ran; recovery: restored-rollback" {
		t.Errorf("last event = %+v", last)
	}
	recs, _ := ReadRecords(dir)
	if len(recs) != 1 || recs[0].Error != "interrupted" {
		t.Errorf("on disk = %+v", recs)
	}
}

func TestWatchAndIDs(t *testing.T) {
	m, _ := New(Options{})
	gate := make(chan struct{})
	j, _ := m.Submit(Spec{Op: "apply", Mutating: true, Run: func(ctx context.Context, r *Run) (*record.Result, error) {
		<-gate
		r.Emit(record.Event{Step: "a"})
		r.Emit(record.Event{Step: "b"})
		return &record.Result{}, nil
	}})
	_, ch, cancel, err := m.Watch(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	close(gate)
	var steps []string
	for ev := range ch {
		steps = append(steps, ev.Step)
	}
	if fmt.Sprint(steps) != "[a b]" && fmt.Sprint(steps) != "[running a b]" {
		t.Errorf("watched steps = %v", steps)
	}
	if _, err := m.Submit(Spec{ID: "../etc", Run: nil}); !errors.Is(err, ErrInvalidID) {
		t.Errorf("Submit(../etc) error = %v", err)
	}
	a, b := NewID(), NewID()
	if a == b || len(a) != 36 || a[14] != '7' {
		t.Errorf("NewID() = %s, %s", a, b)
	}
}
