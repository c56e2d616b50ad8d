package config_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/config/configtest"
)

func parseFixture(t *testing.T, raw []byte) (config.Model, config.Report, error) {
	t.Helper()
	return config.Parse(raw, config.Options{})
}

func TestFixtureVerdicts(t *testing.T) {
	tests := []struct {
		name     string
		raw      func(t *testing.T) []byte
		wantPath string
		wantMsg  string // empty: valid
	}{
		{"caddy_oidc_as_shipped", func(t *testing.T) []byte { return configtest.Fixture(t, "caddy-oidc.config.toml") }, "users.admin.ssh_key", "invalid ssh_key"},
		{"caddy_oidc_with_real_key", func(t *testing.T) []byte { return configtest.CaddyWithKey(t, configtest.AdminKey) }, "", ""},
		{"vm_full", func(t *testing.T) []byte { return configtest.Fixture(t, "vm-full.config.toml") }, "", ""},
		{"vm_invalid_unknown_required_unit", func(t *testing.T) []byte {
			return configtest.Fixture(t, "vm-invalid-unknown-required-unit.config.toml")
		}, "activation.required", "activation.required references unknown unit: missing-service"},
		{"vm_invalid_dhcp_range_includes_gateway", func(t *testing.T) []byte {
			return configtest.Fixture(t, "vm-invalid-dhcp-range-includes-gateway.config.toml")
		}, "network.dnsmasq", "network.dnsmasq.dhcp_start and network.dnsmasq.dhcp_end must not include the gateway IP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, r, err := parseFixture(t, tc.raw(t))
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("Parse() error = %v; want valid:\n%s", err, r.String())
				}
				return
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("Parse() error = %v; want ErrInvalid", err)
			}
			if len(r.Errors()) != 1 {
				t.Errorf("Parse() reported %d errors; want exactly 1:\n%s", len(r.Errors()), r.String())
			}
			e := r.Errors()[0]
			if e.Path != tc.wantPath || !strings.Contains(e.Error(), tc.wantMsg) {
				t.Errorf("Parse() error entry = %q; want path %q containing %q", e.Error(), tc.wantPath, tc.wantMsg)
			}
		})
	}
}

func TestVMFullModel(t *testing.T) {
	m, r, err := parseFixture(t, configtest.Fixture(t, "vm-full.config.toml"))
	if err != nil {
		t.Fatalf("Parse() error = %v\n%s", err, r.String())
	}
	wantUnits := []config.Unit{
		{Name: "edgeproxy", Kind: "container", Filename: "edgeproxy.container", Service: "edgeproxy.service", Mode: "rootful"},
		{Name: "myapp", Kind: "container", Filename: "myapp.container", Service: "myapp.service", Mode: "rootless"},
		{Name: "frontend", Kind: "network", Filename: "frontend.network", Service: "frontend-network.service", Mode: "rootful"},
		{Name: "app-data", Kind: "volume", Filename: "app-data.volume", Service: "app-data-volume.service", Mode: "rootful"},
		{Name: "custom-ws", Kind: "build", Filename: "custom-ws.build", Service: "custom-ws-build.service", Mode: "rootful"},
	}
	if diff := cmp.Diff(wantUnits, m.Units()); diff != "" {
		t.Errorf("Units() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"edgeproxy", "myapp"}, m.Activation.Required); diff != "" {
		t.Errorf("Activation.Required mismatch (-want +got):\n%s", diff)
	}
	wantFW := &config.Firewall{Inbound: config.Inbound{
		WAN: &config.PortScope{TCP: []int{80, 443}, UDP: []int{1194}},
		LAN: &config.PortScope{TCP: []int{443}},
	}}
	if diff := cmp.Diff(wantFW, m.Network.Firewall); diff != "" {
		t.Errorf("Firewall mismatch (-want +got):\n%s", diff)
	}
	wantDnsmasq := &config.Dnsmasq{Enable: true, Interface: "eth1", GatewayCIDR: "10.44.0.1/24", DHCPStart: "10.44.0.10",
		DHCPEnd: "10.44.0.200", Domain: "lab", HostnamePattern: "gateway-{mac}", GatewayAliases: []string{"atomixos", "gateway.lab"}}
	if diff := cmp.Diff(wantDnsmasq, m.Network.Dnsmasq); diff != "" {
		t.Errorf("Dnsmasq mismatch (-want +got):\n%s", diff)
	}
	if got := m.Users["guest"]; got.IsAdmin || got.SSHKey != "" {
		t.Errorf("Users[guest] = %+v; want a non-admin without key", got)
	}
	var warnings []string
	for _, w := range r.Warnings() {
		warnings = append(warnings, w.Path)
	}
	wantWarn := []string{"containers.container.myapp.Container.Network", "containers.container.myapp.Container.PublishPort"}
	if diff := cmp.Diff(wantWarn, warnings); diff != "" {
		t.Errorf("warning paths mismatch (-want +got):\n%s", diff)
	}
	eff, _, _ := config.EffectiveContainer("myapp", m.Containers.Container["myapp"])
	var lines []string
	for _, d := range eff {
		if d.Key == "Network" || d.Key == "PublishPort" {
			for _, v := range d.Values {
				lines = append(lines, d.Key+"="+v.String())
			}
		}
	}
	wantLines := []string{"Network=pasta", "PublishPort=127.0.0.1:10080:80", "PublishPort=127.0.0.1:10081:81"}
	if diff := cmp.Diff(wantLines, lines); diff != "" {
		t.Errorf("effective myapp directives mismatch (-want +got):\n%s", diff)
	}
}

func TestCaddyModel(t *testing.T) {
	m, r, err := parseFixture(t, configtest.CaddyWithKey(t, configtest.AdminKey))
	if err != nil {
		t.Fatalf("Parse() error = %v\n%s", err, r.String())
	}
	modes := map[string]string{}
	for _, u := range m.Units() {
		modes[u.Filename] = u.Mode
	}
	want := map[string]string{
		"caddy-gateway.container": "rootful", "cockpit-ws.container": "rootful", "management.network": "rootful",
		"caddy-data.volume": "rootful", "cockpit-ws.build": "rootful",
	}
	if diff := cmp.Diff(want, modes); diff != "" {
		t.Errorf("unit modes mismatch (-want +got):\n%s", diff)
	}
	for _, name := range []string{"caddy-gateway", "cockpit-ws"} {
		eff, _, errs := config.EffectiveContainer(name, m.Containers.Container[name])
		if len(errs) > 0 {
			t.Errorf("EffectiveContainer(%s) errors = %v", name, errs)
		}
		if got := eff.Get("Network"); len(got) != 1 || got[0].String() != "host" {
			t.Errorf("EffectiveContainer(%s) Network = %v; want [host]", name, got)
		}
	}
}

func TestRoundTripFixtures(t *testing.T) {
	for _, raw := range [][]byte{configtest.Fixture(t, "vm-full.config.toml"), configtest.CaddyWithKey(t, configtest.AdminKey)} {
		m, _, err := parseFixture(t, raw)
		if err != nil {
			t.Fatal(err)
		}
		enc := config.Encode(m)
		m2, r2, err := parseFixture(t, enc)
		if err != nil {
			t.Fatalf("Parse(Encode(m)) error = %v\n%s\n--- encoded ---\n%s", err, r2.String(), enc)
		}
		if diff := cmp.Diff(m, m2); diff != "" {
			t.Errorf("Parse(Encode(m)) != m (-m +got):\n%s", diff)
		}
		if enc2 := config.Encode(m2); string(enc2) != string(enc) {
			t.Errorf("Encode is not stable:\n%s\n---\n%s", enc, enc2)
		}
	}
}

func BenchmarkParseVMFull(b *testing.B) {
	raw := configtest.Fixture(b, "vm-full.config.toml")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := config.Parse(raw, config.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
