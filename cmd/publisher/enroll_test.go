package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// --pubkey takes a key line of any type, or a file holding one (an ecdsa line was taken
// for a file name because it does not start with "ssh-").
func TestOfflineIdentityKeyTypes(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ssh.NewPublicKey(&k.PublicKey)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	file := filepath.Join(t.TempDir(), "id.pub")
	os.WriteFile(file, []byte(line+" dev\n"), 0o600)
	for _, in := range []string{line, file} {
		id, err := offlineIdentity("d1", in)
		if err != nil || id.Fingerprint != ssh.FingerprintSHA256(pub) {
			t.Errorf("--pubkey %.30s...: %+v, %v", in, id, err)
		}
	}
	if _, err := offlineIdentity("d1", "not a key"); err == nil || !strings.Contains(err.Error(), "neither a public key") {
		t.Errorf("--pubkey garbage = %v", err)
	}
}
