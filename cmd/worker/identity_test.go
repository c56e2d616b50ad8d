package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/quadlet"
	"github.com/fleetprov/fleetprov/core/secrets"
	"github.com/fleetprov/fleetprov/core/state"
	"github.com/fleetprov/fleetprov/core/system/simulate"
)

// TestLocalCommandsUseTheIdentityKeyFlag: a device whose identity key lives outside the
// state dir (--identity-key, an SSH host key say) holds secrets; the local commands open
// them with the same flag serve uses, and without it say which key they lack.
func TestLocalCommandsUseTheIdentityKeyFlag(t *testing.T) {
	root := t.TempDir()
	e := crashEnv{root: root, state: filepath.Join(root, "state"), quadlet: filepath.Join(root, "quadlet")}
	key := filepath.Join(root, "keys", "host_ed25519")
	signer, _, err := identity.LoadOrCreate(key, "test")
	if err != nil {
		t.Fatal(err)
	}
	p := provision.New(provision.Options{State: state.Dir{Root: e.state}, Backend: simulate.New(simulate.Options{}).Backend(),
		Quadlet: quadlet.Dirs{Rootful: e.quadlet, Rootless: filepath.Join(root, "rootless")}, IdentityKey: key})
	r, _ := secrets.Recipient(signer.PublicKey())
	sealed, _ := secrets.Seal(secrets.Values{"tok": []byte("v")}, r)
	cfg := fmt.Sprintf(`version = 1
[users.admin]
isAdmin = true
ssh_key = %q
[activation]
required = ["web"]
[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "localhost/web:latest"
Secret = ["tok"]
[secrets.tok]
`, configtest.AdminKey)
	if _, err := p.Apply(context.Background(), provision.Input{Reader: bytes.NewReader([]byte(cfg)), Secrets: sealed}, nil); err != nil {
		t.Fatal(err)
	}
	if code, out := e.worker(t, "sync-quadlet", "--identity-key", key); code != 0 {
		t.Errorf("sync-quadlet --identity-key = %d\n%s", code, out)
	}
	if code, out := e.worker(t, "sync-quadlet"); code == 0 || !strings.Contains(out, "identity key") {
		t.Errorf("sync-quadlet without the key = %d; want a failure naming the identity key\n%s", code, out)
	}
}

// An unknown hub link compression is a usage error naming the modes, before anything starts.
func TestServeRefusesUnknownHubCompression(t *testing.T) {
	root := t.TempDir()
	e := crashEnv{root: root, state: filepath.Join(root, "state"), quadlet: filepath.Join(root, "quadlet")}
	code, out := e.worker(t, "serve", "--device-id", "d1", "--hub", "nats-leaf://127.0.0.1:1", "--hub-compression", "zstd",
		"--http", "", "--nats-listen", "")
	if code != 2 || !strings.Contains(out, `--hub-compression "zstd"`) || !strings.Contains(out, "s2_auto") {
		t.Errorf("serve --hub-compression zstd = %d; want 2 naming the modes\n%s", code, out)
	}
}
