package system

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// Command prepares name with args to run as the app user acc (its uid, home and runtime
// dir, as its rootless Podman expects) or as the worker when acc is nil. The command runs
// in its own process group, killed whole when ctx ends.
func Command(ctx context.Context, acc *Account, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if acc != nil {
		runtimeDir := "/run/user/" + strconv.Itoa(acc.UID)
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + acc.Home,
			"USER=" + acc.Name, "XDG_RUNTIME_DIR=" + runtimeDir}
		cmd.Dir = acc.Home
		if os.Geteuid() == 0 && acc.UID != 0 {
			cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(acc.UID), Gid: uint32(acc.GID)}
		}
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// RunGroup runs a Command and then kills what is left of its process group: what a hook
// or a check started in the background must not outlive it.
func RunGroup(cmd *exec.Cmd) error {
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	return err
}
