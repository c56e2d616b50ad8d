// Package identity is the device's own key: an ed25519 key in OpenSSH format, made on
// first start in the state dir (mode 0600) or an existing key such as the SSH host key.
// Everything the device says (replies, job events, presence) is signed with it, so a
// publisher that enrolled the device can tell it from an impostor.
//
// It must not import messaging/, net/http or NATS packages.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/state"
)

// DefaultFile is the key's name in the state dir.
const DefaultFile = "identity_ed25519"

// Path is the identity key's path: flagValue when set, else DefaultFile in the state dir.
func Path(flagValue, stateDir string) string {
	if flagValue != "" {
		return flagValue
	}
	return filepath.Join(stateDir, DefaultFile)
}

// LoadOrCreate returns the key at path, making an ed25519 key there (0600, OpenSSH
// format) when there is none. created reports whether it was made now.
func LoadOrCreate(path, comment string) (signer ssh.Signer, created bool, err error) {
	s, err := Load(path)
	if err == nil {
		return s, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("making the identity key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, false, fmt.Errorf("encoding the identity key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, false, fmt.Errorf("creating the identity key's dir: %w", err)
	}
	if err := state.WriteFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, false, fmt.Errorf("writing the identity key: %w", err)
	}
	s, err = ssh.NewSignerFromKey(priv)
	return s, err == nil, err
}

// Load reads an unencrypted OpenSSH (or PEM) private key, such as
// /etc/ssh/ssh_host_ed25519_key. A key readable by others is refused.
func Load(path string) (ssh.Signer, error) {
	k, err := parse(path)
	if err != nil {
		return nil, err
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		return nil, fmt.Errorf("the identity key %s: %w", path, err)
	}
	return s, nil
}

// parse reads the private key at path (owner-only) and parses it.
func parse(path string) (any, error) {
	b, err := read(path)
	if err != nil {
		return nil, err
	}
	k, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("parsing the identity key %s: %w", path, err)
	}
	return k, nil
}

// Private returns the ed25519 private key at path, with Load's checks; secrets are
// decrypted with it (an identity key of another type cannot receive secrets).
func Private(path string) (ed25519.PrivateKey, error) {
	k, err := parse(path)
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case *ed25519.PrivateKey:
		return *k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("identity key %s is %T: secrets need an ed25519 key", path, k)
}

func read(path string) ([]byte, error) { return state.ReadPrivate(path, "identity key") }

// Fingerprint is the key's SHA256:... fingerprint, as ssh-keygen -l prints it.
func Fingerprint(pub ssh.PublicKey) string { return ssh.FingerprintSHA256(pub) }

// AuthorizedKey is the public key as one authorized_keys line (no newline).
func AuthorizedKey(pub ssh.PublicKey) string {
	b := ssh.MarshalAuthorizedKey(pub)
	return string(b[:len(b)-1])
}
