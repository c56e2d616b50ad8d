package natsauth

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/fleetprov/fleetprov/core/state"
)

// LoadOrCreateUser reads a user nkey seed from path, creating it (0600) when missing:
// the device's local admin key, for tools on the device that use its NATS listener.
func LoadOrCreateUser(path string) (kp nkeys.KeyPair, created bool, err error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		kp, err = nkeys.FromSeed([]byte(strings.TrimSpace(string(raw))))
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", path, err)
		}
		return kp, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("reading %s: %w", path, err)
	}
	if kp, err = nkeys.CreateUser(); err != nil {
		return nil, false, err
	}
	seed, _ := kp.Seed()
	if err := state.WriteFileAtomic(path, append(seed, '\n'), 0o600); err != nil {
		return nil, false, fmt.Errorf("writing %s: %w", path, err)
	}
	return kp, true, nil
}

// ReadAccounts reads trusted account keys: each item is an account public key (A...) or a
// file holding them (one per line, # comments), such as a fleet's account.pub.
func ReadAccounts(items []string) ([]string, error) {
	var out []string
	for _, it := range items {
		if nkeys.IsValidPublicAccountKey(it) {
			out = append(out, it)
			continue
		}
		raw, err := os.ReadFile(it)
		if err != nil {
			return nil, fmt.Errorf("--nats-account %q is neither an account public key (A...) nor a readable file: %w", it, err)
		}
		for i, line := range strings.Split(string(raw), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if !nkeys.IsValidPublicAccountKey(line) {
				return nil, fmt.Errorf("%s line %d: not an account public key (A...)", it, i+1)
			}
			out = append(out, line)
		}
	}
	return out, nil
}
