package identity

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/internal/fptest"
)

func TestLoadOrCreate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", DefaultFile)
	s, created, err := LoadOrCreate(p, "fleetprov-device:d1")
	if err != nil || !created || s.PublicKey().Type() != "ssh-ed25519" {
		t.Fatalf("LoadOrCreate() = %v, %v, %v", s, created, err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode = %v; want 0600", st.Mode().Perm())
	}
	again, created, err := LoadOrCreate(p, "x")
	if err != nil || created || Fingerprint(again.PublicKey()) != Fingerprint(s.PublicKey()) {
		t.Errorf("second start made another key (%v, %v)", created, err)
	}
	// ssh-keygen reads it and agrees on the fingerprint.
	out, err := exec.Command(fptest.RequireTool(t, "openssh-client", "ssh-keygen"), "-l", "-f", p).CombinedOutput()
	if err != nil || !strings.Contains(string(out), Fingerprint(s.PublicKey())) {
		t.Errorf("ssh-keygen -l = %s, %v; want %s", out, err, Fingerprint(s.PublicKey()))
	}
	os.Chmod(p, 0o644)
	if _, err := Load(p); err == nil {
		t.Error("a key readable by others was loaded")
	}
}

func TestLoadHostKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ssh_host_ed25519_key")
	if out, err := exec.Command(fptest.RequireTool(t, "openssh-client", "ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", p).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	s, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(p + ".pub")
	if !strings.HasPrefix(string(pub), AuthorizedKey(s.PublicKey())) {
		t.Errorf("AuthorizedKey() = %s; want the host key %s", AuthorizedKey(s.PublicKey()), pub)
	}
}
