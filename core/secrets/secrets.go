// Package secrets carries secret values from the publisher to one device without anyone
// in between reading them: the publisher seals them with age to the device's enrolled
// ssh-ed25519 identity key; the device opens them at apply time with its private key,
// keeps them at rest only sealed to itself (secrets.age in the config generation, so
// they promote and roll back with everything else), and shows them only as keyed
// digests (secrets.json), which say whether a value changed but cannot be
// dictionary-checked by whoever reads current or export.
//
// It must not import messaging/, net/http or NATS packages.
package secrets

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/state"
)

// Values maps secret names to their plaintext values.
type Values map[string][]byte

// Names returns the names, sorted.
func (v Values) Names() []string {
	out := make([]string, 0, len(v))
	for n := range v {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Entry is what the device shows of one secret.
type Entry struct {
	Digest string    `json:"digest"`
	SetAt  time.Time `json:"set_at"`
}

// Manifest lists the device's secrets by name.
type Manifest map[string]Entry

// Files in a config generation dir.
const (
	FileSealed   = "secrets.age"
	FileManifest = "secrets.json"
)

// Limits of one sealed set.
const (
	MaxValue  = 64 << 10 // one value
	MaxCount  = 128      // values in one set
	MaxSealed = 16 << 20 // one sealed set, ciphertext
)

var (
	// ErrNotRecipient is returned when the sealed set is not encrypted to this device.
	ErrNotRecipient = errors.New("the secrets are not encrypted to this device's identity key (is the device enrolled with its current key?)")
	// ErrMalformed is returned for a sealed set that is not one this package made.
	ErrMalformed = errors.New("malformed secrets")
)

// plain is the sealed plaintext.
type plain struct {
	V      int               `json:"v"`
	Values map[string][]byte `json:"values"`
}

// Recipient returns the age recipient of a device's ssh-ed25519 identity key.
func Recipient(pub ssh.PublicKey) (age.Recipient, error) {
	r, err := agessh.NewEd25519Recipient(pub)
	if err != nil {
		return nil, fmt.Errorf("device key %s cannot receive secrets: %w", pub.Type(), err)
	}
	return r, nil
}

// Check validates names and sizes.
func (v Values) Check() error {
	if len(v) > MaxCount {
		return fmt.Errorf("%w: %d secrets (limit %d)", ErrMalformed, len(v), MaxCount)
	}
	for _, n := range v.Names() {
		if !config.ValidSecretName(n) {
			return fmt.Errorf("%w: invalid secret name %q", ErrMalformed, n)
		}
		if len(v[n]) > MaxValue {
			return fmt.Errorf("%w: secret %s is %d bytes (limit %d)", ErrMalformed, n, len(v[n]), MaxValue)
		}
	}
	return nil
}

// Seal encrypts values to recipients (binary age format).
func Seal(v Values, recipients ...age.Recipient) ([]byte, error) {
	if err := v.Check(); err != nil {
		return nil, err
	}
	if len(recipients) == 0 {
		return nil, errors.New("sealing secrets: no recipients")
	}
	pt, err := json.Marshal(plain{V: 1, Values: v})
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	var out bytes.Buffer
	w, err := age.Encrypt(&out, recipients...)
	if err != nil {
		return nil, fmt.Errorf("sealing secrets: %w", err)
	}
	if _, err := w.Write(pt); err != nil {
		return nil, fmt.Errorf("sealing secrets: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("sealing secrets: %w", err)
	}
	return out.Bytes(), nil
}

// Keyring is the device's side: its identity, itself as a recipient, and the digest key.
type Keyring struct {
	id   age.Identity
	self age.Recipient
	mac  []byte
}

// NewKeyring makes the keyring of an ed25519 identity key.
func NewKeyring(priv ed25519.PrivateKey) (*Keyring, error) {
	id, err := agessh.NewEd25519Identity(priv)
	if err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("identity key: %w", err)
	}
	self, err := Recipient(pub)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, priv.Seed())
	m.Write([]byte("fleetprov secret digest v1"))
	return &Keyring{id: id, self: self, mac: m.Sum(nil)}, nil
}

// Open decrypts a sealed set made by Seal for this device.
func (k *Keyring) Open(sealed []byte) (Values, error) {
	if len(sealed) > MaxSealed {
		return nil, fmt.Errorf("%w: %d bytes of ciphertext (limit %d)", ErrMalformed, len(sealed), MaxSealed)
	}
	r, err := age.Decrypt(bytes.NewReader(sealed), k.id)
	if err != nil {
		var nm *age.NoIdentityMatchError
		if errors.As(err, &nm) {
			return nil, ErrNotRecipient
		}
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	pt, err := io.ReadAll(io.LimitReader(r, MaxSealed+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	defer clear(pt)
	if len(pt) > MaxSealed {
		return nil, fmt.Errorf("%w: plaintext over %d bytes", ErrMalformed, MaxSealed)
	}
	dec := json.NewDecoder(bytes.NewReader(pt))
	dec.DisallowUnknownFields()
	var p plain
	if err := dec.Decode(&p); err != nil || p.V != 1 {
		return nil, fmt.Errorf("%w: not a fleetprov secrets set (v1)", ErrMalformed)
	}
	if p.Values == nil {
		p.Values = map[string][]byte{}
	}
	v := Values(p.Values)
	if err := v.Check(); err != nil {
		return nil, err
	}
	return v, nil
}

// Digest is the keyed digest of one value: it changes when the value changes, and says
// nothing about the value to anyone without the device's key.
func (k *Keyring) Digest(name string, value []byte) string {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write(value)
	return "hmac-sha256:" + hex.EncodeToString(m.Sum(nil))
}

// Load reads the sealed set and manifest of a generation dir (both empty when the dir
// has no secrets).
func (k *Keyring) Load(dir string) (Values, Manifest, error) {
	man, err := ReadManifest(dir)
	if err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, FileSealed))
	if errors.Is(err, os.ErrNotExist) {
		if len(man) > 0 {
			return nil, nil, fmt.Errorf("%s lists secrets but %s is missing", FileManifest, FileSealed)
		}
		return Values{}, Manifest{}, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading secrets: %w", err)
	}
	v, err := k.Open(b)
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s: %w", filepath.Join(dir, FileSealed), err)
	}
	return v, man, nil
}

// Save seals v to the device itself and writes it with its manifest into dir (0600).
// An empty set removes both files.
func (k *Keyring) Save(dir string, v Values, man Manifest) error {
	if len(v) == 0 {
		for _, f := range []string{FileSealed, FileManifest} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("removing %s: %w", f, err)
			}
		}
		return nil
	}
	sealed, err := Seal(v, k.self)
	if err != nil {
		return err
	}
	mb, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return err
	}
	if err := state.WriteFileAtomic(filepath.Join(dir, FileSealed), sealed, 0o600); err != nil {
		return fmt.Errorf("writing secrets: %w", err)
	}
	if err := state.WriteFileAtomic(filepath.Join(dir, FileManifest), append(mb, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing secrets manifest: %w", err)
	}
	return nil
}

// ReadManifest reads a generation dir's manifest (empty when it has none).
func ReadManifest(dir string) (Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, FileManifest))
	if errors.Is(err, os.ErrNotExist) {
		return Manifest{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading secrets manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("reading secrets manifest: %w", err)
	}
	if m == nil {
		m = Manifest{}
	}
	return m, nil
}
