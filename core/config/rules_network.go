package config

import (
	"net/netip"
	"net/url"
	"strings"
)

// IsDNSName reports whether s is a DNS name: labels of 1-63 [A-Za-z0-9-] without a leading
// or trailing '-', at most 253 characters without the optional trailing dot.
func IsDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func normalizeDNSName(s string) string { return strings.ToLower(strings.TrimSuffix(s, ".")) }

func hasSpaceOrControl(s string) bool {
	for _, c := range s {
		if c <= 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

func (d *decoder) ipList(t map[string]any, p Path, key string) []string {
	list, _ := d.strList(t, p, key)
	var out []string
	for i, s := range list {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			d.r.Errorf(p.Key(key).Index(i), "expected an IPv4 or IPv6 address, got %q", s)
			continue
		}
		out = append(out, a.String())
	}
	return out
}

func (d *decoder) dnsList(t map[string]any, p Path, key string) []string {
	list, _ := d.strList(t, p, key)
	var out []string
	for i, s := range list {
		if !IsDNSName(s) {
			d.r.Errorf(p.Key(key).Index(i), "expected a DNS name, got %q", s)
			continue
		}
		out = append(out, normalizeDNSName(s))
	}
	return dedupe(out)
}

func (d *decoder) ipv4(t map[string]any, p Path, key string) string {
	s, ok := d.str(t, p, key)
	if !ok {
		return ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		d.r.Errorf(p.Key(key), "expected an IPv4 address, got %q", s)
		return ""
	}
	return a.String()
}

func (d *decoder) network(t map[string]any, p Path) *Network {
	n := &Network{
		DNSServers:       d.ipList(t, p, "dns_servers"),
		DNSSearchDomains: d.dnsList(t, p, "dns_search_domains"),
		DefaultGateway:   d.ipv4(t, p, "default_gateway"),
	}
	if it, ok := d.table(t, p, "interfaces"); ok {
		n.Interfaces = map[string]Interface{}
		for _, name := range d.keys(it, p.Key("interfaces")) {
			ip := p.Key("interfaces").Key(name)
			tt, ok := d.table(it, p.Key("interfaces"), name)
			if !ok {
				continue
			}
			n.Interfaces[name] = d.iface(tt, ip, name)
		}
		if len(n.Interfaces) == 0 {
			n.Interfaces = nil
		}
	}
	if dt, ok := d.table(t, p, "dnsmasq"); ok {
		n.Dnsmasq = d.dnsmasq(dt, p.Key("dnsmasq"), n.Interfaces)
	}
	if nt, ok := d.table(t, p, "ntp"); ok {
		n.NTP = d.ntp(nt, p.Key("ntp"))
	}
	if ft, ok := d.table(t, p, "firewall"); ok {
		n.Firewall = d.firewall(ft, p.Key("firewall"))
	}
	return n
}

func (d *decoder) iface(t map[string]any, p Path, name string) Interface {
	var it Interface
	it.Mode, _ = d.str(t, p, "mode")
	addr, hasAddr := d.str(t, p, "address")
	switch {
	case it.Mode == "static" && !hasAddr:
		d.r.Errorf(p.Key("address"), "is required when mode is static")
	case it.Mode == "dhcp" && hasAddr:
		d.r.Errorf(p.Key("address"), "must not be set when mode is dhcp")
	case hasAddr:
		pfx, err := netip.ParsePrefix(addr)
		if err != nil || !pfx.Addr().Is4() {
			d.r.Errorf(p.Key("address"), "expected an IPv4 address with prefix (CIDR), got %q", addr)
		} else {
			it.Address = pfx.String()
		}
	}
	if name == "eth1" && it.Mode == "dhcp" {
		d.r.Errorf(p.Key("mode"), "eth1 must be static: it is the LAN gateway")
	}
	it.Gateway = d.ipv4(t, p, "gateway")
	it.DNSServers = d.ipList(t, p, "dns_servers")
	it.DNSSearchDomains = d.dnsList(t, p, "dns_search_domains")
	return it
}

func (d *decoder) dnsmasq(t map[string]any, p Path, ifaces map[string]Interface) *Dnsmasq {
	dm := &Dnsmasq{Enable: true, Interface: "eth1", Domain: DefaultDomain, GatewayAliases: []string{"atomixos"}}
	gw, hasGW := d.str(t, p, "gateway_cidr")
	eth1 := ifaces["eth1"].Address
	var pfx netip.Prefix
	switch {
	case hasGW:
		var err error
		pfx, err = netip.ParsePrefix(gw)
		if err != nil || !pfx.Addr().Is4() {
			d.r.Errorf(p.Key("gateway_cidr"), "expected an IPv4 interface address with prefix, e.g. 172.20.30.1/24, got %q", gw)
			return dm
		}
		if eth1 != "" && eth1 != pfx.String() {
			d.r.Errorf(p.Key("gateway_cidr"), "must equal network.interfaces.eth1.address (%s) when both are set", eth1)
		}
	case eth1 != "":
		pfx = netip.MustParsePrefix(eth1)
	default:
		pfx = netip.MustParsePrefix(DefaultGatewayCIDR)
	}
	dm.GatewayCIDR = pfx.String()
	if pfx.Bits() < 16 || pfx.Bits() > 30 {
		d.r.Errorf(p.Key("gateway_cidr"), "prefix length must be in /16../30, got /%d", pfx.Bits())
		return dm
	}
	subnet := pfx.Masked()
	gwIP := pfx.Addr()
	if gwIP == subnet.Addr() || gwIP == lastAddr(subnet) {
		d.r.Errorf(p.Key("gateway_cidr"), "the gateway must be a host address, not the subnet's network or broadcast address")
	}
	start, end := nthAddr(subnet, 10), nthAddr(subnet, 254)
	if pfx.Bits() > 24 {
		start, end = nthAddr(subnet, 2), prevAddr(lastAddr(subnet))
	}
	okRange := true
	for _, f := range []struct {
		key string
		dst *netip.Addr
	}{{"dhcp_start", &start}, {"dhcp_end", &end}} {
		s, ok := d.str(t, p, f.key)
		if !ok {
			continue
		}
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil || !a.Is4():
			d.r.Errorf(p.Key(f.key), "expected an IPv4 address, got %q", s)
			okRange = false
		case !subnet.Contains(a):
			d.r.Errorf(p.Key(f.key), "%s is outside the LAN subnet %s", s, subnet)
			okRange = false
		default:
			*f.dst = a
		}
	}
	if okRange {
		if end.Less(start) {
			d.r.Errorf(p.Key("dhcp_start"), "network.dnsmasq.dhcp_start must not be after network.dnsmasq.dhcp_end")
		} else if !gwIP.Less(start) && !end.Less(gwIP) {
			d.r.Errorf(p, "network.dnsmasq.dhcp_start and network.dnsmasq.dhcp_end must not include the gateway IP (%s)", gwIP)
		}
	}
	dm.DHCPStart, dm.DHCPEnd = start.String(), end.String()
	if dom, ok := d.str(t, p, "domain"); ok {
		if !IsDNSName(dom) {
			d.r.Errorf(p.Key("domain"), "expected a DNS name, got %q", dom)
		}
		dm.Domain = normalizeDNSName(dom)
	}
	if hp, ok := d.str(t, p, "hostname_pattern"); ok {
		switch {
		case hp != "" && !strings.Contains(hp, "{mac}"):
			d.r.Errorf(p.Key("hostname_pattern"), "must contain {mac}")
		case hp != "" && !IsDNSName(strings.ReplaceAll(hp, "{mac}", "001122334455")):
			d.r.Errorf(p.Key("hostname_pattern"), "must be a DNS name once {mac} is substituted, got %q", hp)
		}
		dm.HostnamePattern = hp
	}
	if aliases, ok := d.strList(t, p, "gateway_aliases"); ok {
		var out []string
		for i, a := range aliases {
			if !IsDNSName(a) {
				d.r.Errorf(p.Key("gateway_aliases").Index(i), "expected a DNS name, got %q", a)
				continue
			}
			out = append(out, normalizeDNSName(a))
		}
		dm.GatewayAliases = dedupe(out)
	}
	return dm
}

func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr()
	for i := 0; i < n; i++ {
		a = a.Next()
	}
	return a
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func prevAddr(a netip.Addr) netip.Addr { return a.Prev() }

func (d *decoder) ntp(t map[string]any, p Path) *NTP {
	servers, ok := d.strList(t, p, "servers")
	if !ok {
		return &NTP{Servers: []string{DefaultNTPServer}}
	}
	var out []string
	for i, s := range servers {
		if hasSpaceOrControl(s) {
			d.r.Errorf(p.Key("servers").Index(i), "must not contain whitespace or control characters")
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			out = append(out, a.String())
			continue
		}
		if !IsDNSName(s) {
			d.r.Errorf(p.Key("servers").Index(i), "expected an IP address or DNS name, got %q", s)
			continue
		}
		out = append(out, normalizeDNSName(s))
	}
	return &NTP{Servers: dedupe(out)}
}

func (d *decoder) firewall(t map[string]any, p Path) *Firewall {
	f := &Firewall{}
	it, ok := d.table(t, p, "inbound")
	if !ok {
		return f
	}
	ip := p.Key("inbound")
	scope := func(zone string) *PortScope {
		st, ok := d.table(it, ip, zone)
		if !ok {
			return nil
		}
		s := &PortScope{
			TCP: sortedUniqueInts(d.intList(st, ip.Key(zone), "tcp")),
			UDP: sortedUniqueInts(d.intList(st, ip.Key(zone), "udp")),
		}
		if len(s.TCP) == 0 && len(s.UDP) == 0 {
			return nil
		}
		return s
	}
	f.Inbound.WAN = scope("wan")
	f.Inbound.LAN = scope("lan")
	if f.Inbound.WAN != nil {
		for i, port := range f.Inbound.WAN.TCP {
			if port == d.opts.BridgePort {
				d.r.Errorf(ip.Key("wan").Key("tcp"), "must not open port %d on the WAN: it is the device's HTTP bridge", port)
				f.Inbound.WAN.TCP = append(f.Inbound.WAN.TCP[:i:i], f.Inbound.WAN.TCP[i+1:]...)
				break
			}
		}
	}
	return f
}

func (d *decoder) osUpgrade(t map[string]any, p Path) *OSUpgrade {
	raw, ok := d.str(t, p, "server_url")
	if !ok {
		return &OSUpgrade{}
	}
	if msg := checkUpgradeURL(raw); msg != "" {
		d.r.Errorf(p.Key("server_url"), "%s", msg)
	}
	return &OSUpgrade{ServerURL: strings.TrimSuffix(raw, "/")}
}

func checkUpgradeURL(raw string) string {
	if hasSpaceOrControl(raw) {
		return "must not contain whitespace or control characters"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "expected an https URL, got " + quoteShort(raw)
	}
	switch {
	case u.Scheme != "https":
		return "expected an https URL, got scheme " + quoteShort(u.Scheme)
	case u.User != nil:
		return "must not contain user information"
	case u.RawQuery != "" || u.ForceQuery:
		return "must not contain a query"
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return "must not contain a fragment"
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
		return ""
	}
	if !IsDNSName(host) {
		return "expected an IP address or DNS name as host, got " + quoteShort(host)
	}
	return ""
}
