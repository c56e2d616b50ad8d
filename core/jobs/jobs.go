// Package jobs runs provisioning jobs one mutation at a time: a second mutating job while
// one is submitted or running is refused (busy), never queued. Each job keeps its state,
// stage, events with elapsed time, result and error; the newest finished jobs are kept
// on disk, so a job id still answers after a restart, and a job that was running when the
// process died reads back as failed with error "interrupted".
//
// It must not import messaging/, net/http or NATS packages.
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fleetprov/fleetprov/core/state"
)

var (
	// ErrBusy is returned by Submit while a mutating job is submitted or running.
	ErrBusy = errors.New("another job is running")
	// ErrNotFound is returned for an unknown job id.
	ErrNotFound = errors.New("job not found")
	// ErrShuttingDown is returned by Submit after Shutdown began.
	ErrShuttingDown = errors.New("worker is shutting down")
	// ErrInvalidID is returned for ids that are not safe file names.
	ErrInvalidID = errors.New("invalid job id")
)

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

// Rollback statuses.
const (
	RollbackCompleted = "completed"
	RollbackFailed    = "failed"
	RollbackSkipped   = "skipped"
	RollbackDiscarded = "discarded"
)

// Event is one step of a job.
type Event struct {
	Step           string  `json:"step"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Message        string  `json:"message,omitempty"`
	Service        string  `json:"service,omitempty"`
	Mode           string  `json:"mode,omitempty"`
	Status         string  `json:"status,omitempty"`
}

// Result is what a finished job produced.
type Result struct {
	Warnings   []string `json:"warnings"`
	Reapply    bool     `json:"reapply"`
	RolledBack bool     `json:"rolled_back"`
	// Data carries an op's answer (validate report, current state) as JSON.
	Data json.RawMessage `json:"data,omitempty"`
}

// Job is a job's record. Manager methods return copies.
type Job struct {
	ID             string     `json:"id"`
	Op             string     `json:"op"`
	State          State      `json:"state"`
	Stage          string     `json:"stage,omitempty"`
	Source         string     `json:"source,omitempty"`
	Signer         string     `json:"signer,omitempty"`
	SubmittedAt    time.Time  `json:"submitted_at"`
	StartedAt      *time.Time `json:"started_at,omitempty"`
	FinishedAt     *time.Time `json:"finished_at,omitempty"`
	Events         []Event    `json:"events"`
	Result         *Result    `json:"result,omitempty"`
	Error          string     `json:"error,omitempty"`
	Code           string     `json:"code,omitempty"`
	RollbackStatus string     `json:"rollback_status,omitempty"`
}

// Run is the handle a job's function reports through.
type Run struct {
	m   *Manager
	job *Job
	t0  time.Time
}

// ID returns the job id.
func (r *Run) ID() string { return r.job.ID }

// Emit records an event and makes it the job's stage; subscribers see it at once.
func (r *Run) Emit(ev Event) {
	r.m.mu.Lock()
	ev.ElapsedSeconds = roundSeconds(time.Since(r.t0))
	r.job.Events = append(r.job.Events, ev)
	r.job.Stage = ev.Step
	snap := r.job.clone()
	subs := append([]chan Event(nil), r.m.subs[r.job.ID]...)
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
func (r *Run) SetRollbackStatus(s string) {
	r.m.mu.Lock()
	r.job.RollbackStatus = s
	r.m.mu.Unlock()
}

func roundSeconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

// Func is a job's work. A returned *CodedError sets the job's code.
type Func func(ctx context.Context, r *Run) (*Result, error)

// CodedError attaches a stable code to a job failure.
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
	// Keep is how many finished jobs are retained (default 64).
	Keep int
	// Recovered is the recovery action taken at start, recorded on interrupted jobs.
	Recovered string
	// OnFinish is called with every finished job's record (metrics).
	OnFinish func(Job)
	Logger   *slog.Logger
}

// Manager runs and remembers jobs.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	jobs     map[string]*Job
	order    []string // finished and running ids, oldest first
	active   string   // the mutating job submitted or running
	subs     map[string][]chan Event
	done     map[string]chan struct{}
	closing  bool
	wg       sync.WaitGroup
	cancelFn context.CancelFunc
	baseCtx  context.Context
}

// DefaultKeep is the number of finished jobs retained.
const DefaultKeep = 64

// New loads the records in opts.Dir; jobs that were submitted or running when the process
// died are rewritten as failed with error "interrupted".
func New(opts Options) (*Manager, error) {
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{opts: opts, log: log, jobs: map[string]*Job{}, subs: map[string][]chan Event{},
		done: map[string]chan struct{}{}, cancelFn: cancel, baseCtx: ctx}
	if opts.Dir == "" {
		return m, nil
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating jobs dir: %w", err)
	}
	entries, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("reading jobs dir: %w", err)
	}
	var loaded []*Job
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(opts.Dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading job record: %w", err)
		}
		var j Job
		if err := json.Unmarshal(b, &j); err != nil || !validID(j.ID) {
			log.Warn("skipping unreadable job record", "path", e.Name())
			continue
		}
		if !j.State.Finished() {
			now := time.Now().UTC()
			j.State, j.Error, j.Code, j.FinishedAt = Failed, "interrupted", "interrupted", &now
			msg := "the worker stopped while this job ran"
			if opts.Recovered != "" {
				msg += "; recovery: " + opts.Recovered
			}
			j.Events = append(j.Events, Event{Step: "interrupted", Message: msg})
			m.persist(j.clone(), true)
		}
		loaded = append(loaded, &j)
	}
	sort.Slice(loaded, func(a, b int) bool { return loaded[a].SubmittedAt.Before(loaded[b].SubmittedAt) })
	for _, j := range loaded {
		m.jobs[j.ID] = j
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
// is active returns ErrBusy; a reused id returns an error.
func (m *Manager) Submit(spec Spec) (Job, error) {
	j, _, _, err := m.submit(spec, false)
	return j, err
}

// SubmitWatch is Submit plus a subscription made before the job starts, so no event is
// missed: the channel gets every event and closes when the job finishes.
func (m *Manager) SubmitWatch(spec Spec) (Job, <-chan Event, func(), error) {
	return m.submit(spec, true)
}

func (m *Manager) submit(spec Spec, watch bool) (Job, <-chan Event, func(), error) {
	if spec.ID == "" {
		spec.ID = NewID()
	}
	if !validID(spec.ID) {
		return Job{}, nil, nil, ErrInvalidID
	}
	m.mu.Lock()
	if m.closing {
		m.mu.Unlock()
		return Job{}, nil, nil, ErrShuttingDown
	}
	if _, ok := m.jobs[spec.ID]; ok {
		m.mu.Unlock()
		return Job{}, nil, nil, fmt.Errorf("job %s already exists", spec.ID)
	}
	if spec.Mutating && m.active != "" {
		m.mu.Unlock()
		return Job{}, nil, nil, fmt.Errorf("%w: job %s", ErrBusy, m.active)
	}
	j := &Job{ID: spec.ID, Op: spec.Op, State: Submitted, Source: spec.Source, Signer: spec.Signer,
		SubmittedAt: time.Now().UTC(), Events: []Event{}}
	m.jobs[j.ID] = j
	m.order = append(m.order, j.ID)
	if spec.Mutating {
		m.active = j.ID
	}
	done := make(chan struct{})
	m.done[j.ID] = done
	var ch chan Event
	cancel := func() {}
	if watch {
		ch = make(chan Event, 256)
		m.subs[j.ID] = append(m.subs[j.ID], ch)
		cancel = m.unsubscriber(j.ID, ch)
	}
	snap := j.clone()
	m.wg.Add(1)
	m.mu.Unlock()
	m.persist(snap, true)
	go m.execute(j, spec, done)
	return snap, ch, cancel, nil
}

// unsubscriber returns a func that removes and closes ch (if the job has not already).
func (m *Manager) unsubscriber(id string, ch chan Event) func() {
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

func (m *Manager) execute(j *Job, spec Spec, done chan struct{}) {
	defer m.wg.Done()
	log := m.log.With("job_id", j.ID, "op", j.Op)
	m.mu.Lock()
	now := time.Now().UTC()
	j.State, j.StartedAt = Running, &now
	m.mu.Unlock()
	r := &Run{m: m, job: j, t0: now}
	r.Emit(Event{Step: "running"})
	log.Info("job started")
	res, err := spec.Run(m.baseCtx, r)
	m.mu.Lock()
	fin := time.Now().UTC()
	j.FinishedAt = &fin
	j.Result = res
	if err != nil {
		j.State, j.Error = Failed, err.Error()
		var ce *CodedError
		if errors.As(err, &ce) {
			j.Code = ce.Code
		}
	} else {
		j.State = Succeeded
	}
	if m.active == j.ID {
		m.active = ""
	}
	snap := j.clone()
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

// Get returns a job's record.
func (m *Manager) Get(id string) (Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return Job{}, ErrNotFound
	}
	return j.clone(), nil
}

// List returns every retained job, newest first.
func (m *Manager) List() []Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Job, 0, len(m.order))
	for i := len(m.order) - 1; i >= 0; i-- {
		out = append(out, m.jobs[m.order[i]].clone())
	}
	return out
}

// Active returns the id of the mutating job in flight, or "".
func (m *Manager) Active() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active
}

// Watch returns the job as it is now and a channel of its later events, closed when the
// job finishes (nil for a finished job). cancel stops the subscription.
func (m *Manager) Watch(id string) (Job, <-chan Event, func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, ok := m.jobs[id]
	if !ok {
		return Job{}, nil, func() {}, ErrNotFound
	}
	if j.State.Finished() {
		return j.clone(), nil, func() {}, nil
	}
	ch := make(chan Event, 256)
	m.subs[id] = append(m.subs[id], ch)
	return j.clone(), ch, m.unsubscriber(id, ch), nil
}

// Wait blocks until the job finishes or ctx ends, and returns its record.
func (m *Manager) Wait(ctx context.Context, id string) (Job, error) {
	m.mu.Lock()
	done, running := m.done[id]
	m.mu.Unlock()
	if running {
		select {
		case <-done:
		case <-ctx.Done():
			return Job{}, ctx.Err()
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
			if m.opts.Dir != "" {
				os.Remove(filepath.Join(m.opts.Dir, id+".json"))
			}
			continue
		}
		keep = append(keep, id)
	}
	m.order = keep
}

// persist writes a job record; durable ones are fsynced (state changes), event updates
// are renamed into place without the fsync.
func (m *Manager) persist(j Job, durable bool) {
	if m.opts.Dir == "" {
		return
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		m.log.Error("encoding job record", "job_id", j.ID, "err", err)
		return
	}
	p := filepath.Join(m.opts.Dir, j.ID+".json")
	if durable {
		err = state.WriteFileAtomic(p, b, 0o600)
	} else {
		tmp := p + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, p)
		}
	}
	if err != nil {
		m.log.Error("writing job record", "job_id", j.ID, "err", err)
	}
}

func (j *Job) clone() Job {
	c := *j
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

var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func validID(id string) bool { return idRE.MatchString(id) }

// NewID returns a UUIDv7: time-ordered, with 74 random bits, so job ids are unguessable.
func NewID() string {
	var b [16]byte
	rand.Read(b[:])
	ms := uint64(time.Now().UnixMilli())
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ReadRecords lists the job records in dir, newest first, without changing them (for
// status displays in another process).
func ReadRecords(dir string) ([]Job, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading jobs dir: %w", err)
	}
	var out []Job
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var j Job
		if json.Unmarshal(b, &j) == nil && validID(j.ID) {
			out = append(out, j)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].SubmittedAt.After(out[b].SubmittedAt) })
	return out, nil
}
