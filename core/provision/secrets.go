package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/secrets"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/core/system"
)

// ErrNoKeyring is returned when secrets are needed and the identity key cannot be read.
var ErrNoKeyring = errors.New("the device's identity key is needed for secrets")

// podmanSecretsFile records, in the state root, which Podman secrets fleetprov created in
// which store, so that it removes exactly those (never one an operator made by hand).
const podmanSecretsFile = "podman-secrets.json"

// SecretInfo is what current shows of one secret: never its value.
type SecretInfo struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	Digest      string    `json:"digest,omitempty"`
	SetAt       time.Time `json:"set_at,omitzero"`
	UsedBy      []string  `json:"used_by"`
}

// keyring loads the device's keyring from its identity key (once).
func (p *Provisioner) keyring() (*secrets.Keyring, error) {
	p.krMu.Lock()
	defer p.krMu.Unlock()
	if p.kr != nil {
		return p.kr, nil
	}
	priv, err := identity.Private(p.IdentityKeyPath())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoKeyring, err)
	}
	kr, err := secrets.NewKeyring(priv)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoKeyring, err)
	}
	p.kr = kr
	return kr, nil
}

// secretsStage opens the sealed values the input brought, merges them with the values
// the active state holds, checks that every declared secret has a value and every value
// is declared, and writes them sealed to the device itself into the candidate. Values no
// longer declared are dropped.
func (a *applyRun) secretsStage(ctx context.Context) error {
	declared := a.model.SecretNames()
	activeDir := a.p.opts.State.Active()
	_, statErr := os.Stat(filepath.Join(activeDir, secrets.FileSealed))
	if len(declared) == 0 && a.in.Secrets == nil && errors.Is(statErr, os.ErrNotExist) {
		return nil // nothing to do; no key needed
	}
	kr, err := a.p.keyring()
	if err != nil {
		return err
	}
	prev, prevMan := secrets.Values{}, secrets.Manifest{}
	if a.p.opts.State.HasActive() {
		if prev, prevMan, err = kr.Load(activeDir); err != nil {
			return fmt.Errorf("reading the active secrets: %w", err)
		}
	}
	defer clearValues(prev)
	var in secrets.Values
	if a.in.Secrets != nil {
		if in, err = kr.Open(a.in.Secrets); err != nil {
			return &InvalidError{Report: a.report, Err: fmt.Errorf("secrets: %w", err)}
		}
		defer clearValues(in)
	}
	invalid := false
	for _, name := range in.Names() {
		if _, ok := a.model.Secrets[name]; !ok {
			a.report.Errorf(config.Path{"secrets"}, "a value was sent for secret %q, which this config does not declare (declared: %s)", name, listOrNone(declared))
			invalid = true
		}
	}
	next, man := secrets.Values{}, secrets.Manifest{}
	var missing []string
	now := time.Now().UTC()
	for _, name := range declared {
		v, ok := in[name]
		if !ok {
			v, ok = prev[name]
		}
		if !ok {
			missing = append(missing, name)
			continue
		}
		next[name] = v
		e := secrets.Entry{Digest: kr.Digest(name, v), SetAt: now}
		if old, ok := prevMan[name]; ok && old.Digest == e.Digest {
			e.SetAt = old.SetAt
		} else {
			a.secretsChanged = append(a.secretsChanged, name)
		}
		man[name] = e
	}
	for _, name := range missing {
		a.report.Errorf(config.Path{"secrets", name}, "secret %q has no value on this device: push with --secrets DIR (a file named %s) or --secret %s=@FILE", name, name, name)
		invalid = true
	}
	if invalid {
		return &InvalidError{Report: a.report, Err: config.ErrInvalid}
	}
	if err := kr.Save(a.p.opts.State.Candidate(), next, man); err != nil {
		return err
	}
	var removed []string
	for name := range prev {
		if _, ok := next[name]; !ok {
			removed = append(removed, name)
		}
	}
	slices.Sort(removed)
	msg := fmt.Sprintf("%d secret(s)", len(next))
	if len(a.secretsChanged) > 0 {
		msg += "; set: " + strings.Join(a.secretsChanged, ", ")
	}
	if len(removed) > 0 {
		msg += "; removed: " + strings.Join(removed, ", ")
	}
	a.emit(record.Event{Step: "secrets", Message: msg})
	return nil
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func clearValues(v secrets.Values) {
	for _, b := range v {
		clear(b)
	}
}

// podmanSecrets is the record of the Podman secrets fleetprov made, by store.
type podmanSecrets struct {
	System []string `json:"system"`
	User   []string `json:"user"`
}

// syncSecrets puts the active state's secrets into the Podman stores of the containers
// that use them (the system's for rootful ones, the app user's for rootless ones). It
// returns the second half, run once the units restarted: removing the secrets fleetprov
// made before that are no longer wanted (their users are gone by then).
//
// m is the active model (nil: there is no active state, so no secret is wanted).
func (p *Provisioner) syncSecrets(ctx context.Context, m *config.Model, acc system.Account, emit func(record.Event)) (func() error, error) {
	recPath := filepath.Join(p.opts.State.Root, podmanSecretsFile)
	var had podmanSecrets
	if b, err := os.ReadFile(recPath); err == nil {
		if err := json.Unmarshal(b, &had); err != nil {
			return nil, fmt.Errorf("reading %s: %w", recPath, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", recPath, err)
	}
	var want podmanSecrets
	values := secrets.Values{}
	if m != nil {
		if len(m.Secrets) > 0 {
			kr, err := p.keyring()
			if err != nil {
				return nil, err
			}
			if values, _, err = kr.Load(p.opts.State.Active()); err != nil {
				return nil, err
			}
			defer clearValues(values)
		}
		for name, users := range m.SecretUsers() {
			for _, c := range users {
				if m.Containers.Container[c].Privileged {
					want.System = appendUnique(want.System, name)
				} else {
					want.User = appendUnique(want.User, name)
				}
			}
		}
		slices.Sort(want.System)
		slices.Sort(want.User)
	}
	if (len(want.System) > 0 || len(want.User) > 0 || len(had.System) > 0 || len(had.User) > 0) && p.opts.Backend.Secrets == nil {
		return nil, fmt.Errorf("the %s backend has no secret store", p.opts.Backend.Name)
	}
	rec := podmanSecrets{System: slices.Clone(had.System), User: slices.Clone(had.User)}
	type store struct {
		acc       *system.Account
		mode      string
		want, had []string
		rec, kept *[]string // this store's list in rec (made so far) and in want (kept after removal)
	}
	stores := []store{{nil, config.ModeRootful, want.System, had.System, &rec.System, &want.System},
		{&acc, config.ModeRootless, want.User, had.User, &rec.User, &want.User}}
	// The record grows before each put (a crash right after it must not forget a secret
	// fleetprov made) and keeps what it had until the removals ran.
	for _, st := range stores {
		for _, name := range st.want {
			v, ok := values[name]
			if !ok {
				return nil, fmt.Errorf("secret %s is used but has no value in the active state", name)
			}
			*st.rec = mergeSorted(*st.rec, []string{name})
			if err := writeRecord(recPath, rec); err != nil {
				return nil, err
			}
			if err := p.opts.Backend.Secrets.Put(ctx, st.acc, name, v); err != nil {
				return nil, err
			}
			p.fault("secrets:put")
			emit(record.Event{Step: "secret-install", Mode: st.mode, Status: "installed", Message: name})
		}
	}
	return func() error {
		for _, st := range stores {
			for _, name := range st.had {
				if slices.Contains(st.want, name) {
					continue
				}
				if err := p.opts.Backend.Secrets.Remove(ctx, st.acc, name); err != nil {
					// The app user can make its own Podman fail; that must not fail the
					// apply (or its rollback). The name stays recorded for the next try.
					p.log.Warn("removing a secret no longer used", "secret", name, "mode", st.mode, "err", err)
					emit(record.Event{Step: "secret-install", Mode: st.mode, Status: "failed", Message: name + ": " + err.Error()})
					*st.kept = mergeSorted(*st.kept, []string{name})
					continue
				}
				emit(record.Event{Step: "secret-install", Mode: st.mode, Status: "removed", Message: name})
			}
		}
		return writeRecord(recPath, want)
	}, nil
}

func writeRecord(path string, r podmanSecrets) error {
	if len(r.System) == 0 && len(r.User) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", path, err)
		}
		return nil
	}
	b, _ := json.Marshal(r)
	if err := state.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func mergeSorted(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

func appendUnique(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// secretInfos lists the active secrets for current (names, digests, users; no values).
func (p *Provisioner) secretInfos(m config.Model) ([]SecretInfo, error) {
	man, err := secrets.ReadManifest(p.opts.State.Active())
	if err != nil {
		return nil, err
	}
	users := m.SecretUsers()
	var out []SecretInfo
	for _, name := range m.SecretNames() {
		e := man[name]
		u := users[name]
		if u == nil {
			u = []string{}
		}
		out = append(out, SecretInfo{Name: name, Description: m.Secrets[name].Description, Digest: e.Digest, SetAt: e.SetAt, UsedBy: u})
	}
	return out, nil
}
