package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzParse checks properties, not just "no panic": a non-nil error comes with a fatal
// report and a nil error without one; every valid model survives Encode and Parse
// unchanged; and a valid model's canonical form is stable.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("..", "..", "test", "testdata", "atomixos", "*.toml"))
	if err != nil || len(seeds) == 0 {
		f.Fatalf("FuzzParse: no seed fixtures in test/testdata/atomixos (%v)", err)
	}
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(doc{}.String()))
	f.Add([]byte(doc{network: "[network.dnsmasq]\ngateway_cidr = \"10.0.0.1/24\"\n[network.ntp]\nservers=[\"a.b\"]"}.String()))
	f.Add([]byte(doc{containers: webWith(false, "PublishPort = [\"1:2\", \"[::1]:3:4\"]\nExec = [\"a b\", 1, true]")}.String()))
	f.Add([]byte(doc{fleet: "[fleet]\ngroups=[\"g\"]\n[fleet.signers.admin]\nops=[\"apply\"]"}.String()))
	f.Add([]byte(doc{activation: "[activation]\nrequired=[\"web\"]\n[activation.health.web]\nhttp=\"http://127.0.0.1:1/\"\nbody_contains=\"ok\"\nretries=3"}.String()))
	f.Add([]byte(doc{activation: "[activation]\nrequired=[\"web\"]\n[activation.health.web]\nexec=[\"true\"]\nexec_in=\"host\""}.String()))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m, r, err := Parse(raw, Options{})
		if (err != nil) != r.Fatal() {
			t.Fatalf("Parse() error = %v but report.Fatal() = %v\n%s", err, r.Fatal(), r.String())
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Parse() error = %v; not one of the documented sentinels", err)
			}
			return
		}
		enc := Encode(m)
		m2, r2, err := Parse(enc, Options{})
		if err != nil {
			t.Fatalf("Parse(Encode(m)) error = %v\n%s\n--- input ---\n%q\n--- encoded ---\n%s", err, r2.String(), raw, enc)
		}
		if diff := cmp.Diff(m, m2); diff != "" {
			t.Fatalf("Parse(Encode(m)) != m (-m +got):\n%s\n--- input ---\n%q", diff, raw)
		}
		if enc2 := Encode(m2); string(enc2) != string(enc) {
			t.Fatalf("Encode not stable:\n%s\n---\n%s", enc, enc2)
		}
	})
}
