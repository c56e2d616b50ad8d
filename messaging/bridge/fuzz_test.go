package bridge_test

import (
	"bytes"
	"crypto/sha256"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/messaging/bridge"
	"github.com/fleetprov/fleetprov/messaging/device"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// fuzzRoutes are the bridge's routes as a fuzzer reaches them (method, path), made from
// its own list: a route added later is fuzzed too.
var fuzzRoutes = func() []struct{ method, path string } {
	fill := strings.NewReplacer("{id}", "x", "{$}", "")
	var out []struct{ method, path string }
	for _, p := range bridge.RoutePatterns() {
		method, path, _ := strings.Cut(p, " ")
		name := "x"
		switch {
		case strings.HasPrefix(path, "/api/config/users/"):
			name = "admin" // the active config's admin: a removal that must not happen
		case strings.HasPrefix(path, "/api/config/containers/"):
			name = "edgeproxy"
		}
		out = append(out, struct{ method, path string }{method, strings.ReplaceAll(fill.Replace(path), "{name}", name)})
	}
	return out
}()

// routeIndex is the fuzz input that reaches route "METHOD /path".
func routeIndex(f *testing.F, route string) uint8 {
	for i, rt := range fuzzRoutes {
		if rt.method+" "+rt.path == route {
			return uint8(i)
		}
	}
	f.Fatalf("no route %s", route)
	return 0
}

// FuzzHTTPRoutes sends every route random bodies and headers on a provisioned device:
// nothing may panic, and without a valid signature (which a fuzzer cannot make) the
// active config stays byte-identical and no job starts.
func FuzzHTTPRoutes(f *testing.F) {
	_, line := configtest.NewKey(f)
	cfg := configtest.FixtureWithAdmin(f, "vm-full.config.toml", line)
	dev := provisiontest.New(f)
	dev.Provision(f, cfg)
	jm, err := jobs.New(jobs.Options{Dir: filepath.Join(dev.StateDir, "jobs")})
	if err != nil {
		f.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	svc := device.New(device.Options{Fleet: "f", Device: "d1", Prov: dev.Prov, Jobs: jm, Trust: &auth.Trust{State: dev.Prov.State()},
		Replay: &auth.ReplayGuard{Dir: filepath.Join(dev.StateDir, "replay")}, Logger: log})
	f.Cleanup(svc.Close)
	nonces := &auth.Nonces{}
	h := bridge.New(bridge.Options{Service: svc, Nonces: nonces, SpoolDir: f.TempDir(), MaxBody: 1 << 20, Logger: log}).Handler()
	active := filepath.Join(dev.StateDir, "config", "config.toml")
	want := sha256.Sum256(cfg)

	f.Add(routeIndex(f, "POST /api/config"), cfg, "", "", "", "")
	f.Add(routeIndex(f, "POST /api/envelopes"), []byte(`{"v":1,"id":"x","op":"apply"}`), "", "c2ln", "", "")
	f.Add(routeIndex(f, "PUT /api/config/users/admin"), []byte(`{"isAdmin":true,"ssh_key":"ssh-ed25519 AAAA"}`), "nonce", "AAAA", "http://evil", "evil.example")
	f.Add(routeIndex(f, "POST /apply"), []byte("--x\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nversion = 1\r\n--x--\r\n"), "", "", "", "")
	f.Fuzz(func(t *testing.T, route uint8, body []byte, nonce, sig, origin, host string) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		if nonce == "nonce" {
			nonce, _ = nonces.Issue("192.0.2.1") // a real nonce, so the signature check runs
		}
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		req.RemoteAddr = "192.0.2.1:1234"
		for k, v := range map[string]string{bridge.NonceHeader: nonce, bridge.SignatureHeader: sig, "Origin": origin,
			envelope.SignatureHeader: sig, wire.FirstBootHeader: nonce} {
			if v != "" && !strings.ContainsAny(v, "\r\n\x00") {
				req.Header.Set(k, v)
			}
		}
		if strings.HasPrefix(string(body), "--x") {
			req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
		}
		if host != "" && !strings.ContainsAny(host, "\r\n\x00 ") {
			req.Host = host
		}
		if rt.path == "/api/jobs/x/events" {
			return // streams until the job ends; covered by the bridge tests
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusAccepted || rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s = %d %s: accepted or failed without a valid signature", rt.method, rt.path, rec.Code, rec.Body)
		}
		if got, err := os.ReadFile(active); err != nil || sha256.Sum256(got) != want {
			t.Fatalf("%s %s changed the active config", rt.method, rt.path)
		}
		if len(jm.List()) != 0 {
			t.Fatalf("%s %s started a job", rt.method, rt.path)
		}
	})
}
