package probe

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/internal/fptest"
)

func TestRealProbes(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "/", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(strings.Repeat("x", 100<<10)))
	}))
	defer srv.Close()
	status, body, err := Real{}.HTTP(ctx, srv.URL+"/")
	if err != nil || status != 503 || len(body) != maxBody {
		t.Errorf("HTTP() = %d, %d bytes, %v; want 503 and the body cut at %d", status, len(body), err, maxBody)
	}
	if status, _, _ := (Real{}).HTTP(ctx, srv.URL+"/redirect"); status != http.StatusFound {
		t.Errorf("HTTP(redirect) = %d; a redirect is reported, not followed", status)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	if err := (Real{}).TCP(ctx, addr); err != nil {
		t.Errorf("TCP(listening) = %v", err)
	}
	l.Close()
	if err := (Real{}).TCP(ctx, addr); err == nil {
		t.Error("TCP(closed port) succeeded")
	}
	code, out, err := Real{}.Exec(ctx, nil, "", []string{"sh", "-c", "echo not ready; exit 3"})
	if err != nil || code != 3 || strings.TrimSpace(out) != "not ready" {
		t.Errorf("Exec() = %d, %q, %v; want 3 and the output", code, out, err)
	}
	if _, _, err := (Real{}).Exec(ctx, nil, "", []string{"/nonexistent/check"}); err == nil {
		t.Error("Exec(missing command) gave no error")
	}
}

// TestExecProbeDoesNotWaitForLeftovers: a check that leaves a process holding its output
// open must still end, and what it left behind is killed with its process group.
func TestExecProbeDoesNotWaitForLeftovers(t *testing.T) {
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		code, out, _ := Real{}.Exec(context.Background(), nil, "", []string{"sh", "-c", "sleep 60 & echo $!; exit 4"})
		done <- result{code, out}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second): // a hang guard only: it ends about 2 s after the command exits
		t.Fatal("the exec probe waited for a process its command left behind")
	}
	if r.code != 4 {
		t.Errorf("exit code = %d; want 4", r.code)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(r.out))
	if err != nil {
		t.Fatalf("output %q: %v", r.out, err)
	}
	// Gone, or a zombie waiting for init to reap it: either way no longer running.
	fptest.WaitFor(t, 10*time.Second, "the left-behind sleep to be killed", func() bool {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		f := strings.Fields(string(stat))
		return len(f) > 2 && f[2] == "Z"
	})
}
