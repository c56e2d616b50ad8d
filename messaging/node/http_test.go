package node

import (
	"net"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/messaging/bridge"
)

// TestMoveAfterStopReturns is the shutdown race: the node stops the bridge, then a job
// that finished at that moment asks it to follow the LAN. The move must be ignored, not
// wait forever for a server that is already gone.
func TestMoveAfterStopReturns(t *testing.T) {
	h := &httpServer{bridge: bridge.New(bridge.Options{})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.serve(l)
	h.stop()
	moved := make(chan struct{})
	go func() { h.moveTo("127.0.0.1:0"); close(moved) }()
	select {
	case <-moved:
	case <-time.After(20 * time.Second): // a hang guard only: the move returns at once
		t.Fatal("moveTo blocked after stop")
	}
	if h.addr() != l.Addr().String() {
		t.Errorf("a stopped bridge moved to %s", h.addr())
	}
	h.stop() // idempotent
}
