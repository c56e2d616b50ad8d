package provision_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/provision"
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
