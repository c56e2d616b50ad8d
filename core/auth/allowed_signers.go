package auth

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Signer is one allowed_signers entry.
type Signer struct {
	Principals []string
	Key        ssh.PublicKey
	// Namespaces limits the namespaces the key may sign in; empty means any.
	Namespaces  []string
	ValidAfter  time.Time // zero: no lower bound
	ValidBefore time.Time // zero: no upper bound
}

// maxSignerLine bounds one allowed_signers line (a key with long options).
const maxSignerLine = 1 << 20

// AllowedSigners is a parsed OpenSSH allowed_signers file.
type AllowedSigners []Signer

// ParseAllowedSigners reads the OpenSSH allowed_signers format: per line, principals
// (comma-separated, optionally quoted), options (namespaces="...", valid-after=...,
// valid-before=...), then the public key. cert-authority entries are refused with
// ErrUnsupported; any other malformed line is an error naming its line number.
func ParseAllowedSigners(data []byte) (AllowedSigners, error) {
	var out AllowedSigners
	n := 0
	for raw := range strings.Lines(string(data)) {
		n++
		if len(raw) > maxSignerLine {
			return nil, fmt.Errorf("allowed_signers line %d: longer than %d bytes", n, maxSignerLine)
		}
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSignerLine(line)
		if err != nil {
			return nil, fmt.Errorf("allowed_signers line %d: %w", n, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseSignerLine(line string) (Signer, error) {
	var s Signer
	principals, rest, err := nextToken(line)
	if err != nil {
		return s, err
	}
	for _, p := range strings.Split(principals, ",") {
		if p = strings.TrimSpace(p); p != "" {
			s.Principals = append(s.Principals, p)
		}
	}
	if len(s.Principals) == 0 {
		return s, fmt.Errorf("no principals")
	}
	tok, after, err := nextToken(rest)
	if err != nil {
		return s, err
	}
	if !isKeyType(tok) {
		if err := s.parseOptions(tok); err != nil {
			return s, err
		}
		tok, after, err = nextToken(after)
		if err != nil {
			return s, err
		}
	}
	blob, _, err := nextToken(after)
	if err != nil {
		return s, fmt.Errorf("missing key after %q", tok)
	}
	raw, err := base64.StdEncoding.DecodeString(blob)
	if err != nil {
		return s, fmt.Errorf("key is not base64: %w", err)
	}
	key, err := ssh.ParsePublicKey(raw)
	if err != nil {
		return s, fmt.Errorf("parsing key: %w", err)
	}
	if key.Type() != tok {
		return s, fmt.Errorf("key type %q does not match the key's embedded type %q", tok, key.Type())
	}
	s.Key = key
	return s, nil
}

func (s *Signer) parseOptions(opts string) error {
	for _, opt := range splitOptions(opts) {
		name, val, hasVal := strings.Cut(opt, "=")
		val = strings.Trim(val, `"`)
		switch strings.ToLower(name) {
		case "cert-authority":
			return fmt.Errorf("%w: cert-authority keys are not supported; list the signers' own keys", ErrUnsupported)
		case "namespaces":
			for _, ns := range strings.Split(val, ",") {
				if ns = strings.TrimSpace(ns); ns != "" {
					s.Namespaces = append(s.Namespaces, ns)
				}
			}
		case "valid-after", "valid-before":
			if !hasVal {
				return fmt.Errorf("%s needs a value", name)
			}
			t, err := parseSSHTime(val)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if strings.EqualFold(name, "valid-after") {
				s.ValidAfter = t
			} else {
				s.ValidBefore = t
			}
		default:
			return fmt.Errorf("%w: option %q", ErrUnsupported, name)
		}
	}
	return nil
}

// parseSSHTime reads ssh-keygen's YYYYMMDD[HHMM[SS]][Z] (local time unless Z).
func parseSSHTime(v string) (time.Time, error) {
	loc := time.Local
	if strings.HasSuffix(v, "Z") || strings.HasSuffix(v, "z") {
		loc, v = time.UTC, v[:len(v)-1]
	}
	for _, layout := range []string{"20060102150405", "200601021504", "20060102"} {
		if len(v) == len(layout) {
			return time.ParseInLocation(layout, v, loc)
		}
	}
	return time.Time{}, fmt.Errorf("expected YYYYMMDD[HHMM[SS]][Z], got %q", v)
}

// nextToken returns the next whitespace-separated token, honouring double quotes.
func nextToken(s string) (tok, rest string, err error) {
	s = strings.TrimLeft(s, " \t")
	if s == "" {
		return "", "", fmt.Errorf("unexpected end of line")
	}
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			inQuote = !inQuote
		case (s[i] == ' ' || s[i] == '\t') && !inQuote:
			return s[:i], s[i:], nil
		}
	}
	if inQuote {
		return "", "", fmt.Errorf("unterminated quote")
	}
	return s, "", nil
}

// splitOptions splits comma-separated options, keeping commas inside quotes.
func splitOptions(s string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == ',' && !inQuote:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func isKeyType(t string) bool {
	switch t {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoSKECDSA256, ssh.KeyAlgoRSA:
		return true
	}
	return false
}

// Verify checks an armored signature of msg in namespace against the allowed signers at
// time now, and returns the first principal of the matching entry.
func (a AllowedSigners) Verify(msg, armored []byte, namespace string, now time.Time) (string, error) {
	sig, err := parseSignature(armored)
	if err != nil {
		return "", err
	}
	keyBytes := sig.PublicKey.Marshal()
	var lastErr error = ErrUnknownSigner
	for _, s := range a {
		if !bytes.Equal(s.Key.Marshal(), keyBytes) {
			continue
		}
		if len(s.Namespaces) > 0 && !matchesAny(namespace, s.Namespaces) {
			lastErr = fmt.Errorf("%w: key of %s may not sign %s", ErrNamespace, s.Principals[0], namespace)
			continue
		}
		if (!s.ValidAfter.IsZero() && now.Before(s.ValidAfter)) || (!s.ValidBefore.IsZero() && now.After(s.ValidBefore)) {
			lastErr = fmt.Errorf("%w: %s", ErrKeyNotValid, s.Principals[0])
			continue
		}
		if err := verifyWith(msg, sig, s.Key, namespace); err != nil {
			return "", err
		}
		return s.Principals[0], nil
	}
	return "", lastErr
}

func matchesAny(s string, patterns []string) bool {
	for _, p := range patterns {
		if p == s || p == "*" || (strings.HasSuffix(p, "*") && strings.HasPrefix(s, strings.TrimSuffix(p, "*"))) {
			return true
		}
	}
	return false
}
