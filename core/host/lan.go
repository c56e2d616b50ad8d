package host

import (
	"net/netip"

	"github.com/fleetprov/fleetprov/core/config"
)

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
