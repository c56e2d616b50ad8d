package provision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/core/provision/provisiontest"
)

func TestApplyPatch(t *testing.T) {
	base, _, err := config.Parse(configtest.Fixture(t, "vm-full.config.toml"), config.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, bob := configtest.NewKey(t)
	tests := []struct {
		name    string
		patch   config.Patch
		invalid bool
		check   func(t *testing.T, m config.Model)
	}{
		{name: "put_user", patch: config.Patch{Kind: "users", Name: "bob", Op: "put", Value: json.RawMessage(`{"isAdmin":true,"ssh_key":"` + bob + `","shell":"bash"}`)},
			check: func(t *testing.T, m config.Model) {
				if u := m.Users["bob"]; !u.IsAdmin || u.Shell != "bash" {
					t.Errorf("bob = %+v", u)
				}
			}},
		{name: "delete_user", patch: config.Patch{Kind: "users", Name: "guest", Op: "delete"},
			check: func(t *testing.T, m config.Model) {
				if _, ok := m.Users["guest"]; ok {
					t.Error("guest still there")
				}
			}},
		{name: "delete_last_admin_invalid", patch: config.Patch{Kind: "users", Name: "admin", Op: "delete"}, invalid: true},
		{name: "user_wrong_shape", patch: config.Patch{Kind: "users", Name: "bob", Op: "put", Value: json.RawMessage(`{"isAdmin":"yes"}`)}, invalid: true},
		{name: "user_not_object", patch: config.Patch{Kind: "users", Name: "bob", Op: "put", Value: json.RawMessage(`[1]`)}, invalid: true},
		{name: "merge_network_null_deletes", patch: config.Patch{Kind: "network", Op: "merge", Value: json.RawMessage(`{"ntp":null,"dns_servers":["9.9.9.9"],"firewall":{"inbound":{"wan":{"tcp":[443]}}}}`)},
			check: func(t *testing.T, m config.Model) {
				if m.Network.NTP != nil || m.Network.DNSServers[0] != "9.9.9.9" || len(m.Network.Firewall.Inbound.WAN.TCP) != 1 || m.Network.Dnsmasq == nil {
					t.Errorf("network = %+v", m.Network)
				}
			}},
		{name: "merge_network_bad_port", patch: config.Patch{Kind: "network", Op: "merge", Value: json.RawMessage(`{"firewall":{"inbound":{"wan":{"tcp":[8080]}}}}`)}, invalid: true},
		{name: "merge_activation", patch: config.Patch{Kind: "activation", Op: "merge", Value: json.RawMessage(`{"timeout_seconds":60,"settle_seconds":2}`)},
			check: func(t *testing.T, m config.Model) {
				if m.Activation.TimeoutSeconds != 60 || m.Activation.SettleSeconds != 2 {
					t.Errorf("activation = %+v", m.Activation)
				}
			}},
		{name: "activation_float_rejected", patch: config.Patch{Kind: "activation", Op: "merge", Value: json.RawMessage(`{"timeout_seconds":1.5}`)}, invalid: true},
		{name: "delete_container_drops_activation_refs", patch: config.Patch{Kind: "containers", Name: "myapp", Op: "delete"},
			check: func(t *testing.T, m config.Model) {
				if len(m.Activation.Required) != 1 || m.Activation.Required[0] != "edgeproxy" {
					t.Errorf("required = %v", m.Activation.Required)
				}
			}},
		{name: "put_container", patch: config.Patch{Kind: "containers", Name: "extra", Op: "put", Value: json.RawMessage(`{"privileged":false,"Container":{"Image":"busybox","PublishPort":["9000:80"]}}`)},
			check: func(t *testing.T, m config.Model) {
				if m.Containers.Container["extra"].Container.Get("Image")[0].Str != "busybox" {
					t.Errorf("extra = %+v", m.Containers.Container["extra"])
				}
			}},
		{name: "put_volume", patch: config.Patch{Kind: "container-volumes", Name: "data", Op: "put", Value: json.RawMessage(`{"Volume":{"Driver":"local"}}`)},
			check: func(t *testing.T, m config.Model) {
				if len(m.Containers.Volume["data"]) != 1 {
					t.Errorf("volumes = %+v", m.Containers.Volume)
				}
			}},
		{name: "delete_missing_network", patch: config.Patch{Kind: "container-networks", Name: "nope", Op: "delete"}, invalid: true},
		{name: "unknown_kind", patch: config.Patch{Kind: "kernel", Op: "merge", Value: json.RawMessage(`{}`)}, invalid: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := provision.ApplyPatch(base, tc.patch, config.Options{})
			var ie *provision.InvalidError
			if tc.invalid {
				if !errors.As(err, &ie) || len(ie.Report.Errors()) == 0 {
					t.Fatalf("ApplyPatch() error = %v; want an InvalidError with findings", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ApplyPatch() error = %v", err)
			}
			tc.check(t, m)
		})
	}
}

// TestPatchOnStaleBaseRefused: a patch prepared on one active config must not write back
// that config's other contents after another apply replaced it (an admin removed by
// `worker import` would come back).
func TestPatchOnStaleBaseRefused(t *testing.T) {
	d := provisiontest.New(t)
	_, aLine := configtest.NewKey(t)
	_, bLine := configtest.NewKey(t)
	withB := append(configtest.FixtureWithAdmin(t, "vm-full.config.toml", aLine), []byte("\n[users.bob]\nisAdmin = true\nssh_key = \""+bLine+"\"\n")...)
	withoutB := configtest.FixtureWithAdmin(t, "vm-full.config.toml", aLine)
	ctx := context.Background()
	if _, err := d.Prov.Apply(ctx, provision.Input{Reader: bytes.NewReader(withB)}, nil); err != nil {
		t.Fatal(err)
	}
	in, err := d.Prov.PreparePatch(config.Patch{Kind: "users", Name: "carol", Op: "put", Value: json.RawMessage(`{"isAdmin":false}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Prov.Apply(ctx, provision.Input{Reader: bytes.NewReader(withoutB)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Prov.Apply(ctx, in, nil); !errors.Is(err, provision.ErrStaleBase) {
		t.Fatalf("patch on a stale base = %v; want ErrStaleBase", err)
	}
	if got, _ := os.ReadFile(filepath.Join(d.StateDir, "config", "config.toml")); !bytes.Equal(got, withoutB) {
		t.Error("the stale patch changed the active config")
	}
}
