package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/core/system"
)

// Env is where host settings are applied.
type Env struct {
	// Root is the host root the managed files live under ("/" on a device).
	Root string
	// Host is the OS's user database and commands.
	Host system.Host
	// Record is the file (in the state dir) that lists the accounts fleetprov created.
	Record string
}

// Step is one host change of a plan: what a plan reports (record.HostStep) and how it is
// done.
type Step struct {
	record.HostStep
	do func(ctx context.Context, e *Env) error
}

// newStep is a step that runs do.
func newStep(kind, object, action, detail string, network bool, do func(ctx context.Context, e *Env) error) Step {
	return Step{HostStep: record.HostStep{Kind: kind, Object: object, Action: action, Detail: detail, Network: network}, do: do}
}

// Plan is the ordered list of changes that makes a host match a Desired state.
type Plan struct {
	Steps []Step
}

// Network reports whether the plan changes anything that can cut the device off.
func (p Plan) Network() bool {
	return slices.ContainsFunc(p.Steps, func(s Step) bool { return s.Network })
}

// ErrForeignAccount refuses a config that names an account fleetprov did not create.
var ErrForeignAccount = errors.New("the account exists and was not created by fleetprov; fleetprov never changes accounts it did not create")

// Check vets d against the host without changing anything: every account it names is
// fleetprov's or absent, every shell is installed, an admin group exists when there is an
// admin, and nft accepts the ruleset (nft -c). Errors name the config path. It returns
// the plan that converges the host to d (for Run, while nothing else changes the host).
func Check(ctx context.Context, e *Env, d Desired) (Plan, error) {
	return plan(ctx, e, d, true)
}

// Run runs each step of a plan, reporting each as a "host" event. The first step that
// fails stops the run; its error names the command and why it failed.
func Run(ctx context.Context, e *Env, p Plan, emit func(record.Event)) error {
	for _, s := range p.Steps {
		if err := s.run(ctx, e, emit); err != nil {
			return err
		}
	}
	return nil
}

// Restore converges the host to d as far as it can: a step that fails is reported and
// the others still run (a rollback restores all it can rather than stop at the first
// failure). The error joins every failure.
func Restore(ctx context.Context, e *Env, d Desired, emit func(record.Event)) error {
	// A step that cannot be planned (one user's shell gone, say) is reported; the steps
	// that could be still run.
	p, err := plan(ctx, e, d, false)
	errs := []error{err}
	for _, s := range p.Steps {
		if ctx.Err() != nil {
			return errors.Join(append(errs, ctx.Err())...)
		}
		if err := s.run(ctx, e, emit); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s Step) run(ctx context.Context, e *Env, emit func(record.Event)) error {
	ev := record.Event{Step: "host", Service: s.Kind + " " + s.Object, Status: s.Action, Message: s.Detail}
	err := s.do(ctx, e)
	if err != nil {
		ev.Status, ev.Message = "failed", err.Error()
		err = fmt.Errorf("host %s %s: %s: %w", s.Kind, s.Object, s.Action, err)
	}
	emit(ev)
	return err
}

type accountRecord struct {
	Version  int             `json:"version"`
	Accounts map[string]bool `json:"accounts"` // created by fleetprov
}

func (e *Env) readRecord() (accountRecord, error) {
	r := accountRecord{Version: 1, Accounts: map[string]bool{}}
	b, err := os.ReadFile(e.Record)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("reading the account record: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("reading the account record %s: %w", e.Record, err)
	}
	if r.Accounts == nil {
		r.Accounts = map[string]bool{}
	}
	return r, nil
}

// remember records name as fleetprov's before the account is created, so a crash between
// the two never leaves an account of ours unrecorded (ours false forgets it again).
func (e *Env) remember(name string, ours bool) error {
	r, err := e.readRecord()
	if err != nil {
		return err
	}
	if r.Accounts[name] == ours {
		return nil
	}
	if ours {
		r.Accounts[name] = true
	} else {
		delete(r.Accounts, name)
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.MkdirAll(filepath.Dir(e.Record), 0o700); err != nil {
		return err
	}
	return state.WriteFileAtomic(e.Record, append(b, '\n'), 0o600)
}

func (e *Env) root() (*os.Root, error) {
	r, err := os.OpenRoot(e.Root)
	if err != nil {
		return nil, fmt.Errorf("opening the host root: %w", err)
	}
	return r, nil
}

// rel makes a host path relative to the root, for os.Root.
func rel(p string) string { return strings.TrimPrefix(path.Clean(p), "/") }

// readFile reads a managed file through r (the host root), as a regular file only; ok is
// false when there is none.
func readFile(r *os.Root, p string) (b []byte, ok bool, err error) {
	b, err = state.ReadRegularIn(r, rel(p), 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", p, err)
	}
	return b, true, nil
}

func plan(ctx context.Context, e *Env, d Desired, check bool) (Plan, error) {
	var p Plan
	rec, err := e.readRecord()
	if err != nil {
		return p, err
	}
	r, err := e.root()
	if err != nil {
		return p, err
	}
	defer r.Close()
	var errs []error
	adminGroup := ""
	for _, g := range []string{"sudo", "wheel"} {
		ok, err := e.Host.GroupExists(ctx, g)
		if err != nil {
			return p, err
		}
		if ok {
			adminGroup = g
			break
		}
	}
	wanted := map[string]bool{}
	for _, u := range d.Users {
		wanted[u.Name] = true
		steps, err := e.planUser(ctx, r, u, rec, adminGroup)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.Steps = append(p.Steps, steps...)
	}
	stale := make([]string, 0, len(rec.Accounts))
	for name := range rec.Accounts {
		if !wanted[name] {
			stale = append(stale, name)
		}
	}
	sort.Strings(stale)
	for _, name := range stale {
		steps, err := e.planStale(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.Steps = append(p.Steps, steps...)
	}
	files, err := planFiles(r, d)
	if err != nil {
		errs = append(errs, err)
	}
	p.Steps = append(p.Steps, files...)
	if check && d.Firewall != nil {
		if err := e.Host.Run(ctx, d.Firewall, "nft", "-c", "-f", "-"); err != nil {
			errs = append(errs, fmt.Errorf("network.firewall: nft refused the ruleset: %w", err))
		}
	}
	return p, errors.Join(errs...)
}

func (e *Env) planUser(ctx context.Context, r *os.Root, u User, rec accountRecord, adminGroup string) ([]Step, error) {
	where := "users." + u.Name
	if st, err := r.Stat(rel(u.Shell)); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s.shell: %s is not installed on this device", where, u.Shell)
	}
	var groups []string
	if u.Admin {
		if adminGroup == "" {
			return nil, fmt.Errorf("%s.isAdmin: this device has no admin group (sudo or wheel)", where)
		}
		groups = []string{adminGroup}
	}
	spec := system.UserSpec{Name: u.Name, Shell: u.Shell, Groups: groups}
	cur, exists, err := e.Host.LookupUser(ctx, u.Name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if exists && !rec.Accounts[u.Name] {
		return nil, fmt.Errorf("%s: %w", where, ErrForeignAccount)
	}
	var steps []Step
	switch {
	case !exists:
		steps = append(steps, newStep("user", u.Name, "create", spec.String(), false, func(ctx context.Context, e *Env) error {
			if err := e.remember(u.Name, true); err != nil {
				return err
			}
			err := e.Host.AddUser(ctx, spec)
			if err != nil {
				// Not made (a group of that name, say): it must not stay recorded as
				// ours, or an account made later under that name would be.
				if _, made, lerr := e.Host.LookupUser(ctx, u.Name); lerr == nil && !made {
					if ferr := e.remember(u.Name, false); ferr != nil {
						return errors.Join(err, ferr)
					}
				}
			}
			return err
		}))
	case cur.Shell != spec.Shell || !slices.Equal(cur.Groups, spec.Groups) || cur.Expired:
		steps = append(steps, newStep("user", u.Name, "update", spec.String(), false, func(ctx context.Context, e *Env) error {
			return e.Host.SetUser(ctx, spec)
		}))
	}
	var curKey []byte
	if exists {
		curKey = e.readKey(cur.Home)
	}
	want := []byte(nil)
	if u.Key != "" {
		want = []byte(u.Key + "\n")
	}
	// An account this plan creates is looked up once made (its home and ids are the
	// host's choice); an existing one is the one just read.
	account := func(ctx context.Context, e *Env) (system.HostUser, error) {
		if exists {
			return cur, nil
		}
		made, ok, err := e.Host.LookupUser(ctx, u.Name)
		if err == nil && !ok {
			err = fmt.Errorf("account %s does not exist", u.Name)
		}
		return made, err
	}
	switch {
	case want != nil && !bytes.Equal(curKey, want):
		steps = append(steps, newStep("key", u.Name, "write", "~/.ssh/authorized_keys", false, func(ctx context.Context, e *Env) error {
			acc, err := account(ctx, e)
			if err != nil {
				return err
			}
			return e.writeKey(acc, want)
		}))
	case want == nil && curKey != nil:
		steps = append(steps, newStep("key", u.Name, "remove", "~/.ssh/authorized_keys", false, func(ctx context.Context, e *Env) error {
			return e.writeKey(cur, nil)
		}))
	}
	return steps, nil
}

// planStale locks an account fleetprov created that the config no longer lists, and
// removes its key. Locking (not deleting) keeps its files, and a rollback to a config
// that lists it again unlocks it.
func (e *Env) planStale(ctx context.Context, name string) ([]Step, error) {
	cur, exists, err := e.Host.LookupUser(ctx, name)
	if err != nil || !exists {
		return nil, err
	}
	var steps []Step
	if !cur.Expired {
		spec := system.UserSpec{Name: name, Shell: cur.Shell, Locked: true}
		steps = append(steps, newStep("user", name, "lock", "no longer in the config", false, func(ctx context.Context, e *Env) error {
			return e.Host.SetUser(ctx, spec)
		}))
	}
	if e.readKey(cur.Home) != nil {
		steps = append(steps, newStep("key", name, "remove", "~/.ssh/authorized_keys", false, func(ctx context.Context, e *Env) error {
			return e.writeKey(cur, nil)
		}))
	}
	return steps, nil
}

// unreadableKey stands for an authorized_keys that is not a regular file inside the
// account's home (a link out of it, a loop, a dir, a FIFO): it differs from any key, so
// the plan replaces or removes it, and it never fails the plan (the account may not stop
// fleetprov from locking it).
var unreadableKey = []byte{0}

// readKey reads an account's authorized_keys through an os.Root on its home, as a
// regular file only (nil: there is none).
func (e *Env) readKey(home string) []byte {
	r, err := os.OpenRoot(filepath.Join(e.Root, home))
	if err != nil {
		return nil
	}
	defer r.Close()
	b, err := state.ReadRegularIn(r, ".ssh/authorized_keys", 64<<10)
	if errors.Is(err, fs.ErrNotExist) {
		if _, lerr := r.Lstat(".ssh/authorized_keys"); lerr != nil {
			return nil
		}
		return unreadableKey // a dangling link
	}
	if err != nil {
		return unreadableKey
	}
	return b
}

// writeKey writes (or, with nil, removes) an account's authorized_keys inside its home:
// through an os.Root on the home (no link leads out of it), as a new file owned by the
// account with mode 0600 renamed into place (a link or hard link the account planted is
// replaced, never written through), in a .ssh dir of mode 0700.
func (e *Env) writeKey(u system.HostUser, key []byte) error {
	name := u.Name
	home, err := os.OpenRoot(filepath.Join(e.Root, u.Home))
	if err != nil {
		return fmt.Errorf("opening the home of %s: %w", name, err)
	}
	defer home.Close()
	// Whatever is there that is not what it should be goes first (inside the home only):
	// a .ssh that is not a directory (a file, a link out of the home), then a key entry
	// that is not a regular file.
	if st, err := home.Lstat(".ssh"); err == nil && !st.IsDir() {
		if err := home.RemoveAll(".ssh"); err != nil {
			return fmt.Errorf("removing the .ssh of %s: %w", name, err)
		}
	}
	if st, err := home.Lstat(".ssh/authorized_keys"); err == nil && (key == nil || !st.Mode().IsRegular()) {
		if err := home.RemoveAll(".ssh/authorized_keys"); err != nil {
			return fmt.Errorf("removing the key of %s: %w", name, err)
		}
	}
	if key == nil {
		return nil
	}
	if err := home.Mkdir(".ssh", 0o700); err == nil {
		if err := chown(home, ".ssh", u.UID, u.GID); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating the .ssh dir of %s: %w", name, err)
	}
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		uid, gid = u.UID, u.GID
	}
	return state.WriteFileAtomicIn(home, ".ssh/authorized_keys", key, 0o600, uid, gid)
}

func chown(r *os.Root, name string, uid, gid int) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if err := r.Lchown(name, uid, gid); err != nil {
		return fmt.Errorf("setting the owner of %s: %w", name, err)
	}
	return nil
}
