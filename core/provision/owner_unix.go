package provision

import (
	"io/fs"
	"os"
	"syscall"
)

// keepOwner gives target the owner of info when running as root.
func keepOwner(target string, info fs.FileInfo) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return os.Lchown(target, int(st.Uid), int(st.Gid))
	}
	return nil
}
