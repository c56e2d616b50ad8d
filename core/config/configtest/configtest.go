// Package configtest builds valid config.toml models and documents for tests in other
// packages, so that each test states only what it is about.
package configtest

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/config"
)

// AdminKey is the ed25519 public key of the AtomixOS fixtures (no private half is known).
const AdminKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfm/RhPyisFyBAwigDt2AnnOU1fMAVk4XaCj3S/k/3Z admin@example"

// NewKey makes a fresh ed25519 key pair and returns the signer and its authorized_keys line.
func NewKey(t testing.TB) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generating key: %v", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatalf("wrapping key: %v", err)
	}
	return s, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
}

// Builder assembles a valid model step by step.
type Builder struct{ m config.Model }

// New starts a model with one admin user "admin" holding key, no containers yet.
func New(key string) *Builder {
	return &Builder{m: config.Model{
		Version: 1,
		Users:   map[string]config.User{"admin": {IsAdmin: true, SSHKey: key}},
		Activation: config.Activation{
			Required: []string{}, Restart: []string{}, AllowDegraded: []string{},
			TimeoutSeconds: config.DefaultTimeoutSeconds, Strategy: config.DefaultStrategy,
		},
		Containers: config.Containers{Container: map[string]config.Container{}},
	}}
}

// Container adds a container running image; required adds it to activation.required.
func (b *Builder) Container(name, image string, privileged, required bool, extra ...config.Directive) *Builder {
	sec := config.Section{{Key: "Image", Values: []config.Scalar{config.Str(image)}}}
	sec = append(sec, extra...)
	b.m.Containers.Container[name] = config.Container{Privileged: privileged, Container: sec}
	if required {
		b.m.Activation.Required = append(b.m.Activation.Required, name)
	}
	return b
}

// Timeout sets activation.timeout_seconds.
func (b *Builder) Timeout(seconds int) *Builder { b.m.Activation.TimeoutSeconds = seconds; return b }

// Model returns the model as Parse would normalize it; it fails the test if it is invalid.
func (b *Builder) Model(t testing.TB) config.Model {
	t.Helper()
	m, r, err := config.Parse(config.Encode(b.m), config.Options{})
	if err != nil {
		t.Fatalf("configtest: built model is invalid: %v\n%s", err, r.String())
	}
	return m
}

// TOML returns the canonical config.toml of the model.
func (b *Builder) TOML(t testing.TB) []byte {
	t.Helper()
	return config.Encode(b.Model(t))
}

// FixtureDir is where the AtomixOS fixtures live, relative to the repository root.
const FixtureDir = "test/testdata/atomixos"

// Fixture reads a file of the AtomixOS compatibility fixtures, kept in the repository at
// test/testdata/atomixos (a copy of shared/fixtures/atomixos; CI checks they are equal).
// A missing fixture fails the test: they are the contract.
func Fixture(t testing.TB, name string) []byte {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("configtest: no go.mod above the test's directory")
		}
		dir = parent
	}
	b, err := os.ReadFile(filepath.Join(dir, FixtureDir, name))
	if err != nil {
		t.Fatalf("configtest: reading fixture: %v", err)
	}
	return b
}

// CaddyWithKey returns the caddy-oidc fixture with its <SSH_PUBLIC_KEY> placeholder
// replaced by key.
func CaddyWithKey(t testing.TB, key string) []byte {
	t.Helper()
	return []byte(strings.ReplaceAll(string(Fixture(t, "caddy-oidc.config.toml")), "<SSH_PUBLIC_KEY>", key))
}

// FixtureWithAdmin returns a fixture whose admin key is replaced by keyLine (a key the
// test holds the private half of).
func FixtureWithAdmin(t testing.TB, name, keyLine string) []byte {
	t.Helper()
	return []byte(strings.ReplaceAll(string(Fixture(t, name)), AdminKey, keyLine))
}
