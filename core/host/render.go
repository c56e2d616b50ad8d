package host

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/fleetprov/fleetprov/core/config"
)

// Paths of the files this package manages, on the host (joined to the host root).
const (
	NetworkDir     = "/etc/systemd/network"
	NetworkPrefix  = "50-fleetprov-" // + ethN.network
	ResolvedDropIn = "/etc/systemd/resolved.conf.d/50-fleetprov.conf"
	TimesyncDropIn = "/etc/systemd/timesyncd.conf.d/50-fleetprov.conf"
	// ChronySources is where the NTP servers go on an image that runs chrony (Debian's
	// chrony.conf reads sourcedir /etc/chrony/sources.d).
	ChronySources = "/etc/chrony/sources.d/50-fleetprov.sources"
	// Chronyd is how an image that runs chrony is recognised.
	Chronyd         = "/usr/sbin/chronyd"
	DnsmasqConf     = "/etc/dnsmasq.d/fleetprov.conf"
	OSUpgradeConf   = "/etc/fleetprov/os-upgrade.conf"
	FirewallRuleset = "/etc/fleetprov/firewall.nft"
	FirewallUnit    = "/etc/systemd/system/fleetprov-firewall.service"
	// FirewallTable is the one nftables table fleetprov owns.
	FirewallTable = "inet fleetprov"
	// LANInterface is the LAN gateway's interface (config-v1: eth1 is the LAN).
	LANInterface = "eth1"
)

// Kinds of managed files; each kind has its own reload.
const (
	KindNetwork   = "network"
	KindDNS       = "dns"
	KindNTP       = "ntp"
	KindChrony    = "ntp-chrony"
	KindDnsmasq   = "dnsmasq"
	KindOSUpgrade = "os-upgrade"
	KindFirewall  = "firewall"
)

// Shells maps config-v1 shell names to login shells.
var Shells = map[string]string{"bash": "/bin/bash", "sh": "/bin/sh", "zsh": "/bin/zsh"}

// DefaultShell is an account's shell when the config names none.
const DefaultShell = "/bin/sh"

// Desired is the host state one config asks for.
type Desired struct {
	Users []User // sorted by name
	Files []File // sorted by path
	// Firewall is the nft script that replaces the table inet fleetprov (nil: no table).
	Firewall []byte
}

// User is one account fleetprov manages.
type User struct {
	Name  string
	Admin bool
	Shell string // the login shell's path
	Key   string // the authorized key line ("" = no key)
}

// File is one managed file on the host.
type File struct {
	Path    string // absolute on the host
	Kind    string
	Content []byte
	Mode    fs.FileMode
}

// Options are the device facts rendering needs.
type Options struct {
	// BridgePort is the HTTP bridge's port, a platform port on the LAN (default 8080).
	BridgePort int
	// Chrony: the image keeps time with chrony, not systemd-timesyncd (see HasChrony).
	Chrony bool
}

// HasChrony reports whether the host under root runs chrony (its daemon is installed).
func HasChrony(root string) bool {
	_, err := os.Stat(filepath.Join(root, Chronyd))
	return err == nil
}

const header = "# Written by fleetprov from the device's config.toml; changes here are overwritten.\n"

// Render computes the host state m asks for. It is a pure function of the model.
func Render(m config.Model, o Options) Desired {
	if o.BridgePort == 0 {
		o.BridgePort = config.DefaultBridgePort
	}
	var d Desired
	for name, u := range m.Users {
		shell := DefaultShell
		if s, ok := Shells[u.Shell]; ok {
			shell = s
		}
		d.Users = append(d.Users, User{Name: name, Admin: u.IsAdmin, Shell: shell, Key: u.SSHKey})
	}
	sort.Slice(d.Users, func(i, j int) bool { return d.Users[i].Name < d.Users[j].Name })
	add := func(p, kind, content string) {
		d.Files = append(d.Files, File{Path: p, Kind: kind, Content: []byte(header + content), Mode: 0o644})
	}
	if u := m.OSUpgrade; u != nil {
		add(OSUpgradeConf, KindOSUpgrade, "# The OS upgrade server; an upgrader reads it (EnvironmentFile=) or watches it (a .path unit).\n"+
			"FLEETPROV_OS_UPGRADE_SERVER="+u.ServerURL+"\n")
	}
	if n := m.Network; n != nil {
		for _, f := range networkFiles(m) {
			add(f.Path, KindNetwork, string(f.Content))
		}
		if len(n.DNSServers) > 0 || len(n.DNSSearchDomains) > 0 {
			var b strings.Builder
			b.WriteString("[Resolve]\n")
			if len(n.DNSServers) > 0 {
				b.WriteString("DNS=" + strings.Join(n.DNSServers, " ") + "\n")
			}
			if len(n.DNSSearchDomains) > 0 {
				b.WriteString("Domains=" + strings.Join(n.DNSSearchDomains, " ") + "\n")
			}
			add(ResolvedDropIn, KindDNS, b.String())
		}
		if n.NTP != nil && len(n.NTP.Servers) > 0 {
			if o.Chrony {
				var b strings.Builder
				for _, srv := range n.NTP.Servers {
					b.WriteString("server " + srv + " iburst\n")
				}
				add(ChronySources, KindChrony, b.String())
			} else {
				add(TimesyncDropIn, KindNTP, "[Time]\nNTP="+strings.Join(n.NTP.Servers, " ")+"\n")
			}
		}
		if n.Dnsmasq != nil {
			add(DnsmasqConf, KindDnsmasq, dnsmasqConf(m))
		}
		if n.Firewall != nil {
			rules := firewall(m, o.BridgePort)
			d.Firewall = []byte(rules)
			add(FirewallRuleset, KindFirewall, rules)
			add(FirewallUnit, KindFirewall, firewallUnit)
		}
	}
	sort.Slice(d.Files, func(i, j int) bool { return d.Files[i].Path < d.Files[j].Path })
	return d
}

// networkFiles renders one networkd file per configured interface, plus eth1 with the LAN
// gateway address when dnsmasq is set and eth1 is not configured.
func networkFiles(m config.Model) []File {
	n := m.Network
	ifaces := map[string]config.Interface{}
	for name, i := range n.Interfaces {
		ifaces[name] = i
	}
	if _, ok := ifaces[LANInterface]; !ok && n.Dnsmasq != nil {
		ifaces[LANInterface] = config.Interface{Mode: "static", Address: n.Dnsmasq.GatewayCIDR}
	}
	names := make([]string, 0, len(ifaces))
	for name := range ifaces {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []File
	for _, name := range names {
		i := ifaces[name]
		var b strings.Builder
		fmt.Fprintf(&b, "[Match]\nName=%s\n\n[Network]\n", name)
		if i.Mode == "dhcp" {
			b.WriteString("DHCP=yes\n")
		} else {
			fmt.Fprintf(&b, "Address=%s\n", i.Address)
		}
		gw := i.Gateway
		if gw == "" && name == "eth0" {
			gw = n.DefaultGateway
		}
		if gw != "" {
			fmt.Fprintf(&b, "Gateway=%s\n", gw)
		}
		if len(i.DNSServers) > 0 {
			fmt.Fprintf(&b, "DNS=%s\n", strings.Join(i.DNSServers, " "))
		}
		if len(i.DNSSearchDomains) > 0 {
			fmt.Fprintf(&b, "Domains=%s\n", strings.Join(i.DNSSearchDomains, " "))
		}
		if name == LANInterface {
			b.WriteString("ConfigureWithoutCarrier=yes\n")
		}
		out = append(out, File{Path: path.Join(NetworkDir, NetworkPrefix+name+".network"), Content: []byte(b.String())})
	}
	return out
}

func dnsmasqConf(m config.Model) string {
	lan := LAN(m)
	var b strings.Builder
	fmt.Fprintf(&b, "interface=%s\nbind-dynamic\n", LANInterface)
	fmt.Fprintf(&b, "dhcp-range=%s,%s,%s,12h\n", lan.DHCPStart, lan.DHCPEnd, lan.Netmask)
	fmt.Fprintf(&b, "dhcp-option=option:router,%s\n", lan.GatewayIP)
	fmt.Fprintf(&b, "dhcp-option=option:dns-server,%s\n", lan.GatewayIP)
	fmt.Fprintf(&b, "domain=%s\nlocal=/%s/\n", lan.Domain, lan.Domain)
	for _, a := range lan.GatewayAliases {
		fmt.Fprintf(&b, "address=/%s/%s\n", a, lan.GatewayIP)
		if !strings.Contains(a, ".") {
			fmt.Fprintf(&b, "address=/%s.%s/%s\n", a, lan.Domain, lan.GatewayIP)
		}
	}
	return b.String()
}

// PlatformLAN are the ports a LAN allowlist always keeps open (config-v1), besides the
// HTTP bridge's.
var (
	PlatformLANTCP = []int{22, 53}
	PlatformLANUDP = []int{53, 67, 68, 123}
)

// firewall renders the nft script that replaces the fleetprov table: inbound WAN is
// denied but for the allowed ports; the LAN (eth1) is open, or an allowlist merged with
// the platform ports when the config lists LAN ports. Loopback, established flows and
// ICMP pass. The first two lines make the script replace the table whether or not it
// exists, in the same atomic transaction.
func firewall(m config.Model, bridgePort int) string {
	in := m.Network.Firewall.Inbound
	var b strings.Builder
	b.WriteString("table " + FirewallTable + "\ndelete table " + FirewallTable + "\n")
	b.WriteString("table " + FirewallTable + " {\n")
	b.WriteString("\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n")
	b.WriteString("\t\tct state established,related accept\n\t\tct state invalid drop\n")
	// ICMP and ICMPv6 by number: nft resolves protocol names through /etc/protocols,
	// which a minimal image may not have (found on a debootstrap minbase device).
	b.WriteString("\t\tiifname \"lo\" accept\n\t\tmeta l4proto { 1, 58 } accept\n")
	// Rootful containers on Podman bridge networks ask aardvark-dns on the bridge; DHCPv6
	// answers to the host's link-local address are not "established".
	b.WriteString("\t\tiifname \"podman*\" meta l4proto { tcp, udp } th dport 53 accept\n")
	b.WriteString("\t\tip6 daddr fe80::/64 udp dport 546 accept\n")
	b.WriteString("\t\tiifname \"" + LANInterface + "\" jump lan\n")
	if in.WAN != nil {
		writePorts(&b, "tcp", in.WAN.TCP)
		writePorts(&b, "udp", in.WAN.UDP)
	}
	b.WriteString("\t}\n\tchain lan {\n")
	if in.LAN != nil && (len(in.LAN.TCP) > 0 || len(in.LAN.UDP) > 0) {
		writePorts(&b, "tcp", merge(in.LAN.TCP, append(slices.Clone(PlatformLANTCP), bridgePort)))
		writePorts(&b, "udp", merge(in.LAN.UDP, PlatformLANUDP))
		b.WriteString("\t\tdrop\n")
	} else {
		b.WriteString("\t\taccept\n")
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func writePorts(b *strings.Builder, proto string, ports []int) {
	if len(ports) == 0 {
		return
	}
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	fmt.Fprintf(b, "\t\t%s dport { %s } accept\n", proto, strings.Join(s, ", "))
}

func merge(a, b []int) []int {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

const firewallUnit = `[Unit]
Description=fleetprov firewall (nftables table inet fleetprov)
DefaultDependencies=no
Before=network-pre.target
Wants=network-pre.target
After=local-fs.target nftables.service firewalld.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f ` + FirewallRuleset + `

[Install]
WantedBy=sysinit.target
`
