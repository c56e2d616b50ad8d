package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfm/RhPyisFyBAwigDt2AnnOU1fMAVk4XaCj3S/k/3Z admin@example"

// doc is a config.toml made of replaceable parts; the zero value of a part means its
// default, and "-" leaves the part out.
type doc struct {
	version, users, network, upgrade, activation, containers, fleet, extra string
}

func pick(v, def string) string {
	switch v {
	case "":
		return def
	case "-":
		return ""
	}
	return v
}

func (d doc) String() string {
	return strings.Join([]string{
		pick(d.version, "version = 1"),
		pick(d.users, "[users.admin]\nisAdmin = true\nssh_key = \""+testKey+"\""),
		pick(d.network, ""),
		pick(d.upgrade, ""),
		pick(d.activation, "[activation]\nrequired = [\"web\"]"),
		pick(d.containers, "[containers.container.web]\nprivileged = false\n[containers.container.web.Container]\nImage = \"docker.io/library/nginx:latest\""),
		pick(d.fleet, ""),
		d.extra,
	}, "\n") + "\n"
}

// webWith returns the default web container with extra [Container] lines.
func webWith(privileged bool, lines ...string) string {
	return "[containers.container.web]\nprivileged = " + map[bool]string{true: "true", false: "false"}[privileged] +
		"\n[containers.container.web.Container]\nImage = \"docker.io/library/nginx:latest\"\n" + strings.Join(lines, "\n")
}

func ecdsaKeyLine(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

type ruleCase struct {
	name string
	doc  doc
	// wantPath/wantMsg: an error entry with this path containing this text; empty = valid.
	wantPath, wantMsg string
	// wantWarn: a warning containing this text (valid cases).
	wantWarn string
	opts     Options
}

func runRuleCases(t *testing.T, cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.doc.String()
			_, r, err := Parse([]byte(src), tc.opts)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("Parse() error = %v; want valid\n%s\n--- config ---\n%s", err, r.String(), src)
				}
				if tc.wantWarn != "" && !strings.Contains(r.String(), tc.wantWarn) {
					t.Errorf("Parse() warnings = %q; want one containing %q", r.String(), tc.wantWarn)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Parse() error = %v; want ErrInvalid\n--- config ---\n%s", err, src)
			}
			for _, e := range r.Errors() {
				if e.Path == tc.wantPath && strings.Contains(e.Message, tc.wantMsg) {
					return
				}
			}
			t.Errorf("Parse() report:\n%s want an error at %q containing %q", r.String(), tc.wantPath, tc.wantMsg)
		})
	}
}

func TestRulesTopLevel(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{name: "minimal_valid", doc: doc{}},
		{name: "version_bool", doc: doc{version: "version = true"}, wantPath: "version", wantMsg: "expected the integer 1"},
		{name: "version_string", doc: doc{version: `version = "1"`}, wantPath: "version", wantMsg: "expected the integer 1"},
		{name: "version_two", doc: doc{version: "version = 2"}, wantPath: "version", wantMsg: "supported version is 1"},
		{name: "version_missing", doc: doc{version: "-"}, wantPath: "version", wantMsg: "is required"},
		{name: "unknown_top_level_key", doc: doc{version: "version = 1\ncolour = \"blue\""}, wantPath: "colour", wantMsg: "unknown key"},
		{name: "users_missing", doc: doc{users: "-"}, wantPath: "users", wantMsg: "is required"},
		{name: "activation_missing", doc: doc{activation: "-"}, wantPath: "activation", wantMsg: "is required"},
		{name: "containers_missing", doc: doc{containers: "-", activation: "[activation]\nrequired = [\"x\"]"}, wantPath: "containers", wantMsg: "is required"},
	})
}

func TestRulesUsers(t *testing.T) {
	ec := ecdsaKeyLine(t)
	edBlob := strings.Fields(testKey)[1]
	admin := func(name, key string) string {
		return "[users." + name + "]\nisAdmin = true\nssh_key = \"" + key + "\""
	}
	runRuleCases(t, []ruleCase{
		{name: "empty_user_table_valid", doc: doc{users: admin("admin", testKey) + "\n[users.guest]"}},
		{name: "shell_valid", doc: doc{users: admin("admin", testKey) + "\nshell = \"zsh\""}},
		{name: "shell_invalid", doc: doc{users: admin("admin", testKey) + "\nshell = \"fish\""}, wantPath: "users.admin.shell", wantMsg: "expected one of bash, sh, zsh"},
		{name: "ecdsa_key_valid", doc: doc{users: admin("admin", ec)}},
		{name: "name_pattern", doc: doc{users: admin("Admin", testKey)}, wantPath: "users.Admin", wantMsg: "invalid user name"},
		{name: "name_too_long", doc: doc{users: admin("a"+strings.Repeat("b", 32), testKey)}, wantPath: "users.a" + strings.Repeat("b", 32), wantMsg: "invalid user name"},
		{name: "reserved_root", doc: doc{users: admin("admin", testKey) + "\n[users.root]"}, wantPath: "users.root", wantMsg: "reserved"},
		{name: "reserved_appsvc", doc: doc{users: admin("admin", testKey) + "\n[users.appsvc]"}, wantPath: "users.appsvc", wantMsg: "reserved"},
		{name: "reserved_systemd_timesync", doc: doc{users: admin("admin", testKey) + "\n[users.systemd-timesync]"}, wantPath: "users.systemd-timesync", wantMsg: "reserved"},
		{name: "reserved_custom_app_user", opts: Options{AppUser: "apps"}, doc: doc{users: admin("admin", testKey) + "\n[users.apps]"}, wantPath: "users.apps", wantMsg: "reserved"},
		{name: "appsvc_reserved_with_custom_app_user", opts: Options{AppUser: "apps"}, doc: doc{users: admin("admin", testKey) + "\n[users.appsvc]"}, wantPath: "users.appsvc", wantMsg: "reserved"},
		{name: "isadmin_not_bool", doc: doc{users: "[users.admin]\nisAdmin = 1\nssh_key = \"" + testKey + "\""}, wantPath: "users.admin.isAdmin", wantMsg: "expected boolean"},
		{name: "unknown_user_key", doc: doc{users: admin("admin", testKey) + "\npassword = \"x\""}, wantPath: "users.admin.password", wantMsg: "unknown key"},
		{name: "no_admin", doc: doc{users: "[users.bob]\nssh_key = \"" + testKey + "\""}, wantPath: "users", wantMsg: "at least one user must have isAdmin = true"},
		{name: "admin_without_key", doc: doc{users: "[users.bob]\nisAdmin = true"}, wantPath: "users", wantMsg: "at least one user must have isAdmin = true"},
		{name: "key_one_field", doc: doc{users: admin("admin", "ssh-ed25519")}, wantPath: "users.admin.ssh_key", wantMsg: "expected \"<type>"},
		{name: "key_unknown_type", doc: doc{users: admin("admin", "ssh-dss "+edBlob)}, wantPath: "users.admin.ssh_key", wantMsg: "unsupported key type"},
		{name: "key_bad_base64", doc: doc{users: admin("admin", "ssh-ed25519 AAAA!!!")}, wantPath: "users.admin.ssh_key", wantMsg: "not valid base64"},
		{name: "key_type_mismatch", doc: doc{users: admin("admin", "ssh-rsa "+edBlob)}, wantPath: "users.admin.ssh_key", wantMsg: "does not match the key's embedded type"},
		{name: "key_two_lines", doc: doc{users: admin("admin", testKey+`\n`+testKey)}, wantPath: "users.admin.ssh_key", wantMsg: "control characters"},
		{name: "key_truncated_blob", doc: doc{users: admin("admin", "ssh-ed25519 "+edBlob[:20])}, wantPath: "users.admin.ssh_key", wantMsg: "invalid ssh_key"},
		{name: "key_placeholder", doc: doc{users: admin("admin", "<SSH_PUBLIC_KEY>")}, wantPath: "users.admin.ssh_key", wantMsg: "invalid ssh_key"},
	})
}

func TestRulesNetwork(t *testing.T) {
	net := func(s string) doc { return doc{network: s} }
	runRuleCases(t, []ruleCase{
		{name: "dns_valid", doc: net("[network]\ndns_servers = [\"1.1.1.1\", \"2606:4700::1111\"]\ndns_search_domains = [\"Example.COM.\"]\ndefault_gateway = \"192.168.1.1\"")},
		{name: "dns_servers_empty", doc: net("[network]\ndns_servers = []"), wantPath: "network.dns_servers", wantMsg: "non-empty list"},
		{name: "dns_servers_not_ip", doc: net("[network]\ndns_servers = [\"dns.google\"]"), wantPath: "network.dns_servers[0]", wantMsg: "expected an IPv4 or IPv6 address"},
		{name: "search_domain_bad", doc: net("[network]\ndns_search_domains = [\"-bad.example\"]"), wantPath: "network.dns_search_domains[0]", wantMsg: "expected a DNS name"},
		{name: "search_domain_label_too_long", doc: net("[network]\ndns_search_domains = [\"" + strings.Repeat("a", 64) + ".com\"]"), wantPath: "network.dns_search_domains[0]", wantMsg: "expected a DNS name"},
		{name: "default_gateway_empty", doc: net("[network]\ndefault_gateway = \"\""), wantPath: "network.default_gateway", wantMsg: "expected an IPv4 address"},
		{name: "default_gateway_v6", doc: net("[network]\ndefault_gateway = \"fe80::1\""), wantPath: "network.default_gateway", wantMsg: "expected an IPv4 address"},
		{name: "unknown_network_key", doc: net("[network]\nmtu = 1500"), wantPath: "network.mtu", wantMsg: "unknown key"},
		{name: "iface_static_valid", doc: net("[network.interfaces.eth0]\nmode = \"static\"\naddress = \"192.168.1.10/24\"\ngateway = \"192.168.1.1\"")},
		{name: "iface_dhcp_valid", doc: net("[network.interfaces.eth0]\nmode = \"dhcp\"")},
		{name: "iface_bad_name", doc: net("[network.interfaces.wlan0]\nmode = \"dhcp\""), wantPath: "network.interfaces.wlan0", wantMsg: "invalid interface name"},
		{name: "iface_mode_missing", doc: net("[network.interfaces.eth0]\naddress = \"10.0.0.2/24\""), wantPath: "network.interfaces.eth0.mode", wantMsg: "is required"},
		{name: "iface_mode_bad", doc: net("[network.interfaces.eth0]\nmode = \"auto\""), wantPath: "network.interfaces.eth0.mode", wantMsg: "expected dhcp or static"},
		{name: "iface_static_no_address", doc: net("[network.interfaces.eth0]\nmode = \"static\""), wantPath: "network.interfaces.eth0.address", wantMsg: "is required when mode is static"},
		{name: "iface_dhcp_with_address", doc: net("[network.interfaces.eth0]\nmode = \"dhcp\"\naddress = \"10.0.0.2/24\""), wantPath: "network.interfaces.eth0.address", wantMsg: "must not be set when mode is dhcp"},
		{name: "iface_address_not_cidr", doc: net("[network.interfaces.eth0]\nmode = \"static\"\naddress = \"10.0.0.2\""), wantPath: "network.interfaces.eth0.address", wantMsg: "CIDR"},
		{name: "iface_gateway_bad", doc: net("[network.interfaces.eth0]\nmode = \"dhcp\"\ngateway = \"x\""), wantPath: "network.interfaces.eth0.gateway", wantMsg: "expected an IPv4 address"},
		{name: "eth1_must_be_static", doc: net("[network.interfaces.eth1]\nmode = \"dhcp\""), wantPath: "network.interfaces.eth1.mode", wantMsg: "eth1 must be static"},
		{name: "dnsmasq_defaults_valid", doc: net("[network.dnsmasq]")},
		{name: "dnsmasq_enable_false", doc: net("[network.dnsmasq]\nenable = false"), wantPath: "network.dnsmasq.enable", wantMsg: "must be true"},
		{name: "dnsmasq_interface_eth0", doc: net("[network.dnsmasq]\ninterface = \"eth0\""), wantPath: "network.dnsmasq.interface", wantMsg: "must be eth1"},
		{name: "dnsmasq_prefix_too_wide", doc: net("[network.dnsmasq]\ngateway_cidr = \"10.0.0.1/8\""), wantPath: "network.dnsmasq.gateway_cidr", wantMsg: "/16../30"},
		{name: "dnsmasq_prefix_too_narrow", doc: net("[network.dnsmasq]\ngateway_cidr = \"10.0.0.1/31\""), wantPath: "network.dnsmasq.gateway_cidr", wantMsg: "/16../30"},
		{name: "dnsmasq_start_outside", doc: net("[network.dnsmasq]\ngateway_cidr = \"10.0.0.1/24\"\ndhcp_start = \"10.0.1.10\""), wantPath: "network.dnsmasq.dhcp_start", wantMsg: "outside the LAN subnet"},
		{name: "dnsmasq_start_after_end", doc: net("[network.dnsmasq]\ngateway_cidr = \"10.0.0.1/24\"\ndhcp_start = \"10.0.0.100\"\ndhcp_end = \"10.0.0.50\""), wantPath: "network.dnsmasq.dhcp_start", wantMsg: "must not be after"},
		{name: "dnsmasq_range_includes_gateway", doc: net("[network.dnsmasq]\ngateway_cidr = \"10.0.0.50/24\""), wantPath: "network.dnsmasq", wantMsg: "network.dnsmasq.dhcp_start and network.dnsmasq.dhcp_end must not include the gateway IP"},
		{name: "dnsmasq_eth1_supplies_gateway", doc: net("[network.interfaces.eth1]\nmode = \"static\"\naddress = \"10.9.0.1/24\"\n[network.dnsmasq]")},
		{name: "dnsmasq_eth1_mismatch", doc: net("[network.interfaces.eth1]\nmode = \"static\"\naddress = \"10.9.0.1/24\"\n[network.dnsmasq]\ngateway_cidr = \"10.9.0.2/24\""), wantPath: "network.dnsmasq.gateway_cidr", wantMsg: "must equal network.interfaces.eth1.address"},
		{name: "dnsmasq_domain_bad", doc: net("[network.dnsmasq]\ndomain = \"bad_domain\""), wantPath: "network.dnsmasq.domain", wantMsg: "expected a DNS name"},
		{name: "dnsmasq_hostname_pattern_valid", doc: net("[network.dnsmasq]\nhostname_pattern = \"dev-{mac}\"")},
		{name: "dnsmasq_hostname_pattern_no_mac", doc: net("[network.dnsmasq]\nhostname_pattern = \"dev\""), wantPath: "network.dnsmasq.hostname_pattern", wantMsg: "must contain {mac}"},
		{name: "dnsmasq_hostname_pattern_bad", doc: net("[network.dnsmasq]\nhostname_pattern = \"dev_{mac}\""), wantPath: "network.dnsmasq.hostname_pattern", wantMsg: "must be a DNS name"},
		{name: "dnsmasq_alias_bad", doc: net("[network.dnsmasq]\ngateway_aliases = [\"ok\", \"not ok\"]"), wantPath: "network.dnsmasq.gateway_aliases[1]", wantMsg: "expected a DNS name"},
		{name: "ntp_valid", doc: net("[network.ntp]\nservers = [\"pool.ntp.org\", \"192.0.2.1\"]")},
		{name: "ntp_empty", doc: net("[network.ntp]\nservers = []"), wantPath: "network.ntp.servers", wantMsg: "non-empty list"},
		{name: "ntp_line_injection", doc: net("[network.ntp]\nservers = [\"pool.ntp.org\\nserver evil.example iburst\"]"), wantPath: "network.ntp.servers[0]", wantMsg: "whitespace or control"},
		{name: "ntp_space_injection", doc: net("[network.ntp]\nservers = [\"pool.ntp.org iburst\"]"), wantPath: "network.ntp.servers[0]", wantMsg: "whitespace or control"},
		{name: "ntp_not_a_name", doc: net("[network.ntp]\nservers = [\"pool..ntp\"]"), wantPath: "network.ntp.servers[0]", wantMsg: "IP address or DNS name"},
		{name: "firewall_valid", doc: net("[network.firewall.inbound.wan]\ntcp = [443, 80, 443]\n[network.firewall.inbound.lan]\nudp = [53]")},
		{name: "firewall_port_zero", doc: net("[network.firewall.inbound.wan]\ntcp = [0]"), wantPath: "network.firewall.inbound.wan.tcp[0]", wantMsg: "1..65535"},
		{name: "firewall_port_too_big", doc: net("[network.firewall.inbound.lan]\nudp = [65536]"), wantPath: "network.firewall.inbound.lan.udp[0]", wantMsg: "1..65535"},
		{name: "firewall_unknown_zone", doc: net("[network.firewall.inbound.dmz]\ntcp = [1]"), wantPath: "network.firewall.inbound.dmz", wantMsg: "unknown key"},
		{name: "firewall_bridge_port_on_wan", doc: net("[network.firewall.inbound.wan]\ntcp = [443, 8080]"), wantPath: "network.firewall.inbound.wan.tcp", wantMsg: "HTTP bridge"},
		{name: "firewall_custom_bridge_port_on_wan", opts: Options{BridgePort: 9090}, doc: net("[network.firewall.inbound.wan]\ntcp = [9090]"), wantPath: "network.firewall.inbound.wan.tcp", wantMsg: "HTTP bridge"},
		{name: "firewall_bridge_port_on_lan_ok", doc: net("[network.firewall.inbound.lan]\ntcp = [8080]")},
	})
}

func TestRulesOSUpgrade(t *testing.T) {
	up := func(u string) doc { return doc{upgrade: "[os_upgrade]\nserver_url = \"" + u + "\""} }
	runRuleCases(t, []ruleCase{
		{name: "valid", doc: up("https://updates.example.test/")},
		{name: "valid_ip_port", doc: up("https://192.0.2.7:8443/os")},
		{name: "missing_url", doc: doc{upgrade: "[os_upgrade]"}, wantPath: "os_upgrade.server_url", wantMsg: "is required"},
		{name: "http", doc: up("http://updates.example.test"), wantPath: "os_upgrade.server_url", wantMsg: "https"},
		{name: "userinfo", doc: up("https://u:p@updates.example.test"), wantPath: "os_upgrade.server_url", wantMsg: "user information"},
		{name: "query", doc: up("https://updates.example.test/?a=1"), wantPath: "os_upgrade.server_url", wantMsg: "query"},
		{name: "fragment", doc: up("https://updates.example.test/#x"), wantPath: "os_upgrade.server_url", wantMsg: "fragment"},
		{name: "whitespace", doc: up("https://updates.example.test/a b"), wantPath: "os_upgrade.server_url", wantMsg: "whitespace"},
		{name: "bad_host", doc: up("https://under_score.example/"), wantPath: "os_upgrade.server_url", wantMsg: "DNS name"},
	})
}

func TestRulesActivation(t *testing.T) {
	act := func(s string) doc { return doc{activation: "[activation]\n" + s} }
	two := webWith(false) + "\n[containers.container.db]\nprivileged = false\n[containers.container.db.Container]\nImage = \"db\""
	runRuleCases(t, []ruleCase{
		{name: "full_valid", doc: doc{containers: two, activation: "[activation]\nrequired = [\"web\"]\nrestart = [\"db\"]\nallow_degraded = [\"db\"]\ntimeout_seconds = 3600\nsettle_seconds = 300\nstrategy = \"rollback\""}},
		{name: "required_missing", doc: act("restart = []"), wantPath: "activation.required", wantMsg: "is required"},
		{name: "required_empty", doc: act("required = []"), wantPath: "activation.required", wantMsg: "non-empty list"},
		{name: "required_unknown", doc: act("required = [\"web\", \"missing-service\"]"), wantPath: "activation.required", wantMsg: "activation.required references unknown unit: missing-service"},
		{name: "restart_unknown", doc: act("required = [\"web\"]\nrestart = [\"ghost\"]"), wantPath: "activation.restart", wantMsg: "activation.restart references unknown unit: ghost"},
		{name: "allow_degraded_unknown", doc: act("required = [\"web\"]\nallow_degraded = [\"ghost\"]"), wantPath: "activation.allow_degraded", wantMsg: "references unknown unit: ghost"},
		{name: "allow_degraded_overlap", doc: act("required = [\"web\"]\nallow_degraded = [\"web\"]"), wantPath: "activation.allow_degraded", wantMsg: "must not overlap"},
		{name: "timeout_zero", doc: act("required = [\"web\"]\ntimeout_seconds = 0"), wantPath: "activation.timeout_seconds", wantMsg: "expected integer in 1..3600"},
		{name: "timeout_too_big", doc: act("required = [\"web\"]\ntimeout_seconds = 3601"), wantPath: "activation.timeout_seconds", wantMsg: "expected integer in 1..3600"},
		{name: "timeout_float", doc: act("required = [\"web\"]\ntimeout_seconds = 30.0"), wantPath: "activation.timeout_seconds", wantMsg: "integer"},
		{name: "timeout_bool", doc: act("required = [\"web\"]\ntimeout_seconds = true"), wantPath: "activation.timeout_seconds", wantMsg: "integer"},
		{name: "settle_negative", doc: act("required = [\"web\"]\nsettle_seconds = -1"), wantPath: "activation.settle_seconds", wantMsg: "expected integer in 0..300"},
		{name: "settle_too_big", doc: act("required = [\"web\"]\nsettle_seconds = 301"), wantPath: "activation.settle_seconds", wantMsg: "expected integer in 0..300"},
		{name: "strategy_keep_failed", doc: act("required = [\"web\"]\nstrategy = \"keep-failed\""), wantPath: "activation.strategy", wantMsg: "only \"rollback\""},
		{name: "strategy_manual_confirm", doc: act("required = [\"web\"]\nstrategy = \"manual-confirm\""), wantPath: "activation.strategy", wantMsg: "only \"rollback\""},
		{name: "unknown_key", doc: act("required = [\"web\"]\nretries = 3"), wantPath: "activation.retries", wantMsg: "unknown key"},
	})
}

func TestRulesHealthChecks(t *testing.T) {
	hc := func(s string) doc {
		return doc{activation: "[activation]\nrequired = [\"web\"]\n[activation.health.web]\n" + s}
	}
	runRuleCases(t, []ruleCase{
		{name: "http_valid", doc: hc("http = \"http://127.0.0.1:8081/healthz\"\nstatus = 204\nbody_contains = \"ok\"\ninterval_seconds = 1\ntimeout_seconds = 1\nretries = 10\nstart_period_seconds = 30")},
		{name: "tcp_valid", doc: hc("tcp = \"127.0.0.1:5432\"")},
		{name: "exec_valid", doc: hc("exec = [\"pg_isready\", \"-q\"]\nexec_in = \"host\"")},
		{name: "none", doc: hc("retries = 3"), wantPath: "activation.health.web", wantMsg: "exactly one of http, tcp, exec"},
		{name: "two_kinds", doc: hc("http = \"http://a/\"\ntcp = \"a:1\""), wantPath: "activation.health.web", wantMsg: "exactly one of http, tcp, exec"},
		{name: "http_scheme", doc: hc("http = \"ftp://a/\""), wantPath: "activation.health.web.http", wantMsg: "http:// or https:// URL"},
		{name: "http_no_host", doc: hc("http = \"http:///x\""), wantPath: "activation.health.web.http", wantMsg: "with a host"},
		{name: "status_range", doc: hc("http = \"http://a/\"\nstatus = 99"), wantPath: "activation.health.web.status", wantMsg: "100..599"},
		{name: "status_on_tcp", doc: hc("tcp = \"a:1\"\nstatus = 200"), wantPath: "activation.health.web.status", wantMsg: "http checks only"},
		{name: "tcp_port_range", doc: hc("tcp = \"a:70000\""), wantPath: "activation.health.web.tcp", wantMsg: "port in 1..65535"},
		{name: "tcp_no_port", doc: hc("tcp = \"a\""), wantPath: "activation.health.web.tcp", wantMsg: "host:port"},
		{name: "exec_empty", doc: hc("exec = []"), wantPath: "activation.health.web.exec", wantMsg: "non-empty command"},
		{name: "exec_newline", doc: hc("exec = [\"a\\nb\"]"), wantPath: "activation.health.web.exec[0]", wantMsg: "control characters"},
		{name: "exec_in_bad", doc: hc("exec = [\"a\"]\nexec_in = \"vm\""), wantPath: "activation.health.web.exec_in", wantMsg: "container or host"},
		{name: "interval_zero", doc: hc("tcp = \"a:1\"\ninterval_seconds = 0"), wantPath: "activation.health.web.interval_seconds", wantMsg: "1..60"},
		{name: "timeout_big", doc: hc("tcp = \"a:1\"\ntimeout_seconds = 61"), wantPath: "activation.health.web.timeout_seconds", wantMsg: "1..60"},
		{name: "retries_zero", doc: hc("tcp = \"a:1\"\nretries = 0"), wantPath: "activation.health.web.retries", wantMsg: "1..100"},
		{name: "start_period_big", doc: hc("tcp = \"a:1\"\nstart_period_seconds = 601"), wantPath: "activation.health.web.start_period_seconds", wantMsg: "0..600"},
		{name: "unknown_container", doc: doc{activation: "[activation]\nrequired = [\"web\"]\n[activation.health.ghost]\ntcp = \"a:1\""}, wantPath: "activation.health.ghost", wantMsg: "unknown container: ghost"},
		{name: "unknown_key", doc: hc("tcp = \"a:1\"\nfoo = 1"), wantPath: "activation.health.web.foo", wantMsg: "unknown key"},
		{name: "not_required_warns", doc: doc{containers: webWith(false) + "\n[containers.container.db]\nprivileged = false\n[containers.container.db.Container]\nImage = \"db\"",
			activation: "[activation]\nrequired = [\"web\"]\n[activation.health.db]\ntcp = \"a:1\""}, wantWarn: "gate required units only: add db to activation.required"},
	})
}

func TestRulesContainers(t *testing.T) {
	res := func(kind, section, body string) doc {
		return doc{containers: webWith(false) + "\n[containers." + kind + ".r1]\n[containers." + kind + ".r1." + section + "]\n" + body}
	}
	runRuleCases(t, []ruleCase{
		{name: "every_kind_valid", doc: doc{containers: webWith(false) + `
[containers.network.n1.Network]
Subnet = "10.89.0.0/24"
[containers.volume.v1.Volume]
Driver = "local"
[containers.build.b1.Build]
File = "${FILES_DIR}/Containerfile"
ImageTag = "localhost/b1:latest"
[containers.pod.p1.Pod]
PodName = "p1"
[containers.image.i1.Image]
Image = "docker.io/library/alpine:latest"
[containers.kube.k1.Kube]
Yaml = "${FILES_DIR}/k1.yaml"`}},
		{name: "no_containers", doc: doc{containers: "[containers.network.n1.Network]\nSubnet = \"10.0.0.0/24\"", activation: "[activation]\nrequired = [\"x\"]"}, wantPath: "containers.container", wantMsg: "is required"},
		{name: "empty_container_table", doc: doc{containers: "[containers.container]", activation: "[activation]\nrequired = [\"x\"]"}, wantPath: "containers.container", wantMsg: "at least 1"},
		{name: "unknown_kind", doc: doc{containers: webWith(false) + "\n[containers.service.s.Service]\nExecStart = \"/bin/true\""}, wantPath: "containers.service", wantMsg: "unknown key"},
		{name: "bad_resource_name", doc: doc{containers: webWith(false) + "\n[containers.volume.-v.Volume]\nDriver = \"local\""}, wantPath: "containers.volume.-v", wantMsg: "invalid resource name"},
		{name: "privileged_missing", doc: doc{containers: "[containers.container.web.Container]\nImage = \"x\""}, wantPath: "containers.container.web.privileged", wantMsg: "is required"},
		{name: "privileged_not_bool", doc: doc{containers: "[containers.container.web]\nprivileged = \"yes\"\n[containers.container.web.Container]\nImage = \"x\""}, wantPath: "containers.container.web.privileged", wantMsg: "expected boolean"},
		{name: "container_section_missing", doc: doc{containers: "[containers.container.web]\nprivileged = true"}, wantPath: "containers.container.web.Container", wantMsg: "is required"},
		{name: "container_extra_section", doc: doc{containers: webWith(false) + "\n[containers.container.web.Service]\nRestart = \"always\""}, wantPath: "containers.container.web.Service", wantMsg: "unknown key"},
		{name: "image_missing", doc: doc{containers: "[containers.container.web]\nprivileged = true\n[containers.container.web.Container]\nExec = \"x\""}, wantPath: "containers.container.web.Container.Image", wantMsg: "is required"},
		{name: "image_empty", doc: doc{containers: "[containers.container.web]\nprivileged = true\n[containers.container.web.Container]\nImage = \"\""}, wantPath: "containers.container.web.Container.Image", wantMsg: "non-empty image"},
		{name: "image_list", doc: doc{containers: "[containers.container.web]\nprivileged = true\n[containers.container.web.Container]\nImage = [\"a\", \"b\"]"}, wantPath: "containers.container.web.Container.Image", wantMsg: "non-empty image"},
		{name: "resource_needs_its_section", doc: res("volume", "Network", "Subnet = \"x\""), wantPath: "containers.volume.r1.Network", wantMsg: "unknown key"},
		{name: "resource_section_missing", doc: doc{containers: webWith(false) + "\n[containers.network.r1]"}, wantPath: "containers.network.r1.Network", wantMsg: "is required"},
		{name: "directive_name_bad", doc: doc{containers: webWith(true, "Bad_Key = \"x\"")}, wantPath: "containers.container.web.Container.Bad_Key", wantMsg: "invalid directive name"},
		{name: "directive_name_digit_first", doc: res("network", "Network", "1Subnet = \"x\""), wantPath: "containers.network.r1.Network.1Subnet", wantMsg: "invalid directive name"},
		{name: "directive_value_newline", doc: doc{containers: webWith(true, "Environment = \"A=1\\nExecStartPre=/bin/evil\"")}, wantPath: "containers.container.web.Container.Environment", wantMsg: "must not contain NUL, CR or LF"},
		{name: "directive_value_cr_in_list", doc: doc{containers: webWith(true, "Environment = [\"A=1\", \"B=2\\r\"]")}, wantPath: "containers.container.web.Container.Environment[1]", wantMsg: "must not contain NUL, CR or LF"},
		{name: "directive_value_nul", doc: doc{containers: webWith(true, "Label = \"a\\u0000b\"")}, wantPath: "containers.container.web.Container.Label", wantMsg: "must not contain NUL, CR or LF"},
		{name: "directive_value_trailing_backslash", doc: doc{containers: webWith(true, "Label = 'a\\'")}, wantPath: "containers.container.web.Container.Label", wantMsg: "backslash"},
		{name: "directive_value_float", doc: doc{containers: webWith(true, "StopTimeout = 1.5")}, wantPath: "containers.container.web.Container.StopTimeout", wantMsg: "expected a string, integer, boolean"},
		{name: "directive_value_table", doc: doc{containers: webWith(true, "Label = { a = 1 }")}, wantPath: "containers.container.web.Container.Label", wantMsg: "expected a string, integer, boolean"},
		{name: "directive_empty_list", doc: doc{containers: webWith(true, "Environment = []")}, wantPath: "containers.container.web.Container.Environment", wantMsg: "non-empty list"},
		{name: "directive_nested_list", doc: doc{containers: webWith(true, "Environment = [[\"a\"]]")}, wantPath: "containers.container.web.Container.Environment[0]", wantMsg: "expected a string, integer or boolean"},
		{name: "unit_install_sections_valid", doc: doc{containers: webWith(true) + "\n[containers.container.web.Unit]\nAfter = [\"a.service\", \"b.service\"]\n[containers.container.web.Install]\nWantedBy = \"multi-user.target\""}},
		{name: "files_dir_escape", doc: doc{containers: webWith(true, "Volume = \"${FILES_DIR}/../../etc:/host-etc\"")}, wantPath: "containers.container.web.Container.Volume", wantMsg: "leaves its root"},
		{name: "config_dir_escape_in_list", doc: doc{containers: webWith(true, "Volume = [\"${CONFIG_DIR}/ok:/a\", \"${CONFIG_DIR}/../secret:/b\"]")}, wantPath: "containers.container.web.Container.Volume[1]", wantMsg: "leaves its root"},
		{name: "files_dir_escape_in_build", doc: res("build", "Build", "File = \"${FILES_DIR}/../../../Containerfile\"\nImageTag = \"x\""), wantPath: "containers.build.r1.Build.File", wantMsg: "leaves its root"},
		{name: "files_dir_inside_ok", doc: doc{containers: webWith(true, "Volume = \"${FILES_DIR}/a/../b:/b:ro\"")}},
		{name: "rootless_publish_rewritten_silently", doc: doc{containers: webWith(false, "PublishPort = [\"8081:80\", \"localhost:8082:80\", \"[::1]:8083:80\", \"127.0.0.1:8084:80\"]")}},
		{name: "rootless_publish_bind_address_warns", doc: doc{containers: webWith(false, "PublishPort = \"0.0.0.0:8081:80\"")}, wantWarn: "bind address 0.0.0.0 replaced by 127.0.0.1"},
		{name: "rootless_publish_bare_port", doc: doc{containers: webWith(false, "PublishPort = \"80\"")}, wantPath: "containers.container.web.Container.PublishPort", wantMsg: "bare port"},
		{name: "rootless_publish_named_host_port", doc: doc{containers: webWith(false, "PublishPort = \"http:80\"")}, wantPath: "containers.container.web.Container.PublishPort", wantMsg: "must be a number"},
		{name: "rootless_publish_unbracketed_v6", doc: doc{containers: webWith(false, "PublishPort = \"::1:80:80\"")}, wantPath: "containers.container.web.Container.PublishPort", wantMsg: "brackets"},
		{name: "privileged_publish_bare_port_ok", doc: doc{containers: webWith(true, "PublishPort = \"80\"")}},
		{name: "rootless_network_forced_warns", doc: doc{containers: webWith(false, "Network = \"frontend\"")}, wantWarn: "Network=frontend replaced by Network=pasta"},
		{name: "privileged_network_forced_warns", doc: doc{containers: webWith(true, "Network = \"bridge\"")}, wantWarn: "Network=bridge replaced by Network=host"},
		{name: "service_collision_kube_container", doc: doc{containers: webWith(true) + "\n[containers.kube.web.Kube]\nYaml = \"/x.yaml\""}, wantPath: "containers.kube.web", wantMsg: "both would be web.service"},
		{name: "no_collision_across_modes", doc: doc{containers: webWith(false) + "\n[containers.kube.web.Kube]\nYaml = \"/x.yaml\""}},
	})
}

func TestRulesFleet(t *testing.T) {
	runRuleCases(t, []ruleCase{
		{name: "valid", doc: doc{fleet: "[fleet]\ngroups = [\"edge\", \"eu-west\"]\n[fleet.signers.admin]\nops = [\"apply\", \"validate\"]\ngroups = [\"edge\"]"}},
		{name: "bad_group", doc: doc{fleet: "[fleet]\ngroups = [\"edge.eu\"]"}, wantPath: "fleet.groups[0]", wantMsg: "invalid group name"},
		{name: "confirm_op", doc: doc{fleet: "[fleet.signers.admin]\nops = [\"confirm\"]"}},
		{name: "bad_op", doc: doc{fleet: "[fleet.signers.admin]\nops = [\"reboot\"]"}, wantPath: "fleet.signers.admin.ops[0]", wantMsg: "expected one of apply"},
		{name: "signer_not_admin", doc: doc{users: "[users.admin]\nisAdmin = true\nssh_key = \"" + testKey + "\"\n[users.guest]", fleet: "[fleet.signers.guest]\nops = [\"apply\"]"}, wantPath: "fleet.signers.guest", wantMsg: "not an admin user"},
	})
}

func TestReportsEveryErrorWithLines(t *testing.T) {
	src := `version = 1
[users.root]
[activation]
required = ["ghost"]
timeout_seconds = 0
[containers.container.web]
privileged = false
[containers.container.web.Container]
Image = "x"
PublishPort = "80"
`
	_, r, err := Parse([]byte(src), Options{})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Parse() error = %v; want ErrInvalid", err)
	}
	want := []string{
		"users.root (line 2): user name \"root\" is reserved for the system",
		"activation.timeout_seconds (line 5): expected integer in 1..3600",
		"activation.required (line 4): activation.required references unknown unit: ghost",
		"containers.container.web.Container.PublishPort (line 10): PublishPort \"80\": a bare port publishes on every address; write HOST:CONTAINER",
		"users: at least one user must have isAdmin = true and a non-empty ssh_key",
	}
	got := map[string]bool{}
	for _, e := range r.Errors() {
		got[e.Error()] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("report lacks %q; got:\n%s", w, r.String())
		}
	}
	if len(r.Errors()) != len(want) {
		t.Errorf("report has %d errors; want %d:\n%s", len(r.Errors()), len(want), r.String())
	}
}

func TestParseSyntaxAndEmpty(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		wantErr error
		wantMsg string
	}{
		{"empty", "", ErrEmpty, "config is empty"},
		{"only_comments", "# nothing\n\n", ErrEmpty, "config is empty"},
		{"syntax", "version = 1\n[users\n", ErrInvalid, "TOML syntax error"},
		{"duplicate_key", "version = 1\nversion = 1\n", ErrInvalid, "line 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, r, err := Parse([]byte(tc.src), Options{})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Parse(%q) error = %v; want %v", tc.src, err, tc.wantErr)
			}
			if !strings.Contains(r.String(), tc.wantMsg) {
				t.Errorf("Parse(%q) report = %q; want it to contain %q", tc.src, r.String(), tc.wantMsg)
			}
		})
	}
}
