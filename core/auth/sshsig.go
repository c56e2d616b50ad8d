package auth

import (
	"bytes"
	"fmt"

	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Signature namespaces: each signed thing has its own, so a signature for one is useless
// for the other.
const (
	NamespaceEnvelope = "fleetprov-envelope-v1"
	NamespaceHTTP     = "fleetprov-http-v1"
	// NamespaceDevice is what a device signs its replies, events and presence in.
	NamespaceDevice = "fleetprov-device-v1"
)

// VerifySelf checks an armored SSHSIG over msg in namespace with the key the signature
// names, and returns that key; the caller decides whether the key is the one it trusts
// (a device's enrolled key).
func VerifySelf(msg, armored []byte, namespace string) (ssh.PublicKey, error) {
	sig, err := parseSignature(armored)
	if err != nil {
		return nil, err
	}
	if err := verifyWith(msg, sig, sig.PublicKey, namespace); err != nil {
		return nil, err
	}
	return sig.PublicKey, nil
}

// Sign makes an armored SSHSIG (sha512) of msg with signer in namespace. RSA keys sign
// with rsa-sha2-512, as ssh-keygen does.
func Sign(msg []byte, signer ssh.Signer, namespace string) ([]byte, error) {
	sig, err := sshsig.Sign(bytes.NewReader(msg), signer, sshsig.HashSHA512, namespace)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return sshsig.Armor(sig), nil
}

// parseSignature reads an armored signature.
func parseSignature(armored []byte) (*sshsig.Signature, error) {
	if len(bytes.TrimSpace(armored)) == 0 {
		return nil, ErrMissingSignature
	}
	sig, err := sshsig.Unarmor(armored)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return sig, nil
}

// verifyWith checks sig over msg with pub in namespace; sha256 and sha512 are accepted.
func verifyWith(msg []byte, sig *sshsig.Signature, pub ssh.PublicKey, namespace string) error {
	if sig.Namespace != namespace {
		return fmt.Errorf("%w: signed for %q, want %q", ErrNamespace, sig.Namespace, namespace)
	}
	if sig.HashAlgorithm != sshsig.HashSHA512 && sig.HashAlgorithm != sshsig.HashSHA256 {
		return fmt.Errorf("%w: hash %s", ErrBadSignature, sig.HashAlgorithm)
	}
	if err := sshsig.Verify(bytes.NewReader(msg), sig, pub, sig.HashAlgorithm, namespace); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return nil
}
