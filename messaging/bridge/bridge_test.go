package bridge_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/jobs"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/bridge"
	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
	"github.com/fleetprov/fleetprov/messaging/device"
	"github.com/fleetprov/fleetprov/messaging/devicenats"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

type rig struct {
	t      *testing.T
	dev    *provisiontest.Device
	jobs   *jobs.Manager
	srv    *httptest.Server
	admin  ssh.Signer
	line   string
	cfg    []byte
	now    time.Time
	client *fleet.Client
}

func newRig(t *testing.T, maxBody int64) *rig {
	t.Helper()
	return newRigWith(t, maxBody, provisiontest.New(t))
}

// newRigWith serves dev (e.g. provisiontest.NewWithHost, for host settings).
func newRigWith(t *testing.T, maxBody int64, dev *provisiontest.Device) *rig {
	t.Helper()
	admin, line := configtest.NewKey(t)
	r := &rig{t: t, dev: dev, admin: admin, line: line, now: time.Now()}
	r.cfg = configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	var err error
	metrics := bridge.NewMetrics(nil)
	r.jobs, err = jobs.New(jobs.Options{Dir: filepath.Join(r.dev.StateDir, "jobs"), OnFinish: metrics.JobFinished})
	if err != nil {
		t.Fatal(err)
	}
	_, nc := brokertest.Start(t)
	trust := &auth.Trust{State: r.dev.Prov.State()}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	svc := device.New(device.Options{Fleet: "f", Device: "d1", Version: "test", Prov: r.dev.Prov, Jobs: r.jobs, Trust: trust,
		Replay: &auth.ReplayGuard{Dir: filepath.Join(r.dev.StateDir, "replay")}, Logger: log,
		Payloads: devicenats.Blobs{Conn: nc, Fleet: "f", Device: "d1"}})
	t.Cleanup(svc.Close)
	ad := devicenats.New(devicenats.Options{Conn: nc, Service: svc, HeartbeatInterval: time.Hour, Logger: log})
	if err := ad.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ad.Stop)
	nonces := &auth.Nonces{Now: func() time.Time { return r.now }}
	s := bridge.New(bridge.Options{Service: svc, Nonces: nonces, MaxBody: maxBody, Metrics: metrics, Logger: log})
	r.srv = httptest.NewServer(s.Handler())
	t.Cleanup(r.srv.Close)
	r.client, _ = fleet.New(nc, "f", fleet.WithSigner(admin))
	return r
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r *rig) do(method, path string, body []byte, hdr map[string]string) resp {
	r.t.Helper()
	req, _ := http.NewRequest(method, r.srv.URL+path, bytes.NewReader(body))
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

func (r *rig) nonce() string {
	var n struct{ Nonce string }
	json.Unmarshal(r.do("GET", "/api/nonce", nil, nil).body, &n)
	return n.Nonce
}

// signed sends a request signed by s; signMethod/signPath/signBody may differ from what
// is sent, to test tampering.
func (r *rig) signed(s ssh.Signer, method, path string, body []byte, tamper func(m, p *string, b *[]byte)) resp {
	r.t.Helper()
	nonce := r.nonce()
	sm, sp, sb := method, strings.SplitN(path, "?", 2)[0], body
	if tamper != nil {
		tamper(&sm, &sp, &sb)
	}
	sig, err := auth.Sign(bridge.SigningMessage(sm, sp, nonce, sb), s, auth.NamespaceHTTP)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.do(method, path, body, map[string]string{bridge.NonceHeader: nonce, bridge.SignatureHeader: base64.StdEncoding.EncodeToString(sig)})
}

func (r *rig) wait(res resp) record.Job {
	r.t.Helper()
	var sub struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal(res.body, &sub); err != nil || sub.JobID == "" {
		r.t.Fatalf("no job in %d %s", res.status, res.body)
	}
	j, err := r.jobs.Wait(context.Background(), sub.JobID)
	if err != nil {
		r.t.Fatal(err)
	}
	return j
}

func (r *rig) provision() {
	r.t.Helper()
	res := r.do("POST", "/api/config", r.cfg, firstBoot)
	if res.status != http.StatusAccepted || !strings.HasPrefix(res.header.Get("Location"), "/api/jobs/") {
		r.t.Fatalf("first-boot POST /api/config = %d %s", res.status, res.body)
	}
	if j := r.wait(res); j.State != record.Succeeded {
		r.t.Fatalf("job = %+v", j)
	}
}

func TestFirstBootAndSignedRoutes(t *testing.T) {
	r := newRig(t, 0)
	if res := r.do("GET", "/api/health", nil, nil); res.status != 200 || !strings.Contains(string(res.body), `"provisioned": false`) {
		t.Fatalf("health = %d %s", res.status, res.body)
	}
	if res := r.do("GET", "/", nil, nil); res.status != 200 {
		t.Errorf("Boot UI before provisioning = %d", res.status)
	}
	r.provision()
	if res := r.do("GET", "/", nil, nil); res.status != 404 {
		t.Errorf("Boot UI after provisioning = %d; want 404", res.status)
	}
	if res := r.do("POST", "/api/config", r.cfg, firstBoot); res.status != 401 {
		t.Errorf("unsigned apply after provisioning = %d; want 401", res.status)
	}
	if res := r.signed(r.admin, "POST", "/api/config", r.cfg, nil); res.status != 202 || r.wait(res).State != record.Succeeded {
		t.Errorf("signed apply = %d %s", res.status, res.body)
	}
	if res := r.signed(r.admin, "POST", "/api/validate", r.cfg, nil); res.status != 200 || !strings.Contains(string(res.body), `"ok": true`) {
		t.Errorf("validate = %d %s", res.status, res.body)
	}
	bad := configtest.Fixture(t, "vm-invalid-unknown-required-unit.config.toml")
	if res := r.signed(r.admin, "POST", "/api/validate", bad, nil); res.status != 400 || !strings.Contains(string(res.body), "activation.required references unknown unit: missing-service") {
		t.Errorf("validate(invalid) = %d %s", res.status, res.body)
	}
	if res := r.signed(r.admin, "GET", "/api/config/current", nil, nil); res.status != 200 || !strings.Contains(string(res.body), `"drift": []`) {
		t.Errorf("current = %d %s", res.status, res.body)
	}
	exp := r.signed(r.admin, "GET", "/api/config/export", nil, nil)
	if exp.status != 200 || !bytes.HasPrefix(exp.body, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		t.Errorf("export = %d %q", exp.status, exp.body[:min(8, len(exp.body))])
	}
	if res := r.signed(r.admin, "GET", "/api/config/export?format=toml", nil, nil); res.status != 200 || !bytes.Equal(res.body, r.cfg) {
		t.Errorf("export toml = %d", res.status)
	}
	if res := r.signed(r.admin, "GET", "/api/config/export?format=zip", nil, nil); res.status != 400 {
		t.Errorf("export zip = %d", res.status)
	}
	// Export then re-apply: the active state is byte-identical.
	before := provisiontest.Tree(t, filepath.Join(r.dev.StateDir, "config"))
	if res := r.signed(r.admin, "POST", "/api/config", exp.body, nil); res.status != 202 || r.wait(res).State != record.Succeeded {
		t.Fatalf("re-apply export = %d %s", res.status, res.body)
	}
	if after := provisiontest.Tree(t, filepath.Join(r.dev.StateDir, "config")); after != before {
		t.Errorf("export + re-apply changed the active state")
	}
	// Jobs and SSE need no signature.
	j := r.jobs.List()[0]
	if res := r.do("GET", "/api/jobs/"+j.ID, nil, nil); res.status != 200 {
		t.Errorf("job = %d", res.status)
	}
	if res := r.do("GET", "/api/jobs/nope", nil, nil); res.status != 404 || !strings.Contains(string(res.body), `"error": "job not found"`) {
		t.Errorf("missing job = %d %s", res.status, res.body)
	}
	if res := r.do("GET", "/metrics", nil, nil); res.status != 200 || !strings.Contains(string(res.body), `fleetprov_jobs_total{op="apply",state="succeeded"} 3`) {
		t.Errorf("metrics = %d %s", res.status, res.body)
	}
}

func TestPartialUpdates(t *testing.T) {
	r := newRig(t, 0)
	r.provision()
	_, bob := configtest.NewKey(t)
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string // in the 400 body
	}{
		{"put_user", "PUT", "/api/config/users/bob", `{"isAdmin":false,"ssh_key":"` + bob + `"}`, 202, ""},
		{"put_user_wrong_shape", "PUT", "/api/config/users/bob", `{"isAdmin":"no","colour":1}`, 400, "users.bob.colour"},
		{"put_user_not_json", "PUT", "/api/config/users/bob", `isAdmin=true`, 400, "JSON"},
		{"delete_user", "DELETE", "/api/config/users/guest", ``, 202, ""},
		{"delete_missing_user", "DELETE", "/api/config/users/nobody-here", ``, 400, "does not exist"},
		{"patch_network", "PATCH", "/api/config/network", `{"ntp":{"servers":["pool.ntp.org"]},"dnsmasq":{"domain":"edge"}}`, 202, ""},
		{"patch_network_invalid", "PATCH", "/api/config/network", `{"firewall":{"inbound":{"wan":{"tcp":[8080]}}},"ntp":{"servers":["a b"]}}`, 400, "network.ntp.servers[0]"},
		{"put_container", "PUT", "/api/config/containers/extra", `{"privileged":true,"Container":{"Image":"docker.io/library/busybox:latest"}}`, 202, ""},
		{"put_container_missing_image", "PUT", "/api/config/containers/extra", `{"privileged":true,"Container":{}}`, 400, "Image"},
		{"put_network", "PUT", "/api/config/container-networks/lan", `{"Network":{"Subnet":"10.90.0.0/24"}}`, 202, ""},
		{"put_volume", "PUT", "/api/config/container-volumes/data", `{"Volume":{"Driver":"local"}}`, 202, ""},
		{"put_build", "PUT", "/api/config/container-builds/img", `{"Build":{"ImageTag":"localhost/img:latest","File":"${FILES_DIR}/Containerfile"}}`, 202, ""},
		{"put_build_escape", "PUT", "/api/config/container-builds/img", `{"Build":{"File":"${FILES_DIR}/../../x"}}`, 400, "leaves its root"},
		{"delete_build", "DELETE", "/api/config/container-builds/img", ``, 202, ""},
		{"delete_volume", "DELETE", "/api/config/container-volumes/data", ``, 202, ""},
		{"delete_network", "DELETE", "/api/config/container-networks/lan", ``, 202, ""},
		{"delete_container_drops_from_activation", "DELETE", "/api/config/containers/myapp", ``, 202, ""},
		{"patch_activation", "PATCH", "/api/config/activation", `{"timeout_seconds":90,"allow_degraded":null}`, 202, ""},
		{"patch_activation_unknown_unit", "PATCH", "/api/config/activation", `{"required":["ghost"]}`, 400, "references unknown unit: ghost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := provisiontest.Tree(t, filepath.Join(r.dev.StateDir, "config"))
			res := r.signed(r.admin, tc.method, tc.path, []byte(tc.body), nil)
			if res.status != tc.status {
				t.Fatalf("%s %s = %d %s; want %d", tc.method, tc.path, res.status, res.body, tc.status)
			}
			if tc.status == 202 {
				if j := r.wait(res); j.State != record.Succeeded {
					t.Fatalf("job = %+v", j)
				}
				return
			}
			if !strings.Contains(string(res.body), tc.want) {
				t.Errorf("400 body lacks %q: %s", tc.want, res.body)
			}
			if after := provisiontest.Tree(t, filepath.Join(r.dev.StateDir, "config")); after != before {
				t.Errorf("a refused patch changed the state")
			}
		})
	}
	m, _ := r.dev.Prov.ActiveModel()
	if _, ok := m.Containers.Container["myapp"]; ok || len(m.Activation.Required) != 1 || m.Activation.TimeoutSeconds != 90 || m.Network.Dnsmasq.Domain != "edge" {
		t.Errorf("final model: containers %v required %v timeout %d", m.Containers.Container, m.Activation.Required, m.Activation.TimeoutSeconds)
	}
}

func TestSignedRequestRejections(t *testing.T) {
	r := newRig(t, 64<<10)
	r.provision()
	stranger, _ := configtest.NewKey(t)
	before := provisiontest.Tree(t, filepath.Join(r.dev.StateDir, "config"))
	check := func(name string, res resp, want int) {
		t.Helper()
		if res.status != want {
			t.Errorf("%s = %d %s; want %d", name, res.status, res.body, want)
		}
	}
	// A nonce is single use: replaying one signed request fails.
	nonce := r.nonce()
	sig, _ := auth.Sign(bridge.SigningMessage("GET", "/api/config/current", nonce, nil), r.admin, auth.NamespaceHTTP)
	hdr := map[string]string{bridge.NonceHeader: nonce, bridge.SignatureHeader: base64.StdEncoding.EncodeToString(sig)}
	check("first use", r.do("GET", "/api/config/current", nil, hdr), 200)
	check("replayed_nonce", r.do("GET", "/api/config/current", nil, hdr), 401)
	// Expired nonce.
	nonce = r.nonce()
	sig, _ = auth.Sign(bridge.SigningMessage("GET", "/api/config/current", nonce, nil), r.admin, auth.NamespaceHTTP)
	r.now = r.now.Add(301 * time.Second)
	check("expired_nonce", r.do("GET", "/api/config/current", nil, map[string]string{bridge.NonceHeader: nonce, bridge.SignatureHeader: base64.StdEncoding.EncodeToString(sig)}), 401)
	check("unknown_nonce", r.do("GET", "/api/config/current", nil, map[string]string{bridge.NonceHeader: "made-up", bridge.SignatureHeader: "x"}), 401)
	check("nonce_signed_for_another_route", r.signed(r.admin, "POST", "/api/config", r.cfg, func(m, p *string, b *[]byte) { *p = "/api/validate" }), 401)
	check("wrong_method_signed", r.signed(r.admin, "DELETE", "/api/config/users/guest", nil, func(m, p *string, b *[]byte) { *m = "PUT" }), 401)
	check("tampered_body", r.signed(r.admin, "POST", "/api/config", r.cfg, func(m, p *string, b *[]byte) { *b = []byte("version = 1\n") }), 401)
	check("wrong_key", r.signed(stranger, "POST", "/api/config", r.cfg, nil), 401)
	check("missing_signature", r.do("GET", "/api/config/current", nil, nil), 401)
	check("wrong_namespace", func() resp {
		n := r.nonce()
		s, _ := auth.Sign(bridge.SigningMessage("GET", "/api/config/current", n, nil), r.admin, auth.NamespaceEnvelope)
		return r.do("GET", "/api/config/current", nil, map[string]string{bridge.NonceHeader: n, bridge.SignatureHeader: base64.StdEncoding.EncodeToString(s)})
	}(), 401)
	check("too_large", r.signed(r.admin, "POST", "/api/config", bytes.Repeat([]byte("#"), 65<<10), nil), 413)
	if after := provisiontest.Tree(t, filepath.Join(r.dev.StateDir, "config")); after != before {
		t.Errorf("a refused request changed the state")
	}
	// Signers present but unreadable: fail closed, never fall back to the first-boot bypass.
	os.Remove(filepath.Join(r.dev.StateDir, "config", "allowed_signers"))
	check("signers_unreadable_signed", r.signed(r.admin, "GET", "/api/config/current", nil, nil), 401)
	check("signers_unreadable_unsigned", r.do("POST", "/api/config", r.cfg, firstBoot), 401)
}

func TestBusyAndPolicy(t *testing.T) {
	r := newRig(t, 0)
	slow := bytes.Replace(r.cfg, []byte(`required = ["edgeproxy", "myapp"]`), []byte("required = [\"edgeproxy\", \"myapp\"]\nsettle_seconds = 2"), 1)
	first := r.do("POST", "/api/config", slow, firstBoot)
	if first.status != 202 {
		t.Fatalf("apply = %d", first.status)
	}
	if res := r.do("POST", "/api/config", slow, firstBoot); res.status != 409 {
		t.Errorf("second apply while busy = %d %s; want 409", res.status, res.body)
	}
	r.wait(first)
	// [fleet.signers] narrows the admin: validate only.
	narrowed := append(append([]byte{}, r.cfg...), []byte("\n[fleet.signers.admin]\nops = [\"validate\"]\n")...)
	if res := r.signed(r.admin, "POST", "/api/config", narrowed, nil); res.status != 202 || r.wait(res).State != record.Succeeded {
		t.Fatalf("apply narrowed = %d %s", res.status, res.body)
	}
	if res := r.signed(r.admin, "POST", "/api/config", r.cfg, nil); res.status != 403 {
		t.Errorf("apply by a validate-only signer = %d %s; want 403", res.status, res.body)
	}
	if res := r.signed(r.admin, "POST", "/api/validate", r.cfg, nil); res.status != 200 {
		t.Errorf("validate by a validate-only signer = %d", res.status)
	}
}

func TestSSHKeygenSignedRequest(t *testing.T) {
	bin := fptest.RequireTool(t, "openssh-client", "ssh-keygen")
	r := newRig(t, 0)
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	if out, err := exec.Command(bin, "-q", "-t", "ecdsa", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	pub, _ := os.ReadFile(key + ".pub")
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", strings.TrimSpace(string(pub)))
	r.cfg = cfg
	r.provision()
	nonce := r.nonce()
	msgFile := filepath.Join(dir, "msg")
	os.WriteFile(msgFile, bridge.SigningMessage("GET", "/api/config/current", nonce, nil), 0o600)
	if out, err := exec.Command(bin, "-Y", "sign", "-f", key, "-n", auth.NamespaceHTTP, msgFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v %s", err, out)
	}
	sig, _ := os.ReadFile(msgFile + ".sig")
	res := r.do("GET", "/api/config/current", nil, map[string]string{bridge.NonceHeader: nonce, bridge.SignatureHeader: base64.StdEncoding.EncodeToString(sig)})
	if res.status != 200 {
		t.Errorf("ssh-keygen-signed request = %d %s", res.status, res.body)
	}
}

func TestEnvelopesOverHTTPAndSSE(t *testing.T) {
	r := newRig(t, 0)
	env := r.client.NewEnvelope("apply", "d1", "", fleet.Payload{Data: r.cfg, ContentType: envelope.TypeTOML})
	env.Payload = r.cfg
	raw, _ := env.Encode()
	sig, _ := envelope.Sign(raw, r.admin)
	res := r.do("POST", "/api/envelopes", raw, map[string]string{envelope.SignatureHeader: sig, wire.FirstBootHeader: "1"})
	if res.status != 202 {
		t.Fatalf("POST /api/envelopes = %d %s", res.status, res.body)
	}
	// SSE: every event, then `event: done` with the final record.
	resp, err := http.Get(r.srv.URL + "/api/jobs/" + env.ID + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %s", ct)
	}
	var steps []string
	var done bool
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var v map[string]any
			json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &v)
			if event == "done" {
				done = v["state"] == "succeeded"
			} else if s, ok := v["step"].(string); ok {
				steps = append(steps, s)
			}
			event = ""
		}
		if done {
			break
		}
	}
	if !done || len(steps) < 10 || steps[len(steps)-1] != "completed" {
		t.Errorf("SSE steps = %v done = %v", steps, done)
	}
	// The same envelope again is a replay; one for another device is refused.
	if res := r.do("POST", "/api/envelopes", raw, map[string]string{envelope.SignatureHeader: sig, wire.FirstBootHeader: "1"}); res.status != 401 || !strings.Contains(string(res.body), "replayed") {
		t.Errorf("replayed envelope = %d %s", res.status, res.body)
	}
	other := r.client.NewEnvelope("validate", "d2", "", fleet.Payload{Data: r.cfg, ContentType: envelope.TypeTOML})
	other.Payload = r.cfg
	oraw, _ := other.Encode()
	osig, _ := envelope.Sign(oraw, r.admin)
	if res := r.do("POST", "/api/envelopes", oraw, map[string]string{envelope.SignatureHeader: osig}); res.status != 403 {
		t.Errorf("envelope for another device = %d %s", res.status, res.body)
	}
}

func TestBootUIGuards(t *testing.T) {
	r := newRig(t, 0)
	page := r.do("GET", "/", nil, nil)
	if page.status != 200 || !strings.Contains(page.header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("GET / = %d", page.status)
	}
	if res := r.do("GET", "/", nil, map[string]string{"Host": "evil.example"}); res.status != 403 {
		t.Errorf("rebinding host = %d; want 403", res.status)
	}
	form := r.uiForm
	token := csrfToken(page)
	cookie := map[string]string{"Cookie": "fleetprov_csrf=" + token}
	if res := form("", string(r.cfg), cookie); res.status != 403 {
		t.Errorf("no form token = %d", res.status)
	}
	if res := form("forged", string(r.cfg), cookie); res.status != 403 {
		t.Errorf("wrong form token = %d", res.status)
	}
	if res := form(token, string(r.cfg), map[string]string{"Cookie": cookie["Cookie"], "Origin": "http://evil.example"}); res.status != 403 {
		t.Errorf("cross-origin post = %d", res.status)
	}
	if res := form(token, "version = 1\n[users.<b>x</b>]\n", cookie); res.status != 400 || strings.Contains(string(res.body), "<b>x</b>") || !strings.Contains(string(res.body), "&lt;b&gt;") {
		t.Errorf("invalid config via the form = %d; its text must come back escaped", res.status)
	}
	res := form(token, string(r.cfg), cookie)
	if res.status != 202 || !strings.Contains(string(res.body), "data-job=") {
		t.Fatalf("form apply = %d %s", res.status, res.body)
	}
}

// uiForm posts the Boot UI's apply form.
func (r *rig) uiForm(token string, text string, hdr map[string]string) resp {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("csrf", token)
	mw.WriteField("text", text)
	mw.Close()
	h := map[string]string{"Content-Type": mw.FormDataContentType()}
	for k, v := range hdr {
		h[k] = v
	}
	return r.do("POST", "/apply", b.Bytes(), h)
}

// csrfToken is the form token a Boot UI page set in its cookie.
func csrfToken(page resp) string {
	for _, c := range strings.Split(page.header.Get("Set-Cookie"), ";") {
		if strings.HasPrefix(c, "fleetprov_csrf=") {
			return strings.TrimPrefix(c, "fleetprov_csrf=")
		}
	}
	return ""
}

// TestBootUIConfirmGuards attacks POST /confirm: only the page that started the waiting
// job may confirm it, with its own token, for that job, while it runs.
func TestBootUIConfirmGuards(t *testing.T) {
	r := newRigWith(t, 0, provisiontest.NewWithHost(t))
	page := r.do("GET", "/", nil, nil)
	token := csrfToken(page)
	cookie := map[string]string{"Cookie": "fleetprov_csrf=" + token}
	cfg := fmt.Sprintf("version = 1\n[users.admin]\nisAdmin = true\nssh_key = %q\n[network.firewall.inbound.wan]\ntcp = [443]\n"+
		"[activation]\nrequired = [\"web\"]\nconfirm = \"operator\"\nconfirm_seconds = 60\n"+
		"[containers.container.web]\nprivileged = true\n[containers.container.web.Container]\nImage = \"docker.io/library/nginx:1\"\n", r.line)
	res := r.uiForm(token, cfg, cookie)
	m := regexp.MustCompile(`data-job="([^"]+)"`).FindSubmatch(res.body)
	if res.status != 202 || m == nil {
		t.Fatalf("form apply = %d %s", res.status, res.body)
	}
	job := string(m[1])
	fptest.WaitFor(t, 10*time.Second, "the confirm window", func() bool { _, _, ok := r.dev.Prov.AwaitingConfirm(); return ok })
	confirm := func(tok, cookieTok, job string) int {
		body := url.Values{"csrf": {tok}, "job": {job}}.Encode()
		return r.do("POST", "/confirm", []byte(body), map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Cookie": "fleetprov_csrf=" + cookieTok}).status
	}
	for name, c := range map[string]struct{ tok, cookie, job string }{
		"another page's matching pair":     {"forged", "forged", job},
		"the right token, another job":     {token, token, "01a00000-0000-7000-8000-000000000000"},
		"no token":                         {"", token, job},
		"a token that is not the cookie's": {token, "other", job},
	} {
		if st := confirm(c.tok, c.cookie, c.job); st != http.StatusForbidden {
			t.Errorf("%s: POST /confirm = %d; want 403", name, st)
		}
	}
	if _, _, ok := r.dev.Prov.AwaitingConfirm(); !ok {
		t.Fatal("a refused confirm ended the window")
	}
	if st := confirm(token, token, job); st != http.StatusNoContent {
		t.Fatalf("the page's own confirm = %d", st)
	}
	fptest.WaitFor(t, 10*time.Second, "the job to finish", func() bool { j, err := r.jobs.Get(job); return err == nil && j.State.Finished() })
	if j, _ := r.jobs.Get(job); j.State != record.Succeeded {
		t.Errorf("the confirmed job = %s (%s)", j.State, j.Error)
	}
	if st := confirm(token, token, job); st != http.StatusNotFound {
		t.Errorf("confirming a finished job = %d; want 404", st)
	}
	// A later change, signed by the admin, waits for its own operator: the old page
	// (its token, its finished job) cannot confirm it.
	res = r.signed(r.admin, "POST", "/api/config", []byte(strings.Replace(cfg, "tcp = [443]", "tcp = [8443]", 1)), nil)
	if res.status != 202 {
		t.Fatalf("signed apply = %d %s", res.status, res.body)
	}
	fptest.WaitFor(t, 10*time.Second, "the second window", func() bool { _, _, ok := r.dev.Prov.AwaitingConfirm(); return ok })
	if st := confirm(token, token, job); st != http.StatusNotFound {
		t.Errorf("the old page confirming another job's window = %d; want 404", st)
	}
	if _, _, ok := r.dev.Prov.AwaitingConfirm(); !ok {
		t.Fatal("the old page ended another job's window")
	}
	if err := r.dev.Prov.Confirm(); err != nil {
		t.Fatal(err)
	}
	r.wait(res)
}

// firstBoot is what a legitimate unsigned first-boot client sends.
var firstBoot = map[string]string{wire.FirstBootHeader: "1"}

// TestEveryRefusalCounted: each refused request is counted once in
// fleetprov_rejected_total under its code, whichever check refused it.
func TestEveryRefusalCounted(t *testing.T) {
	r := newRig(t, 0)
	r.provision()
	stranger, _ := configtest.NewKey(t)
	refusals := []struct {
		send func() resp
		code string
	}{
		{func() resp { return r.do("GET", "/api/config/current", nil, nil) }, "unauthorized"}, // no signature headers
		{func() resp {
			return r.do("GET", "/api/config/current", nil, map[string]string{bridge.NonceHeader: "made-up", bridge.SignatureHeader: "AAAA"})
		}, "unauthorized"}, // a nonce never issued
		{func() resp { return r.signed(stranger, "GET", "/api/config/current", nil, nil) }, "unauthorized"},
		{func() resp { return r.do("POST", "/api/envelopes", []byte("{}"), nil) }, "unauthorized"}, // no envelope signature
		{func() resp { return r.do("GET", "/api/jobs/nope", nil, nil) }, "not-found"},
		{func() resp { return r.signed(r.admin, "GET", "/api/config/export?format=zip", nil, nil) }, "invalid"},
	}
	want := map[string]int{}
	for i, c := range refusals {
		if res := c.send(); res.status < 400 || res.status >= 500 {
			t.Fatalf("refusal %d answered %d %s", i, res.status, res.body)
		}
		want[c.code]++
	}
	metrics := string(r.do("GET", "/metrics", nil, nil).body)
	for code, n := range want {
		line := fmt.Sprintf(`fleetprov_rejected_total{code=%q,transport="http"} %d`, code, n)
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %s:\n%s", line, grepLines(metrics, "fleetprov_rejected_total"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
