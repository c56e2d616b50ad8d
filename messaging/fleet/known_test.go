package fleet

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

func newPub(t *testing.T) ssh.PublicKey {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	p, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKnownDevicesKeepOthersEnrolments: publishers that loaded the file before another
// one enrolled a device (concurrent 'publisher enroll' runs) keep that enrolment.
func TestKnownDevicesKeepOthersEnrolments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_devices")
	a, _ := LoadKnownDevices(path)
	b, _ := LoadKnownDevices(path)
	if err := a.Add("f", "d1", newPub(t)); err != nil {
		t.Fatal(err)
	}
	if err := b.Add("f", "d2", newPub(t)); err != nil { // b never saw d1
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadKnownDevices(path)
			if err == nil {
				err = k.Add("f", fmt.Sprintf("c%d", i), newPub(t))
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, err := LoadKnownDevices(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.keys) != 18 {
		t.Errorf("known devices hold %d entries; want 18 (d1, d2, c0..c15): %v", len(got.keys), got.keys)
	}
	for _, d := range []string{"d1", "d2", "c0", "c15"} {
		if _, ok := got.Lookup("f", d); !ok {
			t.Errorf("%s lost", d)
		}
	}
}
