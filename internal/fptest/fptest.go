// Package fptest holds the few helpers every fleetprov test suite shares: waiting for a
// condition without bare sleeps, and requiring an external tool, which fails under
// CI=true (a missing prerequisite is a failure there) and skips elsewhere.
package fptest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Need fails the test under CI=true, and skips it otherwise, when ok is false; what
// names the missing prerequisite and how to get it.
func Need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %s", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}

// RequireTool returns the path of the first of names found on PATH; if none is, the
// test fails under CI=true and skips otherwise. pkg names the Debian package to install.
func RequireTool(t testing.TB, pkg string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	Need(t, false, names[0]+" not found (Debian package "+pkg+")")
	return ""
}

// WaitFor polls cond until it holds, failing the test with what when timeout passes
// first. The timeout only bounds a hang: tests never pass or fail on timing.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// Eventually polls cond until it holds (true) or timeout passes (false), backing off
// from 10ms to 250ms between tries.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	wait := 10 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(wait*2, 250*time.Millisecond)
	}
}

// Buffer is a bytes.Buffer safe for concurrent writers (a logger shared with a worker's
// goroutines) and readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Cell returns a column of the row whose first field is key in a CLI's table output
// (whitespace-separated; col 1 is the second field, -1 the last), or "" without such a
// row.
func Cell(out, key string, col int) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == key {
			if col < 0 {
				col = len(f) + col
			}
			if col >= len(f) {
				return ""
			}
			return f[col]
		}
	}
	return ""
}
