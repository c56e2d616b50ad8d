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

// fuzzRoutes are the bridge's routes as a fuzzer reaches them (method, path).
var fuzzRoutes = []struct{ method, path string }{
	{"GET", "/api/health"}, {"GET", "/api/nonce"}, {"POST", "/api/config"}, {"POST", "/api/validate"},
	{"GET", "/api/config/current"}, {"GET", "/api/config/export?format=toml"}, {"PUT", "/api/config/users/bob"},
	{"DELETE", "/api/config/users/admin"}, {"PATCH", "/api/config/network"}, {"PUT", "/api/config/containers/x"},
	{"DELETE", "/api/config/containers/edgeproxy"}, {"PATCH", "/api/config/activation"}, {"POST", "/api/envelopes"},
	{"GET", "/api/jobs/x"}, {"GET", "/api/jobs/x/events"}, {"GET", "/"}, {"POST", "/apply"}, {"GET", "/metrics"},
	{"PUT", "/api/config/container-networks/n"}, {"DELETE", "/api/config/container-volumes/v"},
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

	f.Add(uint8(2), cfg, "", "", "", "")
	f.Add(uint8(12), []byte(`{"v":1,"id":"x","op":"apply"}`), "", "c2ln", "", "")
	f.Add(uint8(6), []byte(`{"isAdmin":true,"ssh_key":"ssh-ed25519 AAAA"}`), "nonce", "AAAA", "http://evil", "evil.example")
	f.Add(uint8(16), []byte("--x\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nversion = 1\r\n--x--\r\n"), "", "", "", "")
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
