package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
// open must still end (a hang guard only: it ends about 2 s after the command exits).
func TestExecProbeDoesNotWaitForLeftovers(t *testing.T) {
	done := make(chan int, 1)
	go func() {
		code, _, _ := Real{}.Exec(context.Background(), nil, "", []string{"sh", "-c", "sleep 60 & exit 4"})
		done <- code
	}()
	select {
	case code := <-done:
		if code != 4 {
			t.Errorf("exit code = %d; want 4", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the exec probe waited for a process its command left behind")
	}
}
