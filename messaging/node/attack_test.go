package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/envelope"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/subjects"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// stalledBlob serves data on a blob subject the way messaging/blob does, but answers
// nothing until release is called; asked is closed at the first chunk request. It is
// the attacker's slow payload.
func stalledBlob(t *testing.T, nc *nats.Conn, name string, data []byte) (subject string, asked <-chan struct{}, release func()) {
	t.Helper()
	subject = subjects.Subject{Fleet: "test", Kind: subjects.Blob, Name: name}.String()
	gate, first := make(chan struct{}), make(chan struct{})
	var once bool
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if !once {
			once = true
			close(first)
		}
		<-gate
		off, _ := strconv.Atoi(string(m.Data))
		m.Respond(data[off:min(off+64<<10, len(data))])
	})
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	var released bool
	release = func() {
		if !released {
			released = true
			close(gate)
		}
	}
	t.Cleanup(func() { release(); sub.Unsubscribe() })
	return subject, first, release
}

// overtaken sends an apply of slowCfg signed by slow whose payload is a stalled blob;
// while the device waits for it, fast applies fastCfg inline and must succeed. Then the
// blob is released: the slow apply, valid when it arrived, must be refused, and the
// active config stay fastCfg.
func (b *both) overtaken(slow ssh.Signer, slowCfg []byte, fast ssh.Signer, fastCfg []byte) {
	b.t.Helper()
	subject, asked, release := stalledBlob(b.t, b.nc, "stale", slowCfg)
	raw, sig := b.env(slow, "apply", nil, func(e *envelope.Envelope) {
		e.Payload, e.ContentType, e.PayloadSHA256 = nil, envelope.TypeTOML, envelope.Digest(slowCfg)
		e.PayloadRef = &wire.PayloadRef{Subject: subject, Size: int64(len(slowCfg))}
	})
	reply := make(chan wire.Reply, 1)
	go func() { reply <- b.overNATS("apply", raw, sig) }()
	<-asked
	if j := b.applyNow(fast, fastCfg); j.State != record.Succeeded {
		b.t.Fatalf("the overtaking apply = %s: %s", j.State, j.Error)
	}
	release()
	b.checkRefused(<-reply, fastCfg)
}

// applyNow sends an inline apply and waits for its job to finish.
func (b *both) applyNow(s ssh.Signer, cfg []byte) record.Job {
	b.t.Helper()
	raw, sig := b.env(s, "apply", cfg, nil)
	r := b.overNATS("apply", raw, sig)
	if !r.Accepted {
		b.t.Fatalf("apply refused: %+v", r)
	}
	return b.waitJob(r.JobID)
}

func (b *both) waitJob(id string) record.Job {
	b.t.Helper()
	var j record.Job
	fptest.WaitFor(b.t, 30*time.Second, "job "+id+" to finish", func() bool {
		var err error
		j, err = b.node.Jobs.Get(id)
		return err == nil && j.State.Finished()
	})
	return j
}

// checkRefused passes when the slow request was refused, or its job failed as
// unauthorized; either way the active config must be want.
func (b *both) checkRefused(reply wire.Reply, want []byte) {
	b.t.Helper()
	if reply.Accepted {
		j := b.waitJob(reply.JobID)
		if j.State != record.Failed || j.Code != record.CodeUnauthorized {
			b.t.Errorf("the stale request's job = %s/%s (%s); want failed/unauthorized", j.State, j.Code, j.Error)
		}
	} else if reply.Code != "unauthorized" {
		b.t.Errorf("the stale request = %+v; want unauthorized", reply)
	}
	got, err := os.ReadFile(filepath.Join(b.dev.StateDir, "config", "config.toml"))
	if err != nil || !bytes.Equal(got, want) {
		b.t.Errorf("active config changed by a request its signer was no longer trusted for (err %v)", err)
	}
}

// TestAuthorityCheckedAgainAtJobStart mounts the slow-payload attack: an envelope that
// was valid when it arrived must not be applied after the state that authorized it has
// changed.
func TestAuthorityCheckedAgainAtJobStart(t *testing.T) {
	t.Run("first_boot_takeover", func(t *testing.T) {
		b := startBoth(t, provisiontest.New(t), nil)
		attacker, attLine := configtest.NewKey(t)
		operator, opLine := configtest.NewKey(t)
		attCfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", attLine)
		opCfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", opLine)

		// The attacker's possession-signed apply is valid now: the device is fresh.
		// Meanwhile the operator provisions the device.
		b.overtaken(attacker, attCfg, operator, opCfg)
	})
	t.Run("removed_admin", func(t *testing.T) {
		a, aLine := configtest.NewKey(t)
		bKey, bLine := configtest.NewKey(t)
		withB := append(configtest.FixtureWithAdmin(t, "vm-full.config.toml", aLine),
			[]byte("\n[users.bob]\nisAdmin = true\nssh_key = \""+bLine+"\"\n")...)
		withoutB := configtest.FixtureWithAdmin(t, "vm-full.config.toml", aLine)
		dev := provisiontest.New(t)
		dev.Provision(t, withB)
		b := startBoth(t, dev, nil)
		bobsCfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", bLine)

		// Bob is removed while his payload trickles in.
		b.overtaken(bKey, bobsCfg, a, withoutB)
	})
}

// postAs POSTs body to url with the headers of hdr ("Host" sets the request's host, as a
// DNS-rebound name would) and returns the status.
func postAs(t *testing.T, url string, body []byte, hdr map[string]string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestUnsignedFirstBootRefusesWebPages mounts the browser attacks on a fresh device's
// unsigned POST /api/config: a page the operator visits posts a text/plain "simple
// request" (no preflight), or a DNS-rebound name points at the device. None may
// provision it; the operator's own client (Host an IP, the custom header) still can.
func TestUnsignedFirstBootRefusesWebPages(t *testing.T) {
	b := startBoth(t, provisiontest.New(t), nil)
	_, attLine := configtest.NewKey(t)
	evil := configtest.FixtureWithAdmin(t, "vm-full.config.toml", attLine)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(b.base, "http://"))
	attacks := []struct {
		name string
		hdr  map[string]string
	}{
		{name: "cross_origin_simple_request", hdr: map[string]string{"Content-Type": "text/plain", "Origin": "http://evil.example"}},
		{name: "form_post_without_origin", hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
		{name: "dns_rebinding", hdr: map[string]string{"Host": "evil.example:" + port, "Origin": "http://evil.example:" + port,
			wire.FirstBootHeader: "1"}},
		{name: "rebinding_without_origin", hdr: map[string]string{"Host": "evil.example:" + port, wire.FirstBootHeader: "1"}},
		{name: "cross_origin_with_header", hdr: map[string]string{"Origin": "http://evil.example", wire.FirstBootHeader: "1"}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			if status := postAs(t, b.base+"/api/config", evil, a.hdr); status != http.StatusForbidden {
				t.Errorf("status = %d; want 403", status)
			}
			if b.node.Jobs.Active() != "" || b.node.Trust.Provisioned() {
				t.Fatalf("the attack started a job or provisioned the device")
			}
		})
	}
	// A rebinding page can make its own key and sign for itself (proof of possession):
	// the signed routes get the same guard while the device is open to first boot.
	attacker, _ := configtest.NewKey(t)
	raw, sig := b.env(attacker, "apply", evil, nil)
	for _, hdr := range []map[string]string{
		{"Host": "evil.example:" + port, "Origin": "http://evil.example:" + port, wire.FirstBootHeader: "1"},
		{"Origin": "http://evil.example"},
	} {
		hdr[envelope.SignatureHeader] = sig
		if status := postAs(t, b.base+"/api/envelopes", raw, hdr); status != http.StatusForbidden || b.node.Trust.Provisioned() || b.node.Jobs.Active() != "" {
			t.Errorf("self-signed envelope from a web page (%v) = %d; want 403 and nothing started", hdr, status)
		}
	}
	res, err := firstBootPost(b.base, evil)
	if err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("the operator's first-boot apply = %v, %v", res, err)
	}
	res.Body.Close()
}

// TestFirstBootWindowCloses: after --first-boot-window the unsigned route, the Boot UI and
// proof-of-possession envelopes are all refused; a fleet trust file signer still works.
func TestFirstBootWindowCloses(t *testing.T) {
	dev := provisiontest.New(t)
	os.MkdirAll(dev.StateDir, 0o700)
	// The device first started two hours ago; the window is one hour.
	os.WriteFile(filepath.Join(dev.StateDir, node.FirstStartFile), []byte(time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339)+"\n"), 0o600)
	b := startBoth(t, dev, func(o *node.Options) { o.FirstBootWindow = time.Hour })
	key, line := configtest.NewKey(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)

	if res, err := firstBootPost(b.base, cfg); err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned apply after the window = %v, %v; want 401", res, err)
	}
	if res, err := http.Get(b.base + "/"); err != nil || res.StatusCode != http.StatusNotFound {
		t.Errorf("Boot UI after the window = %v, %v; want 404", res, err)
	}
	raw, sig := b.env(key, "apply", cfg, nil)
	if r := b.overNATS("apply", raw, sig); r.Accepted || r.Code != "unauthorized" {
		t.Errorf("possession-signed apply after the window = %+v; want unauthorized", r)
	}
	if b.node.Trust.Provisioned() {
		t.Fatal("provisioned after the window closed")
	}
	// A window that is still open lets the same apply through.
	open := provisiontest.New(t)
	ob := startBoth(t, open, func(o *node.Options) { o.FirstBootWindow = time.Hour })
	raw, sig = ob.env(key, "apply", cfg, nil)
	if r := ob.overNATS("apply", raw, sig); !r.Accepted {
		t.Errorf("possession-signed apply inside the window = %+v", r)
	}
}

// TestSelfSignedFloodLeavesNoRecords: on a fresh device anyone can sign for themselves;
// such envelopes for anything but apply are refused before a replay record is made, so
// a flood of them cannot grow the replay dir (it used to keep one file each). The flood
// is of patches: a mutating op, which gets a replay record once it is authorized (a
// read-only op bound to its inbox never would, so it could not show the order).
func TestSelfSignedFloodLeavesNoRecords(t *testing.T) {
	dev := provisiontest.New(t)
	b := startBoth(t, dev, nil)
	for i := range 50 {
		k, _ := configtest.NewKey(t)
		raw, sig := b.env(k, "patch", []byte(`{"kind":"activation","set":{}}`), nil)
		if r := b.overNATS("patch", raw, sig); r.Accepted || r.Code != "unauthorized" {
			t.Fatalf("self-signed patch #%d = %+v; want unauthorized", i, r)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dev.StateDir, "replay"))
	if len(entries) != 0 {
		t.Errorf("replay dir holds %d records after a refused flood; want 0", len(entries))
	}
}

// TestJunkFloodKeepsAnswering: three NATS clients flood the device's request subjects
// with junk while the operator pings it and sends a signed request; every real request
// is answered (a client retries one that got no reply), and the worker is connected and
// answering when the flood ends. It used to start a goroutine per message, be cut off as
// a slow consumer and lose requests.
func TestJunkFloodKeepsAnswering(t *testing.T) {
	admin, line := configtest.NewKey(t)
	dev := provisiontest.New(t)
	cfg := configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)
	dev.Provision(t, cfg)
	b := startBoth(t, dev, nil)
	junk := bytes.Repeat([]byte("x"), 2048)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for c := range 3 {
		nc := attackerConn(t, b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := []string{"apply", "ping", "current", "job"}
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				subj := subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: ops[(i+c)%len(ops)]}.String()
				nc.PublishRequest(subj, "_INBOX.junk", junk)
			}
			nc.Flush()
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	// A real client retries a request that got no reply, as the publisher does for
	// discovery; every request must get through within a few tries.
	try := func(what string, req func() error) {
		t.Helper()
		var err error
		for range 20 {
			if err = req(); err == nil {
				return
			}
		}
		t.Fatalf("%s during the flood: %v", what, err)
	}
	for i := range 20 {
		try("ping", func() error {
			msg := nats.NewMsg(subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: "ping"}.String())
			_, err := b.nc.RequestMsg(msg, 2*time.Second)
			return err
		})
		try("signed current", func() error {
			raw, sig := b.env(admin, "current", nil, nil)
			msg := nats.NewMsg(subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: "current"}.String())
			msg.Data = raw
			msg.Header.Set(envelope.SignatureHeader, sig)
			res, err := b.nc.RequestMsg(msg, 2*time.Second)
			if err != nil {
				return err
			}
			var r wire.Reply
			if json.Unmarshal(res.Data, &r) != nil || !r.Accepted {
				return fmt.Errorf("reply %s", res.Data)
			}
			return nil
		})
		_ = i
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close
	fptest.WaitFor(t, 10*time.Second, "the worker to be connected after the flood", b.node.Conn.IsConnected)
	try("ping after the flood", func() error {
		_, err := b.nc.Request(subjects.Subject{Fleet: "test", Kind: subjects.Device, Name: "d1", Op: "ping"}.String(), nil, 2*time.Second)
		return err
	})
	t.Logf("worker reconnects during the flood: %d; requests it dropped: %d", b.node.Conn.Reconnects, b.node.NATS.Dropped())
}

// TestStalledUploadsStayOffTheHeap mounts the upload-stall attack on a fresh device's
// unsigned first-boot route: 16 connections from three addresses each send 31 MiB and
// then stall. Three uploads get a slot (one per address), the rest are refused at once;
// the bodies go to spool files, so the heap stays flat. It used to hold every body in
// memory until the client gave up: three bodies would be 93 MiB.
func TestStalledUploadsStayOffTheHeap(t *testing.T) {
	b := startBoth(t, provisiontest.New(t), nil)
	addr := strings.TrimPrefix(b.base, "http://")
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const size = 31 << 20
	chunk := bytes.Repeat([]byte("#"), 1<<20)
	var wg sync.WaitGroup
	conns := make(chan net.Conn, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(10+i%3))}
			c, err := (&net.Dialer{LocalAddr: from}).Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			conns <- c
			fmt.Fprintf(c, "POST /api/config HTTP/1.1\r\nHost: %s\r\nContent-Type: application/toml\r\n%s: 1\r\nContent-Length: %d\r\n\r\n",
				addr, wire.FirstBootHeader, size+1)
			for range size / len(chunk) {
				if _, err := c.Write(chunk); err != nil {
					return // refused at once: the server closed the connection
				}
			}
			// ...and stall: the last byte never comes.
		}()
	}
	wg.Wait()
	defer func() {
		close(conns)
		for c := range conns {
			c.Close()
		}
	}()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %d MiB under 16 stalled 31 MiB uploads", grown>>20)
	if grown > 64<<20 {
		t.Errorf("heap grew by %d MiB under 16 stalled uploads; want < 64 MiB", grown>>20)
	}
	if b.node.Trust.Provisioned() || b.node.Jobs.Active() != "" {
		t.Error("a stalled upload started a job")
	}
	// The stalling client holds one upload slot at most: the operator, from another
	// address, still gets through.
	_, line := configtest.NewKey(t)
	client := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	req, _ := http.NewRequest("POST", b.base+"/api/config", bytes.NewReader(configtest.FixtureWithAdmin(t, "vm-full.config.toml", line)))
	req.Header.Set(wire.FirstBootHeader, "1")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Errorf("the operator's upload while another client stalls 16 = %d; want 202", res.StatusCode)
	}
}
