package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/fleetprov/fleetprov/core/bundle"
	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/state"
)

// Input is what one apply consumes: a raw config.toml or bundle, or a model built by a
// partial update (encoded canonically; the active files/ are kept).
type Input struct {
	Reader io.Reader
	Model  *config.Model
	// Check, when set, vets the validated model before anything is written (the device
	// layer's first-boot proof-of-possession rule). Its error rejects the apply.
	Check func(m config.Model) error
	// RequireUnprovisioned fails the apply if the device is provisioned by the time the
	// lock is held (an unsigned first-boot apply racing a signed one).
	RequireUnprovisioned bool
	// Authorize, when set, runs under the state lock before anything is read or written:
	// the request must still be authorized by the state as it is now (its signer still
	// trusted, the device still unprovisioned for a first-boot basis, the envelope not
	// expired). Its error rejects the apply, wrapped in ErrNotAuthorized.
	Authorize func() error
	// Secrets, when set, is a sealed set of secret values (age, to this device's
	// identity key) that the input brings; values not sent keep the ones the device has.
	Secrets []byte
	// Base, when set, is the sha256 of the active config this input was built on (a
	// partial update); the apply fails with ErrStaleBase if the active config is another
	// by the time the lock is held.
	Base string
}

// Result describes a finished apply.
type Result struct {
	Warnings       []string
	Reapply        bool
	RolledBack     bool
	RollbackStatus record.RollbackStatus // RollbackNone when no rollback was needed
}

var (
	// ErrProvisioned is returned when RequireUnprovisioned is set and the device is
	// provisioned.
	ErrProvisioned = errors.New("device is already provisioned")
	// ErrStaleBase is returned when Input.Base no longer names the active config.
	ErrStaleBase = errors.New("the active config changed since this update was prepared; prepare it again")
	// ErrNotAuthorized is returned when Input.Authorize refuses the apply at job start.
	ErrNotAuthorized = errors.New("no longer authorized by the device's current state")
	// ErrActivation wraps the activation failure that triggered a rollback.
	ErrActivation = errors.New("activation failed")
)

// InvalidError is returned when the input fails validation; Report has every finding.
type InvalidError struct {
	Report config.Report
	Err    error
}

func (e *InvalidError) Error() string {
	errs := e.Report.Errors()
	if len(errs) == 0 {
		return e.Err.Error()
	}
	msg := errs[0].Error()
	if len(errs) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(errs)-1)
	}
	return "invalid config: " + msg
}

func (e *InvalidError) Unwrap() error { return e.Err }

type applyRun struct {
	p        *Provisioner
	in       Input
	emit     func(record.Event)
	unlock   func()
	raw      []byte
	files    bool // the input brought its own files/
	model    config.Model
	rendered quadlet.Rendered
	deployed deployed
	promoted bool
	res      Result
	report   config.Report
	// secretsChanged lists the secrets whose value this apply sets or changes.
	secretsChanged []string
	// activeDigest is the sha256 of the active config.toml after recovery ("" when none).
	activeDigest string
	// sameConfig: the input is the active config.toml again (a secrets rotation).
	sameConfig bool
	// hostPlan is the host part, checked before promote and run by deploy (nil with
	// --host none); a network change in it is commit-confirmed.
	hostPlan *host.Plan
	// reachBefore is how proving reachability went before a network change (auto).
	reachBefore error
}

type stage struct {
	name string
	run  func(a *applyRun, ctx context.Context) error
	// silent stages emit no start event: their per-service events speak for them.
	silent bool
}

// Apply runs the whole pipeline for one input under the state lock: recover, unpack,
// validate, write the candidate, render, promote, deploy, activate, and commit, or roll
// back and re-activate. Each stage emits an event when it starts.
func (p *Provisioner) Apply(ctx context.Context, in Input, emit func(record.Event)) (Result, error) {
	if emit == nil {
		emit = func(record.Event) {}
	}
	a := &applyRun{p: p, in: in, emit: emit}
	defer func() {
		if a.unlock != nil {
			a.unlock()
		}
	}()
	stages := []stage{
		{"prepare", (*applyRun).prepare, false},
		{"recover", (*applyRun).recover, false},
		{"unpack", (*applyRun).unpack, false},
		{"validate", (*applyRun).validate, false},
		{"secrets", (*applyRun).secretsStage, true},
		{"write-candidate", (*applyRun).writeCandidate, false},
		{"render-containers", (*applyRun).render, false},
		{"write-quadlets", (*applyRun).writeQuadlets, false},
		{"check-host", (*applyRun).checkHost, true},
		{"promote", (*applyRun).promote, false},
		{"deploy", (*applyRun).deploy, true},
		{"activate", (*applyRun).activate, false},
		{"confirm", (*applyRun).confirm, true},
		{"cleanup", (*applyRun).cleanup, false},
	}
	for _, st := range stages {
		if !st.silent {
			emit(record.Event{Step: st.name})
		}
		p.log.Debug("stage started", "stage", st.name)
		if err := st.run(a, ctx); err != nil {
			p.log.Warn("stage failed", "stage", st.name, "err", err)
			a.fail(ctx, err)
			return a.res, err
		}
	}
	emit(record.Event{Step: "completed"})
	return a.res, nil
}

func (a *applyRun) prepare(ctx context.Context) error {
	unlock, err := a.p.lock(ctx)
	if err != nil {
		return err
	}
	a.unlock = unlock
	if a.in.RequireUnprovisioned && a.p.opts.State.HasActive() {
		return ErrProvisioned
	}
	if a.in.Authorize != nil {
		if err := a.in.Authorize(); err != nil {
			return fmt.Errorf("%w: %w", ErrNotAuthorized, err)
		}
	}
	return nil
}

func (a *applyRun) recover(ctx context.Context) error {
	act, err := a.p.recoverState()
	if err != nil {
		return err
	}
	if act != state.ActionNone {
		a.emit(record.Event{Step: "recover", Message: string(act)})
	}
	// The active config as recovery left it: a partial update must be built on it, and a
	// byte-identical input is a secrets rotation.
	if raw, err := a.p.opts.State.ReadActive(); err == nil {
		a.activeDigest = Digest(raw)
	}
	if a.in.Base != "" && a.activeDigest != a.in.Base {
		return ErrStaleBase
	}
	return nil
}

func (a *applyRun) unpack(ctx context.Context) error {
	cand, err := a.p.opts.State.NewCandidate()
	if err != nil {
		return err
	}
	if err := os.Chmod(cand, 0o711); err != nil {
		return fmt.Errorf("setting candidate mode: %w", err)
	}
	if a.in.Model != nil {
		a.raw = config.Encode(*a.in.Model)
		return nil
	}
	if a.in.Reader == nil {
		return errors.New("apply: no input")
	}
	root, err := os.OpenRoot(cand)
	if err != nil {
		return fmt.Errorf("opening candidate: %w", err)
	}
	defer root.Close()
	var owner *bundle.Owner
	if os.Geteuid() == 0 {
		if acc, err := a.p.appAccount(ctx); err == nil && acc.UID != 0 {
			owner = &bundle.Owner{UID: acc.UID, GID: acc.GID}
		}
	}
	c, err := bundle.Unpack(ctx, a.in.Reader, root, bundle.Options{Limits: a.p.opts.Limits, Owner: owner})
	if err != nil {
		return fmt.Errorf("reading input: %w", err)
	}
	a.raw, a.files = c.Config, c.Files
	return nil
}

func (a *applyRun) validate(ctx context.Context) error {
	m, r, err := config.Parse(a.raw, a.p.opts.Config)
	if err != nil {
		return &InvalidError{Report: r, Err: err}
	}
	for _, w := range r.Warnings() {
		a.res.Warnings = append(a.res.Warnings, w.Error())
	}
	a.model, a.report = m, r
	a.sameConfig = !a.files && a.activeDigest != "" && a.activeDigest == Digest(a.raw)
	if a.in.Check != nil {
		if err := a.in.Check(m); err != nil {
			return err
		}
	}
	return nil
}

func (a *applyRun) writeCandidate(ctx context.Context) error {
	cand := a.p.opts.State.Candidate()
	if !a.files {
		// A plain config.toml keeps the active files/ (AtomixOS wiped them).
		src := filepath.Join(a.p.opts.State.Active(), "files")
		if err := copyTree(src, filepath.Join(cand, "files"), a.p.opts.Limits.WithDefaults()); err != nil {
			return fmt.Errorf("keeping active files: %w", err)
		}
	}
	files, err := derivedFiles(a.model)
	if err != nil {
		return err
	}
	files["config.toml"] = a.raw
	for name, b := range files {
		p := filepath.Join(cand, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Dir(name), err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

func (a *applyRun) render(ctx context.Context) error {
	r, err := quadlet.Render(a.model, quadlet.Options{ConfigDir: a.p.opts.State.Active(), AppUser: a.p.opts.AppUser})
	if err != nil {
		return err
	}
	a.rendered = r
	return nil
}

func (a *applyRun) writeQuadlets(ctx context.Context) error {
	cand := a.p.opts.State.Candidate()
	for _, f := range a.rendered.Files {
		dir := filepath.Join(cand, "quadlet", f.Unit.Mode)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating quadlet dir: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Unit.Filename), f.Content, quadlet.UnitMode); err != nil {
			return fmt.Errorf("writing unit %s: %w", f.Unit.Filename, err)
		}
	}
	if err := os.WriteFile(filepath.Join(cand, "quadlet-runtime.json"), a.rendered.RuntimeJSON(), 0o600); err != nil {
		return fmt.Errorf("writing runtime metadata: %w", err)
	}
	return nil
}

func (a *applyRun) promote(ctx context.Context) error {
	reapply, err := a.p.opts.State.Promote()
	if err != nil {
		return err
	}
	a.promoted, a.res.Reapply = true, reapply
	return nil
}

func (a *applyRun) deploy(ctx context.Context) error {
	var only func(config.Unit) bool
	if a.sameConfig && a.in.Secrets != nil {
		// A rotation: restart exactly the containers that use a changed secret.
		users := a.model.SecretUsers()
		restart := map[string]bool{}
		for _, s := range a.secretsChanged {
			for _, c := range users[s] {
				restart[c] = true
			}
		}
		only = func(u config.Unit) bool { return u.Kind == "container" && restart[u.Name] }
	}
	d, err := a.p.deploy(ctx, &a.model, a.hostPlan, a.emit, only)
	a.deployed = d
	return err
}

func (a *applyRun) activate(ctx context.Context) error {
	a.p.fault("activate:start")
	if err := a.p.activate(ctx, a.model, a.deployed, a.emit); err != nil {
		return fmt.Errorf("%w: %w", ErrActivation, err)
	}
	a.p.fault("activate:healthy")
	return nil
}

func (a *applyRun) cleanup(ctx context.Context) error {
	return a.p.opts.State.Commit()
}

// fail undoes what the failed apply did: before promotion it drops the candidate; after,
// it restores the previous state and re-activates it, or discards a failed initial apply.
func (a *applyRun) fail(ctx context.Context, cause error) {
	st := a.p.opts.State
	if a.unlock == nil {
		return // never held the lock: nothing to undo
	}
	if errors.Is(cause, errConfirmInterrupted) {
		// Shutting down inside a confirm window: the window outlives the process (the
		// next start resumes it, or rolls back after a reboot).
		a.p.log.Warn("shutting down while a network change awaits confirmation; the next start resumes the wait")
		return
	}
	if !a.promoted {
		if err := st.DropCandidate(); err != nil {
			a.p.log.Error("dropping candidate", "err", err)
		}
		return
	}
	// The job's own context may be what ended; the rollback must still run.
	ctx = context.WithoutCancel(ctx)
	a.res.RolledBack = true
	if !a.res.Reapply {
		a.emit(record.Event{Step: "rollback", Message: "initial apply failed: discarding the new state"})
		a.res.RollbackStatus = record.RollbackDiscarded
		if err := st.Discard(); err != nil {
			a.p.log.Error("discarding failed initial state", "err", err)
		}
		if _, err := a.p.deploy(ctx, nil, nil, a.emit, nil); err != nil {
			a.p.log.Error("removing units of the discarded state", "err", err)
		}
		return
	}
	a.emit(record.Event{Step: "rollback", Message: "restoring the previous state"})
	a.res.RollbackStatus = record.RollbackCompleted
	err := st.RestoreRollback()
	var m config.Model
	if err == nil {
		m, err = a.p.activeModel()
	}
	if err == nil {
		var d deployed
		if d, err = a.p.deploy(ctx, &m, nil, a.emit, nil); err == nil {
			err = a.p.activate(ctx, m, d, a.emit)
		}
	}
	if ferr := st.Finish(); err == nil {
		err = ferr
	}
	if err != nil {
		a.res.RollbackStatus = record.RollbackFailed
		a.emit(record.Event{Step: "rollback", Status: string(record.RollbackFailed), Message: err.Error()})
		a.p.log.Error("rollback failed", "err", err, "cause", cause)
		return
	}
	a.emit(record.Event{Step: "rollback", Status: string(record.RollbackCompleted), Message: "previous state active and healthy"})
}

// copyTree copies the active files/ tree into the candidate. The app user may own and
// change that tree while it is copied, so: only regular files and dirs are copied (links
// are dropped; a file is opened non-blocking and must still be regular by descriptor),
// everything is read through an os.Root on src and written through an os.Root on dst (no
// link leads outside either), the bundle limits bound what is copied (a sparse file
// grown by the app user must not fill the disk), and owners are set last, children
// before their parents, so root never writes below a directory the app user already
// controls. A missing src is not an error.
func copyTree(src, dst string, lim bundle.Limits) error {
	if _, err := os.Lstat(src); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	sr, err := os.OpenRoot(src)
	if err != nil {
		return fmt.Errorf("opening %s: %w", src, err)
	}
	defer sr.Close()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dst, err)
	}
	dr, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dst, err)
	}
	defer dr.Close()
	type owner struct {
		name     string
		uid, gid int
	}
	var owners []owner
	var total int64
	members := 0
	err = fs.WalkDir(sr.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if members++; members > lim.MaxMembers {
			return fmt.Errorf("%w: the active files/ tree has over %d entries", bundle.ErrTooManyMembers, lim.MaxMembers)
		}
		var info fs.FileInfo
		switch {
		case d.IsDir():
			if info, err = d.Info(); err != nil {
				return err
			}
			if p != "." {
				if err := dr.Mkdir(p, info.Mode().Perm()); err != nil {
					return err
				}
			}
		case d.Type().IsRegular():
			if info, err = copyFileIn(sr, dr, p, min(lim.MaxMember, lim.MaxTotal-total)); err != nil {
				return err
			}
			total += info.Size()
		default:
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			owners = append(owners, owner{p, int(st.Uid), int(st.Gid)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return nil
	}
	for i := len(owners) - 1; i >= 0; i-- {
		if err := dr.Lchown(owners[i].name, owners[i].uid, owners[i].gid); err != nil {
			return fmt.Errorf("setting owner of %s: %w", owners[i].name, err)
		}
	}
	return nil
}

// copyFileIn copies one regular file of at most limit bytes from sr to dr (a new file;
// what was opened must still be a regular file: opened non-blocking, links resolved only
// inside sr, so a FIFO swapped in cannot hang the copy) and returns the source's info.
func copyFileIn(sr, dr *os.Root, name string, limit int64) (fs.FileInfo, error) {
	in, info, err := state.OpenRegularIn(sr, name)
	if err != nil {
		return nil, fmt.Errorf("copying files/%s: %w", name, err)
	}
	defer in.Close()
	if info.Size() > limit {
		return nil, fmt.Errorf("%w: files/%s is %d bytes; the active files/ tree must stay within the bundle limits", bundle.ErrTooLarge, name, info.Size())
	}
	out, err := dr.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(out, io.LimitReader(in, limit)); err != nil {
		out.Close()
		return nil, err
	}
	return info, out.Close()
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
