// Package browser_test drives the Boot UI in a real headless Chromium (Debian package
// chromium) with chromedp: upload a config, watch progress to success, see a broken
// config's errors, and find the UI gone once provisioned. Screenshots are test artifacts
// (go test -artifacts keeps them).
package browser_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
)

func chromium(t *testing.T) string {
	t.Helper()
	return fptest.RequireTool(t, "chromium", "chromium", "chromium-browser", "google-chrome")
}

// device starts a worker node with its HTTP bridge on a random loopback port.
func device(t *testing.T) (string, *provisiontest.Device) {
	t.Helper()
	return serve(t, provisiontest.New(t))
}

func serve(t *testing.T, dev *provisiontest.Device) (string, *provisiontest.Device) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nodetest.StartDevice(t, dev, "gw-browser", func(o *node.Options) { o.Broker, o.HTTP = broker.Options{}, l })
	return "http://" + l.Addr().String(), dev
}

func browser(t *testing.T) context.Context {
	t.Helper()
	// Chromium's helpers may still write to the profile for a moment after it exits, so the
	// profile is removed best-effort rather than by t.TempDir's strict cleanup.
	profile, err := os.MkdirTemp("", "fleetprov-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fptest.Eventually(2*time.Second, func() bool { return os.RemoveAll(profile) == nil })
	})
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile), chromedp.WindowSize(1100, 900),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel3)
	return ctx
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	var png []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(t.ArtifactDir(), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// pasteAndApply opens the Boot UI, pastes cfg and applies it.
func pasteAndApply(base, cfg string) chromedp.Tasks {
	return chromedp.Tasks{
		chromedp.Navigate(base + "/"),
		chromedp.WaitVisible("#text", chromedp.ByID),
		chromedp.SetValue("#text", cfg, chromedp.ByID),
		chromedp.Click("#apply", chromedp.ByID),
	}
}

func TestBootUIUploadProgressSuccess(t *testing.T) {
	base, dev := device(t)
	ctx := browser(t)
	cfg := filepath.Join(t.TempDir(), "vm-full.config.toml")
	os.WriteFile(cfg, configtest.Fixture(t, "vm-full.config.toml"), 0o600)
	var state, title, events string
	err := chromedp.Run(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible("#apply-form"),
		chromedp.Title(&title),
		chromedp.SetUploadFiles("#file", []string{cfg}, chromedp.ByID),
		chromedp.Click("#apply", chromedp.ByID),
		chromedp.WaitVisible("#result", chromedp.ByID),
		chromedp.Text("#state", &state, chromedp.ByID),
		chromedp.Text("#events", &events, chromedp.ByID),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	screenshot(t, ctx, "bootui-success.png")
	if !strings.Contains(title, "gw-browser") || state != "Provisioned" {
		t.Errorf("title %q, state %q", title, state)
	}
	for _, step := range []string{"validate", "promote", "health-check", "completed"} {
		if !strings.Contains(events, step) {
			t.Errorf("progress lacks %q:\n%s", step, events)
		}
	}
	if !dev.Prov.State().HasActive() {
		t.Error("device not provisioned")
	}
	res, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET / after provisioning = %d; want 404", res.StatusCode)
	}
}

func TestBootUIBrokenConfigShowsErrors(t *testing.T) {
	base, dev := device(t)
	ctx := browser(t)
	broken := string(configtest.Fixture(t, "vm-invalid-dhcp-range-includes-gateway.config.toml"))
	broken = strings.Replace(broken, "[activation]", "[activation]\ntimeout_seconds = 0", 1)
	var errs string
	err := chromedp.Run(ctx,
		pasteAndApply(base, broken),
		chromedp.WaitVisible("#errors", chromedp.ByID),
		chromedp.Text("#errors", &errs, chromedp.ByID),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	screenshot(t, ctx, "bootui-errors.png")
	for _, want := range []string{"network.dnsmasq.dhcp_start and network.dnsmasq.dhcp_end must not include the gateway IP", "activation.timeout_seconds", "expected integer in 1..3600"} {
		if !strings.Contains(errs, want) {
			t.Errorf("errors shown lack %q:\n%s", want, errs)
		}
	}
	if dev.Prov.State().HasActive() {
		t.Error("a broken config provisioned the device")
	}
	var text string
	chromedp.Run(ctx, chromedp.Value("#text", &text, chromedp.ByID))
	if !bytes.Contains([]byte(text), []byte("dhcp_start")) {
		t.Error("the pasted config was not kept in the form")
	}
}

// TestBootUIConfirmsItsNetworkChange: a first boot through the Boot UI whose config
// changes the firewall with activation.confirm = "operator" waits for a confirmation;
// the page offers it, a forged form (its own cookie and token pair, the job's id) is
// refused and leaves the window open, and the page's button confirms: provisioned.
func TestBootUIConfirmsItsNetworkChange(t *testing.T) {
	base, dev := serve(t, provisiontest.NewWithHost(t))
	ctx := browser(t)
	cfg := `version = 1
[users.admin]
isAdmin = true
ssh_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfm/RhPyisFyBAwigDt2AnnOU1fMAVk4XaCj3S/k/3Z admin@a"
[network.firewall.inbound.wan]
tcp = [443]
[activation]
required = ["web"]
confirm = "operator"
confirm_seconds = 60
[containers.container.web]
privileged = true
[containers.container.web.Container]
Image = "docker.io/library/nginx:1"
`
	var job string
	var ok bool
	err := chromedp.Run(ctx,
		pasteAndApply(base, cfg),
		chromedp.WaitVisible("#confirm-button", chromedp.ByID),
		chromedp.AttributeValue("body", "data-job", &job, &ok, chromedp.ByQuery),
	)
	if err != nil || !ok || job == "" {
		t.Fatalf("browser: %v (data-job %q, present %v)", err, job, ok)
	}
	screenshot(t, ctx, "bootui-confirm.png")
	forged := url.Values{"csrf": {"forged-token"}, "job": {job}}
	req, _ := http.NewRequest("POST", base+"/confirm", strings.NewReader(forged.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "fleetprov_csrf", Value: "forged-token"})
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("a forged confirm = %d; want 403", res.StatusCode)
	}
	if _, _, waiting := dev.Prov.AwaitingConfirm(); !waiting {
		t.Fatal("a forged confirm ended the window")
	}
	var state, events string
	err = chromedp.Run(ctx,
		chromedp.Click("#confirm-button", chromedp.ByID),
		chromedp.WaitVisible("#result", chromedp.ByID),
		chromedp.Text("#state", &state, chromedp.ByID),
		chromedp.Text("#events", &events, chromedp.ByID),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	if state != "Provisioned" || !strings.Contains(events, "confirm operator waiting") || !strings.Contains(events, "confirm confirmed") {
		t.Errorf("state %q, events:\n%s", state, events)
	}
}
