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
