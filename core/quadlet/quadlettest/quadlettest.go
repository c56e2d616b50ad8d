// Package quadlettest runs Podman's own Quadlet generator as an oracle over rendered
// units. Under CI=true a missing generator fails the test; elsewhere it skips with the
// reason.
package quadlettest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Generator returns the path of podman's quadlet binary (podman >= 5), from $QUADLET_BIN
// or /usr/libexec/podman/quadlet.
func Generator(t testing.TB) string {
	t.Helper()
	p := os.Getenv("QUADLET_BIN")
	if p == "" {
		p = "/usr/libexec/podman/quadlet"
	}
	out, err := exec.Command(p, "-version").Output()
	if err == nil && regexp.MustCompile(`^[5-9]\.`).Match(out) {
		return p
	}
	msg := "podman's quadlet generator (>= 5) not found at " + p + "; run test/install-prereqs as root"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// DryRun runs the generator over dir and returns the generated services by name. Any
// "converting" error, or a failing exit, fails the test.
func DryRun(t testing.TB, dir string, user bool) map[string]string {
	t.Helper()
	gen := Generator(t)
	args := []string{"-dryrun"}
	if user {
		args = append(args, "-user")
	}
	cmd := exec.Command(gen, args...)
	cmd.Env = append(os.Environ(), "QUADLET_UNIT_DIRS="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil || strings.Contains(stderr.String(), "converting") || strings.Contains(stderr.String(), "rror") {
		t.Fatalf("quadlet -dryrun over %s: %v\n%s", dir, err, stderr.String())
	}
	out := map[string]string{}
	var name string
	for _, line := range strings.SplitAfter(stdout.String(), "\n") {
		if strings.HasPrefix(line, "---") && strings.HasSuffix(strings.TrimSpace(line), "---") {
			name = strings.Trim(strings.TrimSpace(line), "-")
			continue
		}
		if name != "" {
			out[name] += line
		}
	}
	return out
}

// WriteUnits writes name -> content files into a fresh temp dir and returns it.
func WriteUnits(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
