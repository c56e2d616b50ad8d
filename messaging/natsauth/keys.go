package natsauth

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/fleetprov/fleetprov/core/state"
)

// readSeed reads an nkey seed file (surrounding space ignored), which must be readable by
// its owner only; a missing file is an error that wraps os.ErrNotExist.
func readSeed(path string) (nkeys.KeyPair, error) {
	raw, err := state.ReadPrivate(path, "nkey seed")
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(raw))))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kp, nil
}

// writeSeed writes kp's seed to path (0600, atomically).
func writeSeed(path string, kp nkeys.KeyPair) error {
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	if err := state.WriteFileAtomic(path, append(seed, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// LoadOrCreateUser reads a user nkey seed from path, creating it (0600) when missing:
// the device's local admin key, for tools on the device that use its NATS listener.
func LoadOrCreateUser(path string) (kp nkeys.KeyPair, created bool, err error) {
	kp, err = readSeed(path)
	if !errors.Is(err, os.ErrNotExist) {
		return kp, false, err
	}
	if kp, err = nkeys.CreateUser(); err != nil {
		return nil, false, err
	}
	return kp, true, writeSeed(path, kp)
}
