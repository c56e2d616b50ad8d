package provision

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/fleetprov/fleetprov/core/config"
)

// Signature namespaces admin keys are allowed for in allowed_signers.
const signerNamespaces = "fleetprov-envelope-v1,fleetprov-http-v1"

// derivedFiles returns the files a model derives into the candidate (besides config.toml
// and quadlet/), by relative path, all mode 0600.
func derivedFiles(m config.Model) (map[string][]byte, error) {
	out := map[string][]byte{}
	put := func(name string, v any) error {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encoding %s: %w", name, err)
		}
		out[name] = append(b, '\n')
		return nil
	}
	out["allowed_signers"] = AllowedSigners(m)
	type userJSON struct {
		IsAdmin bool   `json:"isAdmin"`
		SSHKey  string `json:"ssh_key"`
		Shell   string `json:"shell,omitempty"`
	}
	users := map[string]userJSON{}
	for name, u := range m.Users {
		users[name] = userJSON(u)
		if u.SSHKey != "" {
			out[filepath.Join("ssh-authorized-keys", name)] = []byte(u.SSHKey + "\n")
		}
	}
	fw := config.Inbound{}
	host := hostNetwork{DNSServers: []string{}, DNSSearchDomains: []string{}, Interfaces: map[string]config.Interface{}}
	if n := m.Network; n != nil {
		if n.Firewall != nil {
			fw = n.Firewall.Inbound
		}
		host = hostNetwork{DNSServers: orEmpty(n.DNSServers), DNSSearchDomains: orEmpty(n.DNSSearchDomains),
			DefaultGateway: n.DefaultGateway, Interfaces: n.Interfaces}
		if host.Interfaces == nil {
			host.Interfaces = map[string]config.Interface{}
		}
	}
	steps := []struct {
		name string
		v    any
	}{
		{"users.json", users},
		{"firewall-inbound.json", fw},
		{"lan-settings.json", LAN(m)},
		{"host-network.json", host},
		{"activation-policy.json", m.Activation},
	}
	if m.OSUpgrade != nil {
		steps = append(steps, struct {
			name string
			v    any
		}{"os-upgrade.json", m.OSUpgrade})
	}
	for _, s := range steps {
		if err := put(s.name, s.v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AllowedSigners renders the admin keys in OpenSSH allowed_signers format, principal = user
// name, restricted to fleetprov's signature namespaces.
func AllowedSigners(m config.Model) []byte {
	var b strings.Builder
	for _, name := range m.Admins() {
		fmt.Fprintf(&b, "%s namespaces=%q %s\n", name, signerNamespaces, m.Users[name].SSHKey)
	}
	return []byte(b.String())
}

type hostNetwork struct {
	DNSServers       []string                    `json:"dns_servers"`
	DNSSearchDomains []string                    `json:"dns_search_domains"`
	DefaultGateway   string                      `json:"default_gateway,omitempty"`
	Interfaces       map[string]config.Interface `json:"interfaces"`
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// LANSettings is lan-settings.json: the LAN gateway, DHCP range and names.
type LANSettings struct {
	GatewayCIDR     string   `json:"gateway_cidr"`
	GatewayIP       string   `json:"gateway_ip"`
	SubnetCIDR      string   `json:"subnet_cidr"`
	Netmask         string   `json:"netmask"`
	DHCPStart       string   `json:"dhcp_start"`
	DHCPEnd         string   `json:"dhcp_end"`
	Domain          string   `json:"domain"`
	HostnamePattern string   `json:"hostname_pattern"`
	GatewayAliases  []string `json:"gateway_aliases"`
	NTPServers      []string `json:"ntp_servers"`
}

// LAN computes the LAN settings, with the defaults of config-v1 where the config is silent.
func LAN(m config.Model) LANSettings {
	dm := config.Dnsmasq{GatewayCIDR: config.DefaultGatewayCIDR, Domain: config.DefaultDomain, GatewayAliases: []string{"atomixos"}}
	ntp := []string{config.DefaultNTPServer}
	if n := m.Network; n != nil {
		if n.Dnsmasq != nil {
			dm = *n.Dnsmasq
		} else if eth1, ok := n.Interfaces["eth1"]; ok && eth1.Address != "" {
			dm.GatewayCIDR = eth1.Address
		}
		if n.NTP != nil {
			ntp = n.NTP.Servers
		}
	}
	pfx := netip.MustParsePrefix(dm.GatewayCIDR)
	subnet := pfx.Masked()
	if dm.DHCPStart == "" {
		a := subnet.Addr()
		for i := 0; i < 10; i++ {
			a = a.Next()
		}
		e := subnet.Addr()
		for i := 0; i < 254; i++ {
			e = e.Next()
		}
		dm.DHCPStart, dm.DHCPEnd = a.String(), e.String()
	}
	bits := pfx.Bits()
	var mv uint32 = ^uint32(0) << (32 - bits)
	netmask := netip.AddrFrom4([4]byte{byte(mv >> 24), byte(mv >> 16), byte(mv >> 8), byte(mv)})
	return LANSettings{
		GatewayCIDR: dm.GatewayCIDR, GatewayIP: pfx.Addr().String(), SubnetCIDR: subnet.String(), Netmask: netmask.String(),
		DHCPStart: dm.DHCPStart, DHCPEnd: dm.DHCPEnd, Domain: dm.Domain, HostnamePattern: dm.HostnamePattern,
		GatewayAliases: dm.GatewayAliases, NTPServers: ntp,
	}
}
