package state

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRegularFS: what a tree's owner can swap in while it is read — a link out of the
// root (to a key, say), a FIFO — is refused at open, without escaping or blocking; a link
// to a file inside the root reads that file (os.Root resolves it, and it is the owner's
// own data); regular files and directories read as usual.
func TestRegularFS(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "identity_ed25519")
	os.WriteFile(secret, []byte("PRIVATE KEY"), 0o600)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "ok.txt"), []byte("ok"), 0o644)
	os.Symlink(secret, filepath.Join(dir, "out"))
	os.Symlink("sub/ok.txt", filepath.Join(dir, "in"))
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	fsys := RegularFS(root)
	b, err := fs.ReadFile(fsys, "sub/ok.txt")
	if err != nil || string(b) != "ok" {
		t.Fatalf("regular file = %q, %v", b, err)
	}
	if entries, err := fs.ReadDir(fsys, "."); err != nil || len(entries) != 4 {
		t.Fatalf("ReadDir = %v, %v", entries, err)
	}
	if b, err := fs.ReadFile(fsys, "in"); err != nil || string(b) != "ok" {
		t.Errorf("link inside the root = %q, %v", b, err)
	}
	for _, name := range []string{"out", "fifo"} {
		f, err := fsys.Open(name)
		if err == nil {
			got, _ := io.ReadAll(f)
			f.Close()
			t.Errorf("Open(%s) succeeded and read %q", name, got)
		}
	}
	if _, err := fsys.Open("fifo"); !errors.Is(err, ErrNotRegular) {
		t.Errorf("Open(fifo) = %v; want ErrNotRegular", err)
	}
}
