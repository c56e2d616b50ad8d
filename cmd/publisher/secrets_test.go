package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fleetprov/fleetprov/core/secrets"
)

func TestSecretFlags(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "db-password"), []byte("pw"), 0o600)
	os.WriteFile(filepath.Join(dir, ".hidden"), []byte("x"), 0o600)
	one := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(one, []byte("tok"), 0o600)
	sf := secretFlags{dir: dir, items: listFlag{"api-token=@" + one}}
	v, err := sf.values(strings.NewReader(""))
	if err != nil || string(v["db-password"]) != "pw" || string(v["api-token"]) != "tok" || len(v) != 2 {
		t.Fatalf("values = %v, %v", v, err)
	}

	// Refusals: a value on the command line (never echoed), a FIFO (must not hang), a
	// link (not followed), an oversized file, a bad name.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(one, link)
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, make([]byte, secrets.MaxValue+1), 0o600)
	for _, c := range []struct{ item, want string }{
		{"db=hunter2", "expected NAME=@FILE"},
		{"db=@" + fifo, "not a regular file"},
		{"db=@" + link, "--secret db: openat"},
		{"db=@" + big, "limit"},
		{"Bad/Name=@" + one, "invalid secret name"},
	} {
		_, err := (&secretFlags{items: listFlag{c.item}}).values(strings.NewReader(""))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("--secret %s: err = %v; want %q", c.item, err, c.want)
		}
	}
}

// TestSecretFlagsRefuseWhatWouldBeLostQuietly: a link in --secrets DIR would have been
// skipped (its secret keeping the old value, unsaid), and a second @- would have read an
// empty value from the standard input the first one drained.
func TestSecretFlagsRefuseWhatWouldBeLostQuietly(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(target, []byte("pw"), 0o600)
	os.Symlink(target, filepath.Join(dir, "db-password"))
	if _, err := (&secretFlags{dir: dir}).values(strings.NewReader("")); err == nil || !strings.Contains(err.Error(), "db-password is not a regular file") {
		t.Errorf("--secrets with a link: err = %v", err)
	}
	_, err := (&secretFlags{items: listFlag{"a=@-", "b=@-"}}).values(strings.NewReader("one"))
	if err == nil || !strings.Contains(err.Error(), "already the value of another secret") {
		t.Errorf("@- twice: err = %v", err)
	}
}
