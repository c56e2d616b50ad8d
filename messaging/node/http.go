package node

import (
	"context"
	"log/slog"
	"net"
	"sync"

	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/messaging/bridge"
)

// httpServer serves the bridge on one listener at a time and can move to another.
type httpServer struct {
	bridge *bridge.Server
	log    *slog.Logger

	mu      sync.Mutex
	l       net.Listener
	cancel  context.CancelFunc
	done    chan error
	stopped bool // after stop, the server never serves or moves again
}

// serve starts serving l; callers hold mu or have not shared h yet.
func (h *httpServer) serve(l net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.bridge.Serve(ctx, l) }()
	h.l, h.cancel, h.done = l, cancel, done
}

// addr returns the current listen address.
func (h *httpServer) addr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.l.Addr().String()
}

// moveTo listens on addr, serves there, and closes the old listener (after its in-flight
// requests). It keeps the old one when addr cannot be bound.
func (h *httpServer) moveTo(addr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped || h.l.Addr().String() == addr {
		return
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		h.log.Warn("HTTP bridge stays where it is: cannot listen on the LAN address", "addr", addr, "err", err)
		return
	}
	oldCancel, oldDone, old := h.cancel, h.done, h.l.Addr().String()
	h.serve(l)
	oldCancel()
	<-oldDone
	h.log.Info("HTTP bridge moved to the LAN address", "from", old, "to", addr)
}

func (h *httpServer) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	h.stopped = true
	h.cancel()
	<-h.done
}

// followLAN moves the bridge to the LAN gateway address of the active config (dnsmasq's
// gateway or eth1's address), keeping the port; configs without a LAN leave it alone.
func (n *Node) followLAN() {
	m, err := n.Prov.ActiveModel()
	if err != nil || m.Network == nil {
		return
	}
	if m.Network.Dnsmasq == nil && m.Network.Interfaces["eth1"].Address == "" {
		return
	}
	_, port, err := net.SplitHostPort(n.http.addr())
	if err != nil {
		return
	}
	n.http.moveTo(net.JoinHostPort(host.LAN(m).GatewayIP, port))
}
