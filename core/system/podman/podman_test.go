package podman

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakePodman writes a podman stand-in that records its argv and stdin into dir, then runs
// body (shell).
func fakePodman(t *testing.T, body string) (bin, dir string) {
	t.Helper()
	dir = t.TempDir()
	bin = filepath.Join(dir, "podman")
	script := "#!/bin/sh\necho \"$@\" > " + dir + "/argv\ncat > " + dir + "/stdin\n" + body + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

// The value goes on stdin, never on the command line; the driver is pinned to file.
func TestPutValueOnStdin(t *testing.T) {
	bin, dir := fakePodman(t, "exit 0")
	if err := (Secrets{Podman: bin}).Put(t.Context(), nil, "db-password", []byte("hunter2")); err != nil {
		t.Fatal(err)
	}
	argv, _ := os.ReadFile(filepath.Join(dir, "argv"))
	stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
	if strings.Contains(string(argv), "hunter2") || string(stdin) != "hunter2" {
		t.Errorf("argv %q, stdin %q", argv, stdin)
	}
	if !strings.Contains(string(argv), "--driver file") || !strings.Contains(string(argv), "--replace") {
		t.Errorf("argv %q lacks --driver file / --replace", argv)
	}
}

// A podman that fails says which call and why, without the value.
func TestPutFailureNamesTheCall(t *testing.T) {
	bin, _ := fakePodman(t, "echo 'Error: lock held' >&2; exit 125")
	err := (Secrets{Podman: bin}).Put(t.Context(), nil, "db-password", []byte("hunter2"))
	if err == nil || !strings.Contains(err.Error(), "podman secret create db-password") || !strings.Contains(err.Error(), "lock held") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("err = %v", err)
	}
}

// A podman the app user stalled (a held store lock) does not hold the caller: the call
// is killed at its bound and reported.
func TestStalledPodmanIsBounded(t *testing.T) {
	bin, _ := fakePodman(t, "exec sleep 600")
	err := (Secrets{Podman: bin, Timeout: 200 * time.Millisecond}).Remove(t.Context(), nil, "db-password")
	if err == nil || !strings.Contains(err.Error(), "podman secret rm db-password") {
		t.Errorf("err = %v", err)
	}
}
