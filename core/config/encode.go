package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Encode renders a model as canonical config.toml v1: fixed table order, defaults written
// out, names sorted, directives in model order. Parse(Encode(m)) yields m again for every
// model Parse returns.
func Encode(m Model) []byte {
	var e encoder
	e.kv("version", strconv.Itoa(1))
	for _, name := range SortedKeys(m.Users) {
		u := m.Users[name]
		e.table("users", name)
		e.kv("isAdmin", strconv.FormatBool(u.IsAdmin))
		e.kv("ssh_key", quote(u.SSHKey))
		if u.Shell != "" {
			e.kv("shell", quote(u.Shell))
		}
	}
	if n := m.Network; n != nil {
		e.network(n)
	}
	if m.OSUpgrade != nil {
		e.table("os_upgrade")
		e.kv("server_url", quote(m.OSUpgrade.ServerURL))
	}
	a := m.Activation
	e.table("activation")
	e.kv("required", strList(a.Required))
	e.kv("restart", strList(a.Restart))
	if a.AllowDegradedSet {
		e.kv("allow_degraded", strList(a.AllowDegraded))
	}
	e.kv("timeout_seconds", strconv.Itoa(a.TimeoutSeconds))
	e.kv("settle_seconds", strconv.Itoa(a.SettleSeconds))
	e.kv("strategy", quote(a.Strategy))
	if a.Confirm != DefaultConfirm || a.ConfirmSeconds != DefaultConfirmSeconds {
		e.kv("confirm", quote(a.Confirm))
		e.kv("confirm_seconds", strconv.Itoa(a.ConfirmSeconds))
	}
	for _, name := range SortedKeys(a.Health) {
		h := a.Health[name]
		e.table("activation", "health", name)
		switch h.Kind() {
		case "http":
			e.kv("http", quote(h.HTTP))
			e.kv("status", strconv.Itoa(h.Status))
			if h.BodyContains != "" {
				e.kv("body_contains", quote(h.BodyContains))
			}
		case "tcp":
			e.kv("tcp", quote(h.TCP))
		default:
			e.kv("exec", strList(h.Exec))
			e.kv("exec_in", quote(h.ExecIn))
		}
		e.kv("interval_seconds", strconv.Itoa(h.IntervalSeconds))
		e.kv("timeout_seconds", strconv.Itoa(h.TimeoutSeconds))
		e.kv("retries", strconv.Itoa(h.Retries))
		e.kv("start_period_seconds", strconv.Itoa(h.StartPeriodSeconds))
	}
	for _, name := range SortedKeys(m.Containers.Container) {
		c := m.Containers.Container[name]
		e.table("containers", "container", name)
		e.kv("privileged", strconv.FormatBool(c.Privileged))
		e.section(c.Unit, "containers", "container", name, "Unit")
		e.section(c.Container, "containers", "container", name, "Container")
		e.section(c.Install, "containers", "container", name, "Install")
	}
	for _, rk := range ResourceKinds {
		res := m.Containers.Resources(rk.Kind)
		for _, name := range SortedKeys(res) {
			e.table("containers", rk.Kind, name, rk.Section)
			e.directives(res[name])
		}
	}
	if f := m.Fleet; f != nil {
		e.table("fleet")
		if f.Groups != nil {
			e.kv("groups", strList(f.Groups))
		}
		for _, name := range SortedKeys(f.Signers) {
			sp := f.Signers[name]
			e.table("fleet", "signers", name)
			if sp.Ops != nil {
				e.kv("ops", strList(sp.Ops))
			}
			if sp.Groups != nil {
				e.kv("groups", strList(sp.Groups))
			}
		}
	}
	for _, name := range SortedKeys(m.Secrets) {
		e.table("secrets", name)
		if d := m.Secrets[name].Description; d != "" {
			e.kv("description", quote(d))
		}
	}
	return []byte(e.b.String())
}

func (e *encoder) network(n *Network) {
	e.table("network")
	if n.DNSServers != nil {
		e.kv("dns_servers", strList(n.DNSServers))
	}
	if n.DNSSearchDomains != nil {
		e.kv("dns_search_domains", strList(n.DNSSearchDomains))
	}
	if n.DefaultGateway != "" {
		e.kv("default_gateway", quote(n.DefaultGateway))
	}
	for _, name := range SortedKeys(n.Interfaces) {
		it := n.Interfaces[name]
		e.table("network", "interfaces", name)
		e.kv("mode", quote(it.Mode))
		if it.Address != "" {
			e.kv("address", quote(it.Address))
		}
		if it.Gateway != "" {
			e.kv("gateway", quote(it.Gateway))
		}
		if it.DNSServers != nil {
			e.kv("dns_servers", strList(it.DNSServers))
		}
		if it.DNSSearchDomains != nil {
			e.kv("dns_search_domains", strList(it.DNSSearchDomains))
		}
	}
	if d := n.Dnsmasq; d != nil {
		e.table("network", "dnsmasq")
		e.kv("enable", "true")
		e.kv("interface", quote(d.Interface))
		e.kv("gateway_cidr", quote(d.GatewayCIDR))
		e.kv("dhcp_start", quote(d.DHCPStart))
		e.kv("dhcp_end", quote(d.DHCPEnd))
		e.kv("domain", quote(d.Domain))
		e.kv("hostname_pattern", quote(d.HostnamePattern))
		e.kv("gateway_aliases", strList(d.GatewayAliases))
	}
	if n.NTP != nil {
		e.table("network", "ntp")
		e.kv("servers", strList(n.NTP.Servers))
	}
	if f := n.Firewall; f != nil {
		e.table("network", "firewall")
		for _, z := range []struct {
			name  string
			scope *PortScope
		}{{"wan", f.Inbound.WAN}, {"lan", f.Inbound.LAN}} {
			if z.scope == nil {
				continue
			}
			e.table("network", "firewall", "inbound", z.name)
			if z.scope.TCP != nil {
				e.kv("tcp", intList(z.scope.TCP))
			}
			if z.scope.UDP != nil {
				e.kv("udp", intList(z.scope.UDP))
			}
		}
	}
}

type encoder struct{ b strings.Builder }

func (e *encoder) table(keys ...string) {
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = key(k)
	}
	fmt.Fprintf(&e.b, "\n[%s]\n", strings.Join(parts, "."))
}

func (e *encoder) kv(k, v string) { fmt.Fprintf(&e.b, "%s = %s\n", key(k), v) }

func (e *encoder) section(s Section, keys ...string) {
	if len(s) == 0 {
		return
	}
	e.table(keys...)
	e.directives(s)
}

func (e *encoder) directives(s Section) {
	for _, d := range s {
		vals := make([]string, len(d.Values))
		for i, v := range d.Values {
			vals[i] = scalarTOML(v)
		}
		if d.List {
			e.kv(d.Key, "["+strings.Join(vals, ", ")+"]")
		} else {
			e.kv(d.Key, vals[0])
		}
	}
}

func scalarTOML(v Scalar) string {
	if v.Kind == KindString {
		return quote(v.Str)
	}
	return v.String()
}

func key(k string) string {
	if k == "" {
		return `""`
	}
	for i := 0; i < len(k); i++ {
		if !isBareKeyChar(k[i]) {
			return quote(k)
		}
	}
	return k
}

// quote writes a TOML basic string.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

func strList(l []string) string {
	parts := make([]string, len(l))
	for i, s := range l {
		parts[i] = quote(s)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func intList(l []int) string {
	parts := make([]string, len(l))
	for i, n := range l {
		parts[i] = strconv.Itoa(n)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
