package config

import (
	"bytes"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
)

// Model is the normalized desired state of a device: defaults filled, names sorted where
// order does not matter, directive order kept as written.
type Model struct {
	Version    int             `json:"version"`
	Users      map[string]User `json:"users"`
	Network    *Network        `json:"network,omitempty"`
	OSUpgrade  *OSUpgrade      `json:"os_upgrade,omitempty"`
	Activation Activation      `json:"activation"`
	Containers Containers      `json:"containers"`
	Fleet      *Fleet          `json:"fleet,omitempty"`
	// Secrets declares the secrets containers use (fleetprov extension); values travel
	// encrypted beside the config, never in it.
	Secrets map[string]Secret `json:"secrets,omitempty"`
}

// User is one device account.
type User struct {
	IsAdmin bool   `json:"isAdmin"`
	SSHKey  string `json:"ssh_key"`
	Shell   string `json:"shell,omitempty"`
}

// Network is the host network, LAN services, NTP and firewall.
type Network struct {
	DNSServers       []string             `json:"dns_servers,omitempty"`
	DNSSearchDomains []string             `json:"dns_search_domains,omitempty"`
	DefaultGateway   string               `json:"default_gateway,omitempty"`
	Interfaces       map[string]Interface `json:"interfaces,omitempty"`
	Dnsmasq          *Dnsmasq             `json:"dnsmasq,omitempty"`
	NTP              *NTP                 `json:"ntp,omitempty"`
	Firewall         *Firewall            `json:"firewall,omitempty"`
}

// Interface configures one ethN interface.
type Interface struct {
	Mode             string   `json:"mode"`
	Address          string   `json:"address,omitempty"`
	Gateway          string   `json:"gateway,omitempty"`
	DNSServers       []string `json:"dns_servers,omitempty"`
	DNSSearchDomains []string `json:"dns_search_domains,omitempty"`
}

// Dnsmasq is the LAN DHCP/DNS service on eth1, with defaults filled.
type Dnsmasq struct {
	Enable          bool     `json:"enable"`
	Interface       string   `json:"interface"`
	GatewayCIDR     string   `json:"gateway_cidr"`
	DHCPStart       string   `json:"dhcp_start"`
	DHCPEnd         string   `json:"dhcp_end"`
	Domain          string   `json:"domain"`
	HostnamePattern string   `json:"hostname_pattern"`
	GatewayAliases  []string `json:"gateway_aliases"`
}

// NTP lists the time servers.
type NTP struct {
	Servers []string `json:"servers"`
}

// Firewall holds inbound allowances; empty scopes are dropped when normalizing.
type Firewall struct {
	Inbound Inbound `json:"inbound"`
}

// Inbound is split by zone. WAN is deny-by-default; a non-empty LAN scope is an allowlist.
type Inbound struct {
	WAN *PortScope `json:"wan,omitempty"`
	LAN *PortScope `json:"lan,omitempty"`
}

// PortScope lists ports by protocol, sorted and without duplicates.
type PortScope struct {
	TCP []int `json:"tcp,omitempty"`
	UDP []int `json:"udp,omitempty"`
}

// OSUpgrade names the OS upgrade server.
type OSUpgrade struct {
	ServerURL string `json:"server_url"`
}

// Activation is the policy that decides whether a new state is healthy.
type Activation struct {
	Required         []string `json:"required"`
	Restart          []string `json:"restart"`
	AllowDegraded    []string `json:"allow_degraded"`
	AllowDegradedSet bool     `json:"allow_degraded_set"`
	TimeoutSeconds   int      `json:"timeout_seconds"`
	SettleSeconds    int      `json:"settle_seconds"`
	Strategy         string   `json:"strategy"`
	// Confirm is how an apply that changes network or firewall settings proves the device
	// is still reachable within ConfirmSeconds, or rolls back (fleetprov extension).
	Confirm        string `json:"confirm"`
	ConfirmSeconds int    `json:"confirm_seconds"`
	// Health holds a typed check per container (fleetprov extension): a required unit is
	// healthy when systemd says active and its check passes.
	Health map[string]HealthCheck `json:"health,omitempty"`
}

// Confirm modes.
const (
	ConfirmAuto     = "auto"     // the hub link answers again (no hub: no proof needed)
	ConfirmOperator = "operator" // a signed confirm op
	ConfirmNone     = "none"
)

// HealthCheck is one typed check of a container: exactly one of HTTP, TCP and Exec.
type HealthCheck struct {
	HTTP         string   `json:"http,omitempty"`          // URL (http or https) to GET
	Status       int      `json:"status,omitempty"`        // HTTP status expected (default 200)
	BodyContains string   `json:"body_contains,omitempty"` // optional substring of the HTTP body
	TCP          string   `json:"tcp,omitempty"`           // host:port to connect to
	Exec         []string `json:"exec,omitempty"`          // command; exit 0 passes
	ExecIn       string   `json:"exec_in,omitempty"`       // container (default: podman exec) or host
	// Timing: run every IntervalSeconds, each try within TimeoutSeconds; failures during
	// StartPeriodSeconds do not count, and more than Retries failures after it fail the
	// activation at once.
	IntervalSeconds    int `json:"interval_seconds"`
	TimeoutSeconds     int `json:"timeout_seconds"`
	Retries            int `json:"retries"`
	StartPeriodSeconds int `json:"start_period_seconds"`
}

// Kind returns http, tcp or exec.
func (h HealthCheck) Kind() string {
	switch {
	case h.HTTP != "":
		return "http"
	case h.TCP != "":
		return "tcp"
	}
	return "exec"
}

// Target describes what the check probes, for events and errors.
func (h HealthCheck) Target() string {
	switch h.Kind() {
	case "http":
		return h.HTTP
	case "tcp":
		return h.TCP
	}
	return strings.Join(h.Exec, " ")
}

// Health check defaults.
const (
	DefaultHealthInterval = 2
	DefaultHealthTimeout  = 2
	DefaultHealthRetries  = 5
	DefaultHealthStatus   = 200
	HealthExecInContainer = "container"
	HealthExecOnHost      = "host"
)

// Containers holds the Quadlet resources keyed by name.
type Containers struct {
	Container map[string]Container `json:"container"`
	Network   map[string]Section   `json:"network,omitempty"`
	Volume    map[string]Section   `json:"volume,omitempty"`
	Build     map[string]Section   `json:"build,omitempty"`
	Pod       map[string]Section   `json:"pod,omitempty"`
	Image     map[string]Section   `json:"image,omitempty"`
	Kube      map[string]Section   `json:"kube,omitempty"`
}

// Container is one container unit; Privileged makes it rootful.
type Container struct {
	Privileged bool    `json:"privileged"`
	Unit       Section `json:"Unit,omitempty"`
	Container  Section `json:"Container"`
	Install    Section `json:"Install,omitempty"`
}

// ResourceKind describes one non-container Quadlet resource kind.
type ResourceKind struct {
	Kind    string // the key under [containers], e.g. "network"
	Section string // the single section, e.g. "Network"
	Ext     string // the unit file extension, e.g. ".network"
}

// ResourceKinds lists the non-container kinds in their canonical order.
var ResourceKinds = []ResourceKind{
	{"network", "Network", ".network"},
	{"volume", "Volume", ".volume"},
	{"build", "Build", ".build"},
	{"pod", "Pod", ".pod"},
	{"image", "Image", ".image"},
	{"kube", "Kube", ".kube"},
}

// Resources returns the map for a non-container kind (nil when the kind is unknown).
func (c *Containers) Resources(kind string) map[string]Section {
	switch kind {
	case "network":
		return c.Network
	case "volume":
		return c.Volume
	case "build":
		return c.Build
	case "pod":
		return c.Pod
	case "image":
		return c.Image
	case "kube":
		return c.Kube
	}
	return nil
}

func (c *Containers) setResources(kind string, m map[string]Section) {
	switch kind {
	case "network":
		c.Network = m
	case "volume":
		c.Volume = m
	case "build":
		c.Build = m
	case "pod":
		c.Pod = m
	case "image":
		c.Image = m
	case "kube":
		c.Kube = m
	}
}

// Fleet is the fleetprov extension: group memberships and signer policy.
type Fleet struct {
	Groups  []string                `json:"groups,omitempty"`
	Signers map[string]SignerPolicy `json:"signers,omitempty"`
}

// SignerPolicy narrows what one admin may sign. Empty lists mean no narrowing.
type SignerPolicy struct {
	Ops    []string `json:"ops,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

// Section is an ordered list of Quadlet directives, in the order they were written.
type Section []Directive

// Directive is one Quadlet key with one or more values. List records whether the value
// was written as an array, so that Encode gives back the same shape.
type Directive struct {
	Key    string   `json:"key"`
	Values []Scalar `json:"values"`
	List   bool     `json:"list,omitempty"`
}

// ScalarKind tells which field of a Scalar holds its value.
type ScalarKind int

// Scalar kinds.
const (
	KindString ScalarKind = iota
	KindInt
	KindBool
)

// Scalar is one directive value: a string, an integer or a boolean.
type Scalar struct {
	Kind ScalarKind
	Str  string
	Int  int64
	Bool bool
}

// Str returns a string scalar.
func Str(s string) Scalar { return Scalar{Kind: KindString, Str: s} }

// Int returns an integer scalar.
func Int(i int64) Scalar { return Scalar{Kind: KindInt, Int: i} }

// Bool returns a boolean scalar.
func Bool(b bool) Scalar { return Scalar{Kind: KindBool, Bool: b} }

// String renders the value as it appears in a unit file: bools true/false, ints decimal.
func (s Scalar) String() string {
	switch s.Kind {
	case KindInt:
		return strconv.FormatInt(s.Int, 10)
	case KindBool:
		return strconv.FormatBool(s.Bool)
	}
	return s.Str
}

// MarshalJSON writes the scalar as its native JSON type.
func (s Scalar) MarshalJSON() ([]byte, error) {
	switch s.Kind {
	case KindInt:
		return json.Marshal(s.Int)
	case KindBool:
		return json.Marshal(s.Bool)
	}
	return json.Marshal(s.Str)
}

// MarshalJSON writes a section as an object in directive order; lists become arrays.
func (s Section) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(d.Key)
		b.Write(k)
		b.WriteByte(':')
		var v []byte
		var err error
		if d.List {
			v, err = json.Marshal(d.Values)
		} else {
			v, err = json.Marshal(d.Values[0])
		}
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// Get returns the values of key, or nil.
func (s Section) Get(key string) []Scalar {
	for _, d := range s {
		if d.Key == key {
			return d.Values
		}
	}
	return nil
}

// SortedKeys returns the keys of a map in ascending order.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Admins returns the names of admin users with a key, sorted.
func (m *Model) Admins() []string {
	var out []string
	for _, name := range SortedKeys(m.Users) {
		if u := m.Users[name]; u.IsAdmin && u.SSHKey != "" {
			out = append(out, name)
		}
	}
	return out
}
