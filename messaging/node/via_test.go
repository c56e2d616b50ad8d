package node_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/fleet"
	"github.com/fleetprov/fleetprov/messaging/wire"
	"golang.org/x/crypto/ssh"
)

// lanProxy stands between `publisher --via` and a device's bridge, as a host on the LAN
// can: it passes answers on, records the first job's event stream, and in its attack
// modes rewrites what the device said.
type lanProxy struct {
	mu       sync.Mutex
	mode     string // "" pass, "forge" events, "strip" signatures, "swap" job records
	captured bytes.Buffer
	record   []byte // the first job record it saw, as sent
	recSig   string
	forger   func(body []byte) string // a signature by a key that is not the device's
}

func (p *lanProxy) modify(res *http.Response) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	path := res.Request.URL.Path
	switch {
	case p.mode == "strip":
		res.Header.Del(wire.DeviceSignatureHeader)
		if strings.HasSuffix(path, "/events") {
			res.Body = stripSigned(res.Body)
		}
	case p.mode == "" && res.StatusCode != http.StatusOK:
	case p.mode == "" && strings.HasSuffix(path, "/events") && p.captured.Len() == 0:
		res.Body = readCloser{io.TeeReader(res.Body, &lockedWriter{p}), res.Body}
	case p.mode == "" && strings.HasPrefix(path, "/api/jobs/") && !strings.HasSuffix(path, "/events") && p.record == nil:
		b, _ := io.ReadAll(res.Body)
		p.record, p.recSig = b, res.Header.Get(wire.DeviceSignatureHeader)
		res.Body = io.NopCloser(bytes.NewReader(b))
	case p.mode == "forge" && strings.HasSuffix(path, "/events"):
		// Before the device's own stream: the first job's stream (genuinely signed,
		// another job), then a "succeeded" for this job signed by another key, and an
		// unsigned one.
		id := strings.TrimSuffix(strings.TrimPrefix(path, "/api/jobs/"), "/events")
		j := record.Job{ID: id, Op: "apply", State: record.Succeeded}
		data, _ := json.Marshal(j)
		signed, _ := json.Marshal(wire.EventMsg{JobID: id, Device: "d1", Fleet: "test", Seq: 1000, Done: true, Job: &j})
		forged := p.captured.String() +
			fmt.Sprintf("event: done\n%s: %s\n%s: %s\ndata: %s\n\n", wire.SSESignedField, signed, wire.SSESignatureField, p.forger(signed), data) +
			fmt.Sprintf("event: done\ndata: %s\n\n", data)
		res.Body = readCloser{io.MultiReader(strings.NewReader(forged), res.Body), res.Body}
	case p.mode == "swap" && strings.HasPrefix(path, "/api/jobs/"):
		res.StatusCode = http.StatusOK
		res.Header.Set(wire.DeviceSignatureHeader, p.recSig)
		res.Header.Del("Content-Length")
		res.Body = io.NopCloser(bytes.NewReader(p.record))
	}
	return nil
}

type lockedWriter struct{ p *lanProxy }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.captured.Write(b)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// stripSigned drops the signed form of each SSE event, leaving what a browser reads.
func stripSigned(body io.ReadCloser) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		defer body.Close()
		buf := make([]byte, 0, 64<<10)
		rd := io.Reader(body)
		chunk := make([]byte, 32<<10)
		for {
			n, err := rd.Read(chunk)
			buf = append(buf, chunk[:n]...)
			for {
				i := bytes.IndexByte(buf, '\n')
				if i < 0 {
					break
				}
				line := buf[:i+1]
				if !bytes.HasPrefix(line, []byte(wire.SSESignedField+": ")) && !bytes.HasPrefix(line, []byte(wire.SSESignatureField+": ")) {
					if _, werr := pw.Write(line); werr != nil {
						return
					}
				}
				buf = buf[i+1:]
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	return pr
}

// TestViaHTTPAnswersAreChecked: `publisher --via` believes what a device says over its
// HTTP bridge only when the device signed it. A host between them that replays the
// device's signed events of another job, forges a "succeeded" (signed by another key, or
// unsigned), strips the signatures, or answers with another job's signed record, never
// turns a failing push into a success.
func TestViaHTTPAnswersAreChecked(t *testing.T) {
	b := startBoth(t, provisiontest.New(t), nil)
	admin, line := configtest.NewKey(t)
	forger, _ := configtest.NewKey(t)
	good := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	bad := bytes.Replace(good, []byte(`Image = "ghcr.io/example/myapp:latest"`), []byte(`Image = "ghcr.io/example/myapp:latest"`+"\nLabel = \"fleetprov.simulate=fail\""), 1)
	p := &lanProxy{forger: func(body []byte) string { return deviceSigned(forger, body).Header.Get(wire.DeviceSignatureHeader) }}
	target, _ := url.Parse(b.base)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = p.modify
	proxy := httptest.NewServer(rp)
	t.Cleanup(proxy.Close)

	known, err := fleet.LoadKnownDevices(filepath.Join(t.TempDir(), "known_devices"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := fleet.NewHTTP(proxy.URL, "test", fleet.WithSigner(admin), fleet.WithKnownDevices(known, true, nil))
	if err != nil {
		t.Fatal(err)
	}
	push := func(cfg []byte) fleet.DeviceState {
		t.Helper()
		sum, err := c.Push(t.Context(), fleet.PushOptions{Target: fleet.Target{Devices: []string{"d1"}}, Timeout: 20 * time.Second, ReplyTimeout: 5 * time.Second,
			Payload: fleet.Payload{Data: cfg, ContentType: envelope.TypeTOML}}, nil)
		if err != nil || len(sum.Devices) != 1 {
			t.Fatalf("push = %+v, %v", sum, err)
		}
		return sum.Devices[0]
	}

	// Asked for another device, the bridge's answer is refused and enrols nobody (first
	// use would otherwise record d1's key under the name it claims).
	if _, err := c.Ping(t.Context(), "gw1", 5*time.Second); !errors.Is(err, fleet.ErrInvalidOption) {
		t.Errorf("ping gw1 answered by d1 = %v; want ErrInvalidOption", err)
	}
	if key, ok := known.Lookup("test", "d1"); ok {
		t.Fatalf("a ping for gw1 enrolled d1 (%s)", ssh.FingerprintSHA256(key))
	}

	// Passed on untouched: the first push succeeds and enrols the device on first use.
	if s := push(good); s.State != fleet.StateSucceeded {
		t.Fatalf("push through an honest proxy = %+v", s)
	}
	if key, ok := known.Lookup("test", "d1"); !ok || !fleet.SameKey(key, b.node.Identity.PublicKey()) {
		t.Fatalf("after first use over HTTP, d1 is enrolled with %v (%v); want its identity key", key, ok)
	}
	firstJob := strings.TrimSpace(p.captured.String())
	if firstJob == "" || !strings.Contains(firstJob, wire.SSESignedField+": ") {
		t.Fatalf("the bridge's event stream carries no signed events:\n%s", firstJob)
	}
	var first record.Job
	if _, err := c.Job(t.Context(), "d1", "no-such-job", 5*time.Second); err == nil {
		t.Fatal("a job that does not exist was read")
	}
	for _, line := range strings.Split(firstJob, "\n") {
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"state"`) {
			json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &first)
		}
	}
	if got, err := c.Job(t.Context(), "d1", first.ID, 5*time.Second); err != nil || got.State != record.Succeeded {
		t.Fatalf("the first job's record through the proxy = %+v, %v", got, err)
	}

	// Forged and replayed events: the push of a failing config still ends rolled back.
	p.mu.Lock()
	p.mode = "forge"
	p.mu.Unlock()
	if s := push(bad); s.State != fleet.StateRolledBack {
		t.Errorf("push of a failing config with forged and replayed events = %+v; want rolled-back", s)
	}

	// Another job's genuinely signed record as the answer for this one.
	p.mu.Lock()
	p.mode = "swap"
	p.mu.Unlock()
	if j, err := c.Job(t.Context(), "d1", "01a20131-aaaa-7bbb-8ccc-dddddddddddd", 5*time.Second); !errors.Is(err, fleet.ErrImpostor) {
		t.Errorf("another job's signed record as the answer = %+v, %v; want ErrImpostor", j, err)
	}

	// Signatures stripped: nothing the device says is believed.
	p.mu.Lock()
	p.mode = "strip"
	p.mu.Unlock()
	if s := push(good); s.State == fleet.StateSucceeded || !strings.Contains(s.Error, "identity signature") {
		t.Errorf("push with the signatures stripped = %+v; want refused for the missing identity signature", s)
	}
}
