package auth

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/state"
)

// Target is what a signed request addresses.
type Target struct {
	Kind  string // device | group | all
	Group string // for Kind group
}

// Decision is who signed a request and on which basis it was let in.
type Decision struct {
	Principal string
	// Basis: "admin" (active config), "fleet-trust" (trust file, first boot) or
	// "possession" (first boot: the config being applied must make Key an admin).
	Basis string
	Key   ssh.PublicKey

	fleet *config.Fleet // the active config's [fleet] table an admin was checked against
}

// Trust holds the device's signer rules.
type Trust struct {
	State state.Dir
	// FleetTrustFile is an allowed_signers file baked into the image (default
	// /etc/fleetprov/allowed_signers). When it exists, first-boot signatures must verify
	// against it and the proof-of-possession and unsigned-bridge routes are closed.
	FleetTrustFile string
	Config         config.Options
	// FirstBootUntil closes the first-boot bases (unsigned and proof of possession) after
	// this time; zero leaves them open until the device is provisioned.
	FirstBootUntil time.Time
	Now            func() time.Time

	mu          sync.Mutex // guards the parsed [fleet] table and signers of the active config
	parsed      bool
	parsedSum   [32]byte
	parsedFleet *config.Fleet
	signersRaw  []byte
	signers     AllowedSigners
}

// FirstBootOpen reports whether an unprovisioned device without a fleet trust file still
// accepts first-boot requests (unsigned over the bridge, or signed by possession): the
// first-boot window has not passed.
func (t *Trust) FirstBootOpen() bool {
	return t.FirstBootUntil.IsZero() || t.now().Before(t.FirstBootUntil)
}

func (t *Trust) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// HasFleetTrust reports whether the fleet trust file exists.
func (t *Trust) HasFleetTrust() bool {
	if t.FleetTrustFile == "" {
		return false
	}
	_, err := os.Stat(t.FleetTrustFile)
	return err == nil
}

// Provisioned reports whether the device has an active config (and so admin signers).
func (t *Trust) Provisioned() bool { return t.State.HasActive() }

// Verify checks a signature of msg in namespace for op on target, for a device in
// deviceGroups. On a provisioned device the signer must be an admin of the active config
// and pass its [fleet.signers] policy. On first boot it must be in the fleet trust file
// when there is one; otherwise any correctly self-signed request passes with Basis
// "possession", and the caller must check the applied config makes Key an admin.
func (t *Trust) Verify(msg, armored []byte, namespace, op string, target Target, deviceGroups []string) (Decision, error) {
	if t.Provisioned() {
		return t.verifyAdmin(msg, armored, namespace, op, target, deviceGroups)
	}
	if t.HasFleetTrust() {
		signers, err := readSigners(t.FleetTrustFile)
		if err != nil {
			return Decision{}, err
		}
		p, err := signers.Verify(msg, armored, namespace, t.now())
		if err != nil {
			return Decision{}, err
		}
		return Decision{Principal: p, Basis: "fleet-trust"}, nil
	}
	if !t.FirstBootOpen() {
		return Decision{}, ErrFirstBootClosed
	}
	if op != "apply" {
		// A self-signed request proves nothing but possession of its own key: it may only
		// install a config that makes that key an admin.
		return Decision{}, fmt.Errorf("%w: an unprovisioned device without a fleet trust file accepts only apply", ErrUnknownSigner)
	}
	sig, err := parseSignature(armored)
	if err != nil {
		return Decision{}, err
	}
	if err := verifyWith(msg, sig, sig.PublicKey, namespace); err != nil {
		return Decision{}, err
	}
	return Decision{Principal: ssh.FingerprintSHA256(sig.PublicKey), Basis: "possession", Key: sig.PublicKey}, nil
}

func (t *Trust) verifyAdmin(msg, armored []byte, namespace, op string, target Target, deviceGroups []string) (Decision, error) {
	signers, err := t.activeSigners()
	if err != nil {
		return Decision{}, err
	}
	p, err := signers.Verify(msg, armored, namespace, t.now())
	if err != nil {
		return Decision{}, err
	}
	fleet, err := t.activeFleet()
	if err != nil {
		return Decision{}, err
	}
	if err := Authorize(fleet, p, op, target, deviceGroups); err != nil {
		return Decision{}, err
	}
	return Decision{Principal: p, Basis: "admin", fleet: fleet}, nil
}

// Allows reports whether the signer of a decision already made may also run op (the
// [fleet.signers] policy for an admin; a fleet-trust signer may do everything; proof of
// possession allows apply only), without verifying the signature again.
func (t *Trust) Allows(d Decision, op string, target Target, deviceGroups []string) error {
	switch d.Basis {
	case "admin":
		fleet := d.fleet
		if fleet == nil {
			var err error
			if fleet, err = t.activeFleet(); err != nil {
				return err
			}
		}
		return Authorize(fleet, d.Principal, op, target, deviceGroups)
	case "fleet-trust":
		return nil
	case "possession":
		if op != "apply" {
			return fmt.Errorf("%w: proof of possession allows apply only", ErrUnknownSigner)
		}
		return nil
	}
	return fmt.Errorf("%w: no basis %q", ErrUnknownSigner, d.Basis)
}

// activeFleet is the [fleet] table of the active config, parsed again only when the
// config's bytes change (parsing is most of a signed request's cost).
func (t *Trust) activeFleet() (*config.Fleet, error) {
	cfg, err := t.State.ReadActive()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignersUnreadable, err)
	}
	sum := sha256.Sum256(cfg)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.parsed && t.parsedSum == sum {
		return t.parsedFleet, nil
	}
	m, _, err := config.Parse(cfg, t.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: active config: %w", ErrSignersUnreadable, err)
	}
	t.parsed, t.parsedSum, t.parsedFleet = true, sum, m.Fleet
	return m.Fleet, nil
}

// activeSigners is the active config's allowed_signers, parsed again only when the
// file's bytes change (a request reads it, but parsing every key on every request was a
// fifth of a signed round trip's device time).
func (t *Trust) activeSigners() (AllowedSigners, error) {
	raw, err := os.ReadFile(filepath.Join(t.State.Active(), "allowed_signers"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignersUnreadable, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.signersRaw != nil && bytes.Equal(t.signersRaw, raw) {
		return t.signers, nil
	}
	signers, err := ParseAllowedSigners(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignersUnreadable, err)
	}
	t.signersRaw, t.signers = raw, signers
	return signers, nil
}

// readSigners loads an allowed_signers file; any failure is ErrSignersUnreadable, so the
// caller fails closed.
func readSigners(path string) (AllowedSigners, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignersUnreadable, err)
	}
	signers, err := ParseAllowedSigners(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignersUnreadable, err)
	}
	return signers, nil
}

// Authorize applies the [fleet.signers] policy: a signer without a policy may do
// everything; one with ops may run only those; one with groups may address only those
// groups, or a device in one of them (never the whole fleet).
func Authorize(f *config.Fleet, principal, op string, target Target, deviceGroups []string) error {
	if f == nil {
		return nil
	}
	pol, ok := f.Signers[principal]
	if !ok {
		return nil
	}
	if pol.Ops != nil && !slices.Contains(pol.Ops, op) {
		return fmt.Errorf("%w: %s may not %s", ErrForbidden, principal, op)
	}
	if pol.Groups == nil {
		return nil
	}
	switch target.Kind {
	case "group":
		if slices.Contains(pol.Groups, target.Group) {
			return nil
		}
	case "device":
		for _, g := range deviceGroups {
			if slices.Contains(pol.Groups, g) {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s may address only groups %v", ErrForbidden, principal, pol.Groups)
}

// IsAdminKey reports whether key is the ssh_key of an admin user of m (the first-boot
// proof-of-possession rule).
func IsAdminKey(m config.Model, key ssh.PublicKey) bool {
	want := key.Marshal()
	for _, name := range m.Admins() {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(m.Users[name].SSHKey))
		if err == nil && bytes.Equal(pub.Marshal(), want) {
			return true
		}
	}
	return false
}

// ErrNotAdminKey is returned by CheckPossession.
var ErrNotAdminKey = errors.New("first-boot apply must be signed by a key the config makes an admin")

// CheckPossession returns a config check for a first-boot apply decided on "possession".
func (d Decision) CheckPossession() func(config.Model) error {
	if d.Basis != "possession" {
		return nil
	}
	return func(m config.Model) error {
		if !IsAdminKey(m, d.Key) {
			return ErrNotAdminKey
		}
		return nil
	}
}
