package secrets

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
)

func newKey(t testing.TB) (*Keyring, age.Recipient) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := NewKeyring(priv)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	r, err := Recipient(sp)
	if err != nil {
		t.Fatal(err)
	}
	return kr, r
}

func TestSealOpen(t *testing.T) {
	kr, r := newKey(t)
	other, or := newKey(t)
	v := Values{"db-password": []byte("hunter2"), "empty": {}}
	sealed, err := Seal(v, r, or)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter2")) {
		t.Fatal("plaintext in the ciphertext")
	}
	for _, k := range []*Keyring{kr, other} {
		got, err := k.Open(sealed)
		if err != nil || string(got["db-password"]) != "hunter2" || len(got) != 2 {
			t.Fatalf("Open = %v, %v", got, err)
		}
	}
	third, _ := newKey(t)
	if _, err := third.Open(sealed); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("a non-recipient opened it: %v", err)
	}
	// One flipped bit anywhere in the payload is refused.
	bad := bytes.Clone(sealed)
	bad[len(bad)-5] ^= 1
	if _, err := kr.Open(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("tampered: %v", err)
	}
	// A valid age file that is not a fleetprov set is refused.
	var buf bytes.Buffer
	w, _ := age.Encrypt(&buf, r)
	w.Write([]byte(`{"v":2}`))
	w.Close()
	if _, err := kr.Open(buf.Bytes()); !errors.Is(err, ErrMalformed) {
		t.Errorf("foreign plaintext: %v", err)
	}
}

func TestSealLimits(t *testing.T) {
	_, r := newKey(t)
	for _, v := range []Values{{"Bad/Name": nil}, {"big": make([]byte, MaxValue+1)}} {
		if _, err := Seal(v, r); !errors.Is(err, ErrMalformed) {
			t.Errorf("Seal(%v) = %v", v.Names(), err)
		}
	}
	many := Values{}
	for i := range MaxCount + 1 {
		many[fmt.Sprintf("s%d", i)] = nil
	}
	if _, err := Seal(many, r); !errors.Is(err, ErrMalformed) {
		t.Errorf("too many: %v", err)
	}
}

// Digests are keyed: stable on one device, different across devices and values.
func TestDigestKeyed(t *testing.T) {
	a, _ := newKey(t)
	b, _ := newKey(t)
	d1, d2 := a.Digest("x", []byte("v")), a.Digest("x", []byte("v"))
	if d1 != d2 {
		t.Error("not stable")
	}
	if a.Digest("x", []byte("v")) == b.Digest("x", []byte("v")) || a.Digest("x", []byte("v")) == a.Digest("x", []byte("w")) ||
		a.Digest("x", []byte("v")) == a.Digest("y", []byte("v")) {
		t.Error("digests collide")
	}
}

func TestSaveLoad(t *testing.T) {
	kr, _ := newKey(t)
	dir := t.TempDir()
	v := Values{"a": []byte("1")}
	man := Manifest{"a": {Digest: kr.Digest("a", v["a"])}}
	if err := kr.Save(dir, v, man); err != nil {
		t.Fatal(err)
	}
	got, gm, err := kr.Load(dir)
	if err != nil || string(got["a"]) != "1" || gm["a"].Digest != man["a"].Digest {
		t.Fatalf("Load = %v %v %v", got, gm, err)
	}
	if err := kr.Save(dir, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _, err := kr.Load(dir); err != nil || len(got) != 0 {
		t.Errorf("after clearing: %v %v", got, err)
	}
}

func FuzzOpen(f *testing.F) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	pub := priv.Public().(ed25519.PublicKey)
	kr, err := NewKeyring(priv)
	if err != nil {
		f.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	r, _ := Recipient(sp)
	// The fuzzer writes the plaintext, sealed to the device as a sender would (random
	// ciphertext never gets past age's authentication, and would test age, not Open).
	f.Add([]byte(`{"v":1,"values":{"a":"eA=="}}`))
	f.Add([]byte(`{"v":1,"values":{"Bad/Name":"eA=="}}`))
	f.Add([]byte(`{"v":2,"values":{}}`))
	f.Add([]byte(`{"v":1,"values":{"a":"eA=="},"x":1}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pt []byte) {
		var sealed bytes.Buffer
		w, err := age.Encrypt(&sealed, r)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(pt)
		w.Close()
		v, err := kr.Open(sealed.Bytes())
		if err == nil {
			if cerr := v.Check(); cerr != nil {
				t.Fatalf("Open accepted a set that fails Check: %v", cerr)
			}
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("Open of a sealed plaintext: %v, not ErrMalformed", err)
		}
	})
}

// TestOpenRefusesBadNames: a set sealed by someone who skipped Seal's checks (a hand-made
// age file) is refused when opened.
func TestOpenRefusesBadNames(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	kr, _ := NewKeyring(priv)
	sp, _ := ssh.NewPublicKey(priv.Public().(ed25519.PublicKey))
	r, _ := Recipient(sp)
	var sealed bytes.Buffer
	w, _ := age.Encrypt(&sealed, r)
	w.Write([]byte(`{"v":1,"values":{"Bad/Name":"eA=="}}`))
	w.Close()
	if _, err := kr.Open(sealed.Bytes()); !errors.Is(err, ErrMalformed) {
		t.Errorf("Open of a bad name = %v; want ErrMalformed", err)
	}
}

// BenchmarkSeal compares the two ways to send one secret to 1,000 devices: one age file
// with 1,000 recipients (what every device would download) and one small file per device
// (what fleetprov does: each envelope is per device anyway).
func BenchmarkSeal(b *testing.B) {
	const n = 1000
	rs := make([]age.Recipient, n)
	for i := range rs {
		_, r := newKey(b)
		rs[i] = r
	}
	v := Values{"db-password": bytes.Repeat([]byte("x"), 32)}
	b.Run("one-file-1000-recipients", func(b *testing.B) {
		var size int
		for b.Loop() {
			s, err := Seal(v, rs...)
			if err != nil {
				b.Fatal(err)
			}
			size = len(s)
		}
		b.ReportMetric(float64(size), "bytes/file")
		b.ReportMetric(float64(size*n), "bytes-downloaded/push")
	})
	b.Run("per-device-1000-files", func(b *testing.B) {
		var size int
		for b.Loop() {
			size = 0
			for _, r := range rs {
				s, err := Seal(v, r)
				if err != nil {
					b.Fatal(err)
				}
				size += len(s)
			}
		}
		b.ReportMetric(float64(size/n), "bytes/file")
		b.ReportMetric(float64(size), "bytes-downloaded/push")
	})
}

// BenchmarkOpen is the device's cost to open its sealed set.
func BenchmarkOpen(b *testing.B) {
	kr, r := newKey(b)
	s, _ := Seal(Values{"db-password": []byte("hunter2"), "api-token": bytes.Repeat([]byte("t"), 64)}, r)
	for b.Loop() {
		if _, err := kr.Open(s); err != nil {
			b.Fatal(err)
		}
	}
}
