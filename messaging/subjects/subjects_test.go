package subjects

import (
	"errors"
	"strings"
	"testing"
)

func TestBuildParse(t *testing.T) {
	tests := []struct {
		name string
		s    Subject
		want string
	}{
		{"device", Subject{Fleet: "prod", Kind: Device, Name: "gw-01", Op: "apply"}, "fleetprov.prod.dev.gw-01.apply"},
		{"group", Subject{Fleet: "prod", Kind: Group, Name: "edge", Op: "ping"}, "fleetprov.prod.grp.edge.ping"},
		{"all", Subject{Fleet: "prod", Kind: All, Op: "validate"}, "fleetprov.prod.all.validate"},
		{"event", Subject{Fleet: "prod", Kind: Event, Name: "gw-01", Job: "0193a-b"}, "fleetprov.prod.evt.gw-01.0193a-b"},
		{"presence", Subject{Fleet: "prod", Kind: Presence, Name: "gw-01"}, "fleetprov.prod.presence.gw-01"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Build(tc.s)
			if err != nil || got != tc.want {
				t.Fatalf("Build() = %q, %v; want %q", got, err, tc.want)
			}
			back, err := Parse(got)
			if err != nil || back != tc.s {
				t.Errorf("Parse(%q) = %+v, %v; want %+v", got, back, err, tc.s)
			}
		})
	}
}

func TestRejects(t *testing.T) {
	for _, s := range []string{"", "fleetprov", "nats.prod.dev.a.apply", "fleetprov.prod.dev.a", "fleetprov.prod.dev.a.reboot",
		"fleetprov.prod.dev.a b.apply", "fleetprov.prod.dev.*.apply", "fleetprov.prod.dev.>.apply", "fleetprov.p.r.o.d.dev.a.apply",
		"fleetprov.prod.all.apply.x", "fleetprov." + strings.Repeat("a", 65) + ".all.ping", "fleetprov.prod.xyz.a"} {
		if _, err := Parse(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) error = %v; want ErrInvalid", s, err)
		}
	}
	if _, err := Build(Subject{Fleet: "a.b", Kind: All, Op: "ping"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Build with a dotted fleet: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"fleetprov.prod.dev.gw.apply", "fleetprov.prod.all.ping", "fleetprov.p.evt.d.j", "fleetprov.a.grp.b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		// Property: a parsed subject builds back to the same string, with safe tokens only.
		if got, err := Build(p); err != nil || got != s {
			t.Fatalf("Build(Parse(%q)) = %q, %v", s, got, err)
		}
		if strings.ContainsAny(s, "*> \t") {
			t.Fatalf("Parse accepted wildcard or space in %q", s)
		}
	})
}

func TestKVDeleted(t *testing.T) {
	for op, want := range map[string]bool{"DEL": true, "PURGE": true, "": false, "PUT": false} {
		h := map[string][]string{}
		if op != "" {
			h[KVOperationHeader] = []string{op}
		}
		if got := KVDeleted(h); got != want {
			t.Errorf("KVDeleted(%q) = %v", op, got)
		}
	}
}
