package provision

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/host"
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
	hn := hostNetwork{DNSServers: []string{}, DNSSearchDomains: []string{}, Interfaces: map[string]config.Interface{}}
	if n := m.Network; n != nil {
		if n.Firewall != nil {
			fw = n.Firewall.Inbound
		}
		hn = hostNetwork{DNSServers: orEmpty(n.DNSServers), DNSSearchDomains: orEmpty(n.DNSSearchDomains),
			DefaultGateway: n.DefaultGateway, Interfaces: n.Interfaces}
		if hn.Interfaces == nil {
			hn.Interfaces = map[string]config.Interface{}
		}
	}
	steps := []struct {
		name string
		v    any
	}{
		{"users.json", users},
		{"firewall-inbound.json", fw},
		{"lan-settings.json", host.LAN(m)},
		{"host-network.json", hn},
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
