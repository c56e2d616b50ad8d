package node_test

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
	"github.com/fleetprov/fleetprov/internal/fptest"
	"github.com/fleetprov/fleetprov/messaging/broker"
	"github.com/fleetprov/fleetprov/messaging/node"
	"github.com/fleetprov/fleetprov/messaging/node/nodetest"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// TestBridgeFollowsLAN: after the first apply the bridge moves to the config's LAN gateway
// address (127.77.0.1 here, a loopback address this host has), keeping its port.
func TestBridgeFollowsLAN(t *testing.T) {
	dev := provisiontest.New(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	n := nodetest.StartDevice(t, dev, "gw", func(o *node.Options) { o.Broker, o.HTTP, o.HTTPFollowLAN = broker.Options{}, l, true })
	cfg := lanConfig(t)
	res, err := firstBootPost("http://"+l.Addr().String(), cfg)
	if err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("first-boot apply = %v, %v", res, err)
	}
	res.Body.Close()
	want := "127.77.0.1:" + port
	fptest.WaitFor(t, 10*time.Second, "the bridge to move to "+want, func() bool { return n.HTTPAddr() == want })
	res, err = http.Get("http://" + want + "/api/health")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("health on the LAN address = %v, %v", res, err)
	}
	res.Body.Close()
	if _, err := http.Get("http://127.0.0.1:" + port + "/api/health"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("the first-boot address still answers: %v", err)
	}
}

// TestShutdownWhileJobFinishesAndBridgeFollows shuts a node down while its first apply is
// finishing and the bridge is about to follow the LAN: Shutdown returns, and nothing
// answers on either address afterwards.
func TestShutdownWhileJobFinishesAndBridgeFollows(t *testing.T) {
	for i := range 5 {
		dev := provisiontest.New(t)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		n, err := node.Start(t.Context(), node.Options{Device: "gw", Fleet: "test", Prov: dev.Prov, HTTP: l, HTTPFollowLAN: true,
			HeartbeatInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		res, err := firstBootPost("http://"+l.Addr().String(), lanConfig(t))
		if err != nil || res.StatusCode != http.StatusAccepted {
			t.Fatalf("run %d: first-boot apply = %v, %v", i, res, err)
		}
		res.Body.Close()
		if err := n.Shutdown(t.Context()); err != nil {
			t.Fatalf("run %d: Shutdown() = %v", i, err)
		}
		for _, addr := range []string{l.Addr().String(), "127.77.0.1:" + port} {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Errorf("run %d: %s still answers after Shutdown", i, addr)
			}
		}
	}
}

// lanConfig is vm-full with its LAN gateway on 127.77.0.1, a loopback address this host
// has, so the bridge can really move there.
func lanConfig(t *testing.T) []byte {
	cfg := bytes.Replace(configtest.Fixture(t, "vm-full.config.toml"), []byte(`gateway_cidr = "10.44.0.1/24"`), []byte(`gateway_cidr = "127.77.0.1/24"`), 1)
	cfg = bytes.Replace(cfg, []byte(`dhcp_start = "10.44.0.10"`), []byte(`dhcp_start = "127.77.0.10"`), 1)
	return bytes.Replace(cfg, []byte(`dhcp_end = "10.44.0.200"`), []byte(`dhcp_end = "127.77.0.200"`), 1)
}

// firstBootPost is an unsigned first-boot apply, as the operator's own client sends it.
func firstBootPost(base string, cfg []byte) (*http.Response, error) {
	req, err := http.NewRequest("POST", base+"/api/config", bytes.NewReader(cfg))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/toml")
	req.Header.Set(wire.FirstBootHeader, "1")
	return http.DefaultClient.Do(req)
}

// TestSpoolLeftoversRemovedAtStart: a worker that died mid-upload leaves spool files; the
// next start removes them.
func TestSpoolLeftoversRemovedAtStart(t *testing.T) {
	dev := provisiontest.New(t)
	os.MkdirAll(dev.StateDir, 0o711)
	for _, name := range []string{"fleetprov-upload-123", "fleetprov-payload-456"} {
		os.WriteFile(filepath.Join(dev.StateDir, name), []byte("partial"), 0o600)
	}
	nodetest.StartDevice(t, dev, "d1")
	if left, _ := filepath.Glob(filepath.Join(dev.StateDir, "fleetprov-*-*")); len(left) != 0 {
		t.Errorf("spool leftovers after start: %v", left)
	}
}
