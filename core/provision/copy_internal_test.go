package provision

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fleetprov/fleetprov/core/bundle"
)

// TestCopyTreeBounded: the active files/ tree may hold what the app user put there; a
// sparse file grown past the bundle limits must not be copied densely onto the disk, and
// links and FIFOs are not copied (nor do they block).
func TestCopyTreeBounded(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "files")
	os.WriteFile(filepath.Join(src, "ok"), []byte("content"), 0o600)
	os.Symlink("/etc/passwd", filepath.Join(src, "link"))
	if err := syscall.Mkfifo(filepath.Join(src, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := copyTree(src, dst, bundle.Limits{}.WithDefaults()); err != nil {
		t.Fatalf("copyTree() = %v", err)
	}
	entries, _ := os.ReadDir(dst)
	if len(entries) != 1 || entries[0].Name() != "ok" {
		t.Errorf("copied %v; want only the regular file", entries)
	}
	f, _ := os.Create(filepath.Join(src, "sparse"))
	f.Truncate(1 << 30) // 1 GiB, a few KB on disk
	f.Close()
	err := copyTree(src, filepath.Join(t.TempDir(), "files"), bundle.Limits{}.WithDefaults())
	if !errors.Is(err, bundle.ErrTooLarge) {
		t.Errorf("copyTree(1 GiB sparse file) = %v; want ErrTooLarge", err)
	}
}
