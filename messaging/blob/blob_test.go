package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
)

func TestServeFetch(t *testing.T) {
	_, nc := brokertest.Start(t)
	data := make([]byte, 3<<20+17) // over three max payloads
	rand.Read(data)
	stop, err := Serve(context.Background(), nc, "fleetprov.f.blob.x", data)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	var got bytes.Buffer
	if err := Fetch(context.Background(), nc, "fleetprov.f.blob.x", int64(len(data)), 32<<20, 0, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Errorf("fetched %d bytes, not the served ones", got.Len())
	}
	if err := Fetch(context.Background(), nc, "fleetprov.f.blob.x", 33<<20, 32<<20, 0, &got); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Fetch(over limit) = %v", err)
	}
	// Announcing less than is served is caught.
	if err := Fetch(context.Background(), nc, "fleetprov.f.blob.x", 100, 32<<20, 0, &bytes.Buffer{}); err == nil {
		t.Errorf("Fetch(short size) succeeded")
	}
}

// TestServeAnswersOnlyInboxes: a client that may request chunks but not publish on a
// device's request subject asks for a chunk "replied" there; the server must not publish
// for it, and still answers a real inbox.
func TestServeAnswersOnlyInboxes(t *testing.T) {
	_, nc := brokertest.Start(t)
	stop, err := Serve(context.Background(), nc, "fleetprov.f.blob.x", []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	target, err := nc.SubscribeSync("fleetprov.f.dev.d2.apply")
	if err != nil {
		t.Fatal(err)
	}
	for _, reply := range []string{"fleetprov.f.dev.d2.apply", "fleetprov.f.inbox", "fleetprov.f.blob.x"} {
		if err := nc.PublishRequest("fleetprov.f.blob.x", reply, []byte("0")); err != nil {
			t.Fatal(err)
		}
	}
	// The server handles requests in order: once this one is answered, the others were
	// handled too.
	if m, err := nc.Request("fleetprov.f.blob.x", []byte("0"), 5*time.Second); err != nil || string(m.Data) != "payload" {
		t.Fatalf("a real inbox: %v, %v", m, err)
	}
	nc.Flush()
	if n, _, _ := target.Pending(); n != 0 {
		t.Errorf("the blob server published %d message(s) on a device's request subject", n)
	}
	var got bytes.Buffer
	if err := Fetch(context.Background(), nc, "fleetprov.f.blob.x", 7, 1<<10, 0, &got); err != nil || got.String() != "payload" {
		t.Errorf("fetch = %q, %v", got.String(), err)
	}
}
