package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

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
