package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/fleetprov/fleetprov/core/record"
)

// Run is the handle a job's function reports through.
type Run struct {
	m   *Manager
	job *record.Job
	t0  time.Time
}

// ID returns the job id.
func (r *Run) ID() string { return r.job.ID }

// Emit records an event and makes it the job's stage; subscribers see it at once.
func (r *Run) Emit(ev record.Event) {
	r.m.mu.Lock()
	ev.ElapsedSeconds = roundSeconds(time.Since(r.t0))
	r.job.Events = append(r.job.Events, ev)
	r.job.Stage = ev.Step
	snap := r.job.Clone()
	subs := append([]chan record.Event(nil), r.m.subs[r.job.ID]...)
	r.m.mu.Unlock()
	r.m.persist(snap, false)
	for _, ch := range subs {
		select {
		case ch <- ev:
		default: // a slow subscriber misses live events; it can re-read the job
		}
	}
}

// SetRollbackStatus records what a rollback did.
func (r *Run) SetRollbackStatus(s record.RollbackStatus) {
	r.m.mu.Lock()
	r.job.RollbackStatus = s
	r.m.mu.Unlock()
}

func roundSeconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

// Func is a job's work. A returned *CodedError sets the job's code.
type Func func(ctx context.Context, r *Run) (*record.Result, error)

// CodedError attaches a stable code (record.Code*) to a job failure.
type CodedError struct {
	Code string
	Err  error
}

func (e *CodedError) Error() string { return e.Err.Error() }
func (e *CodedError) Unwrap() error { return e.Err }

// Options for New.
type Options struct {
	// Dir keeps job records (<state>/jobs); empty keeps them in memory only.
	Dir string
	// Keep is how many finished jobs are retained (default DefaultKeep).
	Keep int
	// Recovered is the recovery action taken at start, recorded on interrupted jobs.
	Recovered string
	// OnFinish is called with every finished job's record (metrics).
	OnFinish func(record.Job)
	Logger   *slog.Logger
}

// Manager runs and remembers jobs.
type Manager struct {
	opts  Options
	log   *slog.Logger
	store store

	mu       sync.Mutex
	jobs     map[string]*record.Job
	order    []string // finished and running ids, oldest first
	active   string   // the mutating job submitted or running
	subs     map[string][]chan record.Event
	done     map[string]chan struct{}
	closing  bool
	wg       sync.WaitGroup
	cancelFn context.CancelFunc
	baseCtx  context.Context
}

// DefaultKeep is the number of finished jobs retained: enough to answer for the last
// rollouts, small enough that the jobs dir stays a few hundred KB.
const DefaultKeep = 64

// New loads the records in opts.Dir; jobs that were submitted or running when the process
// died are rewritten as failed with code "interrupted".
func New(opts Options) (*Manager, error) {
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{opts: opts, log: log, store: store{dir: opts.Dir}, jobs: map[string]*record.Job{},
		subs: map[string][]chan record.Event{}, done: map[string]chan struct{}{}, cancelFn: cancel, baseCtx: ctx}
	if opts.Dir == "" {
		return m, nil
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating jobs dir: %w", err)
	}
	loaded, err := m.store.load(func(name string) { log.Warn("skipping unreadable job record", "path", name) })
	if err != nil {
		return nil, err
	}
	for _, j := range loaded {
		if !j.State.Finished() {
			now := time.Now().UTC()
			j.State, j.Error, j.Code, j.FinishedAt = record.Failed, "interrupted", record.CodeInterrupted, &now
			msg := "the worker stopped while this job ran"
			if opts.Recovered != "" {
				msg += "; recovery: " + opts.Recovered
			}
			j.Events = append(j.Events, record.Event{Step: "interrupted", Message: msg})
			m.persist(j.Clone(), true)
		}
		m.jobs[j.ID] = &j
		m.order = append(m.order, j.ID)
	}
	m.prune()
	return m, nil
}

// Spec describes a job to submit.
type Spec struct {
	ID       string // empty: a new UUIDv7
	Op       string
	Source   string
	Signer   string
	Mutating bool // mutating jobs are single flight
	Run      Func
}

// Submit starts a job and returns its record as submitted. A mutating job while another
// is active returns ErrBusy; a reused id ErrExists; a bad id ErrInvalidID.
func (m *Manager) Submit(spec Spec) (record.Job, error) {
	j, _, _, err := m.submit(spec, false)
	return j, err
}

// SubmitWatch is Submit plus a subscription made before the job starts, so no event is
// missed: the channel gets every event and closes when the job finishes.
func (m *Manager) SubmitWatch(spec Spec) (record.Job, <-chan record.Event, func(), error) {
	return m.submit(spec, true)
}

func (m *Manager) submit(spec Spec, watch bool) (record.Job, <-chan record.Event, func(), error) {
	if spec.ID == "" {
		spec.ID = NewID()
	}
	if !ValidID(spec.ID) {
		return record.Job{}, nil, nil, ErrInvalidID
	}
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return record.Job{}, nil, nil, ErrShuttingDown
	}
	if _, ok := m.jobs[spec.ID]; ok {
		m.mu.Unlock()
		return record.Job{}, nil, nil, fmt.Errorf("%w: %s", ErrExists, spec.ID)
	}
	if spec.Mutating && m.active != "" {
		m.mu.Unlock()
		return record.Job{}, nil, nil, fmt.Errorf("%w: job %s", ErrBusy, m.active)
	}
	j := &record.Job{ID: spec.ID, Op: spec.Op, State: record.Submitted, Source: spec.Source, Signer: spec.Signer,
		SubmittedAt: time.Now().UTC(), Events: []record.Event{}}
	m.jobs[j.ID] = j
	m.order = append(m.order, j.ID)
	if spec.Mutating {
		m.active = j.ID
	}
	done := make(chan struct{})
	m.done[j.ID] = done
	var ch chan record.Event
	cancel := func() {}
	if watch {
		ch = make(chan record.Event, 256)
		m.subs[j.ID] = append(m.subs[j.ID], ch)
		cancel = m.unsubscriber(j.ID, ch)
	}
	snap := j.Clone()
	m.wg.Add(1)
	m.mu.Unlock()
	m.persist(snap, true)
	go m.execute(j, spec, done)
	return snap, ch, cancel, nil
}

// unsubscriber returns a func that removes and closes ch (if the job has not already).
func (m *Manager) unsubscriber(id string, ch chan record.Event) func() {
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		subs := m.subs[id]
		for i, c := range subs {
			if c == ch {
				m.subs[id] = append(subs[:i:i], subs[i+1:]...)
				close(ch)
				return
			}
		}
	}
}

func (m *Manager) execute(j *record.Job, spec Spec, done chan struct{}) {
	defer m.wg.Done()
	log := m.log.With("job_id", j.ID, "op", j.Op)
	m.mu.Lock()
	now := time.Now().UTC()
	j.State, j.StartedAt = record.Running, &now
	m.mu.Unlock()
	r := &Run{m: m, job: j, t0: now}
	r.Emit(record.Event{Step: "running"})
	log.Info("job started")
	res, err := spec.Run(m.baseCtx, r)
	m.mu.Lock()
	fin := time.Now().UTC()
	j.FinishedAt = &fin
	j.Result = res
	if err != nil {
		j.State, j.Error = record.Failed, err.Error()
		var ce *CodedError
		if errors.As(err, &ce) {
			j.Code = ce.Code
		}
	} else {
		j.State = record.Succeeded
	}
	if m.active == j.ID {
		m.active = ""
	}
	snap := j.Clone()
	subs := m.subs[j.ID]
	delete(m.subs, j.ID)
	delete(m.done, j.ID)
	// Prune before anyone waiting learns the job finished, so they see the bounded history.
	m.prune()
	m.mu.Unlock()
	m.persist(snap, true)
	if m.opts.OnFinish != nil {
		m.opts.OnFinish(snap)
	}
	for _, ch := range subs {
		close(ch)
	}
	close(done)
	if err != nil {
		log.Error("job failed", "err", err, "rollback_status", snap.RollbackStatus)
	} else {
		log.Info("job succeeded")
	}
}

// Get returns a job's record, or ErrNotFound.
func (m *Manager) Get(id string) (record.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return record.Job{}, ErrNotFound
	}
	return j.Clone(), nil
}

// List returns every retained job, newest first.
func (m *Manager) List() []record.Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]record.Job, 0, len(m.order))
	for i := len(m.order) - 1; i >= 0; i-- {
		out = append(out, m.jobs[m.order[i]].Clone())
	}
	return out
}

// Last returns the newest job's record (false when there is none), without copying the
// whole history as List does.
func (m *Manager) Last() (record.Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.order) == 0 {
		return record.Job{}, false
	}
	return m.jobs[m.order[len(m.order)-1]].Clone(), true
}

// Active returns the id of the mutating job in flight, or "".
func (m *Manager) Active() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active
}

// Watch returns the job as it is now and a channel of its later events, closed when the
// job finishes (nil for a finished job). cancel stops the subscription.
func (m *Manager) Watch(id string) (record.Job, <-chan record.Event, func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return record.Job{}, nil, func() {}, ErrNotFound
	}
	if j.State.Finished() {
		return j.Clone(), nil, func() {}, nil
	}
	ch := make(chan record.Event, 256)
	m.subs[id] = append(m.subs[id], ch)
	return j.Clone(), ch, m.unsubscriber(id, ch), nil
}

// Wait blocks until the job finishes or ctx ends, and returns its record.
func (m *Manager) Wait(ctx context.Context, id string) (record.Job, error) {
	m.mu.Lock()
	done, running := m.done[id]
	m.mu.Unlock()
	if running {
		select {
		case <-done:
		case <-ctx.Done():
			return record.Job{}, ctx.Err()
		}
	}
	return m.Get(id)
}

// Shutdown refuses new jobs and waits for the running one; when ctx ends first, the job's
// context is cancelled and its record says so.
func (m *Manager) Shutdown(ctx context.Context) error {
	m.mu.Lock()
	m.closing = true
	m.mu.Unlock()
	idle := make(chan struct{})
	go func() { m.wg.Wait(); close(idle) }()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		m.cancelFn()
		<-idle
		return ctx.Err()
	}
}

// prune drops the oldest finished jobs beyond Keep. Called with mu held.
func (m *Manager) prune() {
	finished := 0
	for _, id := range m.order {
		if m.jobs[id].State.Finished() {
			finished++
		}
	}
	var keep []string
	for _, id := range m.order {
		j := m.jobs[id]
		if finished > m.opts.Keep && j.State.Finished() {
			finished--
			delete(m.jobs, id)
			m.store.remove(id)
			continue
		}
		keep = append(keep, id)
	}
	m.order = keep
}

// persist writes a job record, logging a failure (the job goes on: its record in memory
// is still right).
func (m *Manager) persist(j record.Job, durable bool) {
	if err := m.store.write(j, durable); err != nil {
		m.log.Error("writing job record", "job_id", j.ID, "err", err)
	}
}
