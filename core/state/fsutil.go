package state

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFileAtomic writes data to path durably: a temp file in the same directory is
// written, fsynced, closed, chmodded and renamed over path, then the directory is fsynced.
// Readers see the old content or the new, never a mix.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	root, err := os.OpenRoot(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("opening the directory of %s: %w", path, err)
	}
	defer root.Close()
	if err := WriteFileAtomicIn(root, filepath.Base(path), data, perm, -1, -1); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing dir %s: %w", dir, err)
	}
	return nil
}

// SyncTree fsyncs every regular file and directory below root, children before parents.
func SyncTree(root string) error {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, p)
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			serr := f.Sync()
			cerr := f.Close()
			if serr != nil {
				return serr
			}
			return cerr
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("syncing tree %s: %w", root, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := SyncDir(dirs[i]); err != nil {
			return err
		}
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// WriteFileAtomicIn is WriteFileAtomic through root: the temp file, the rename and the
// directory fsync all resolve inside root, so no symlink leads outside it. uid and gid,
// when not -1, own the file (set by descriptor before it is renamed into place).
func WriteFileAtomicIn(root *os.Root, name string, data []byte, perm fs.FileMode, uid, gid int) error {
	dir := filepath.Dir(name)
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(dir, "."+filepath.Base(name)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("creating temp file for %s: %w", name, err)
	}
	defer root.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if uid != -1 || gid != -1 {
		if err := f.Chown(uid, gid); err != nil {
			f.Close()
			return fmt.Errorf("setting owner of %s: %w", name, err)
		}
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("setting mode of %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", name, err)
	}
	if err := root.Rename(tmp, name); err != nil {
		return fmt.Errorf("renaming into %s: %w", name, err)
	}
	return SyncDirIn(root, dir)
}

// SyncDirIn fsyncs a directory inside root.
func SyncDirIn(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return fmt.Errorf("opening dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing dir: %w", err)
	}
	return nil
}

// ErrNotRegular is returned by OpenRegularIn for anything but a regular file.
var ErrNotRegular = errors.New("not a regular file")

// OpenRegularIn opens name inside root for reading only if it is a regular file: opened
// non-blocking, then checked by descriptor, so a FIFO or device someone else put there
// (the app user, in its own directories) cannot block the caller, and no link leads it
// out of root (os.Root resolves links itself, only inside root).
func OpenRegularIn(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	return openIn(root, name, false)
}

// ReadRegularIn reads at most limit bytes of name inside root, a regular file
// (OpenRegularIn).
func ReadRegularIn(root *os.Root, name string, limit int64) ([]byte, error) {
	f, _, err := OpenRegularIn(root, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

func openIn(root *os.Root, name string, dirOK bool) (*os.File, fs.FileInfo, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0) // os.Root ignores O_NOFOLLOW: links resolve inside root only
	if err != nil {
		return nil, nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !info.Mode().IsRegular() && !(dirOK && info.IsDir()) {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, ErrNotRegular)
	}
	return f, info, nil
}

// RegularFS is root as an fs.FS that opens only directories and regular files, never
// leaving root through a link (os.Root resolves links itself, only inside root) and never
// blocking on a FIFO: for walking a tree someone else (the app user) can change while it
// is read.
func RegularFS(root *os.Root) fs.FS { return regularFS{root} }

type regularFS struct{ root *os.Root }

func (r regularFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	f, _, err := openIn(r.root, name, true)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// ReadPrivate reads a secret file (a private key, a seed) that must be readable by its
// owner only: a file others may read is refused, by the mode of what was opened.
func ReadPrivate(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the %s: %w", what, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s is %v: it must be readable by its owner only", what, path, st.Mode().Perm())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("reading the %s: %w", what, err)
	}
	return b, nil
}
