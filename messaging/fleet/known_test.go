package fleet

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fleetprov/fleetprov/core/config/configtest"
	"golang.org/x/crypto/ssh"
)

func newPub(t *testing.T) ssh.PublicKey {
	k, _ := configtest.NewKey(t)
	return k.PublicKey()
}

// TestKnownDevicesKeepOthersEnrolments: publishers that loaded the file before another
// one enrolled a device (concurrent 'publisher enroll' runs) keep that enrolment.
func TestKnownDevicesKeepOthersEnrolments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_devices")
	a, _ := LoadKnownDevices(path)
	b, _ := LoadKnownDevices(path)
	if err := a.Add("f", "d1", newPub(t), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Add("f", "d2", newPub(t), nil); err != nil { // b never saw d1
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadKnownDevices(path)
			if err == nil {
				err = k.Add("f", fmt.Sprintf("c%d", i), newPub(t), nil)
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

// TestKnownDevicesAddIsACompareAndSet: two publishers enrol the same device on first use
// with different keys; the second finds the first's key on file, writes nothing, and is
// told so. A re-enrolment that names the key it replaces goes through.
func TestKnownDevicesAddIsACompareAndSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_devices")
	a, _ := LoadKnownDevices(path)
	b, _ := LoadKnownDevices(path)
	first, second := newPub(t), newPub(t)
	if err := a.Add("f", "d1", first, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Add("f", "d1", second, nil); !errors.Is(err, ErrEnrolmentChanged) {
		t.Fatalf("a second first use = %v; want ErrEnrolmentChanged", err)
	}
	got, _ := LoadKnownDevices(path)
	if k, _ := got.Lookup("f", "d1"); !SameKey(k, first) {
		t.Errorf("the first enrolment was overwritten")
	}
	if err := b.Add("f", "d1", second, first); err != nil {
		t.Errorf("re-enrolment naming the replaced key: %v", err)
	}
}
