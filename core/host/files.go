package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/fleetprov/fleetprov/core/state"
)

// reloads says what makes each kind of file take effect once written (and once removed).
var reloads = map[string]struct{ written, removed [][]string }{
	KindNetwork: {
		written: [][]string{{"networkctl", "reload"}},
		removed: [][]string{{"networkctl", "reload"}},
	},
	KindDNS: {
		written: [][]string{{"systemctl", "try-reload-or-restart", "systemd-resolved.service"}},
		removed: [][]string{{"systemctl", "try-reload-or-restart", "systemd-resolved.service"}},
	},
	KindNTP: {
		written: [][]string{{"systemctl", "try-restart", "systemd-timesyncd.service"}},
		removed: [][]string{{"systemctl", "try-restart", "systemd-timesyncd.service"}},
	},
	KindChrony: {
		written: [][]string{{"chronyc", "reload", "sources"}},
		removed: [][]string{{"chronyc", "reload", "sources"}},
	},
	KindDnsmasq: {
		written: [][]string{{"systemctl", "enable", "dnsmasq.service"}, {"systemctl", "restart", "dnsmasq.service"}},
		removed: [][]string{{"systemctl", "disable", "--now", "dnsmasq.service"}},
	},
}

// kindOrder is the order kinds are applied in: the firewall first, so a network change
// never runs unprotected, then the network, what rides on it, and the rest.
var kindOrder = []string{KindFirewall, KindNetwork, KindDNS, KindNTP, KindChrony, KindDnsmasq, KindOSUpgrade}

// managedPaths lists the files of ours that exist under the root r, by kind.
func managedPaths(r *os.Root) (map[string]string, error) {
	out := map[string]string{}
	for p, kind := range map[string]string{ResolvedDropIn: KindDNS, TimesyncDropIn: KindNTP, ChronySources: KindChrony, DnsmasqConf: KindDnsmasq,
		OSUpgradeConf: KindOSUpgrade, FirewallRuleset: KindFirewall, FirewallUnit: KindFirewall} {
		if _, err := r.Lstat(rel(p)); err == nil {
			out[p] = kind
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
	}
	matches, err := fs.Glob(r.FS(), rel(path.Join(NetworkDir, NetworkPrefix+"*.network")))
	if err != nil {
		return nil, err
	}
	for _, m := range matches {
		out["/"+m] = KindNetwork
	}
	return out, nil
}

func planFiles(r *os.Root, d Desired) ([]Step, error) {
	have, err := managedPaths(r)
	if err != nil {
		return nil, err
	}
	type change struct {
		writes  []File
		removes []string
	}
	byKind := map[string]*change{}
	get := func(k string) *change {
		if byKind[k] == nil {
			byKind[k] = &change{}
		}
		return byKind[k]
	}
	want := map[string]bool{}
	for _, f := range d.Files {
		want[f.Path] = true
		cur, _, err := readFile(r, f.Path)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(cur, f.Content) {
			get(f.Kind).writes = append(get(f.Kind).writes, f)
		}
	}
	var gone []string
	for p := range have {
		if !want[p] {
			gone = append(gone, p)
		}
	}
	sort.Strings(gone)
	for _, p := range gone {
		get(have[p]).removes = append(get(have[p]).removes, p)
	}
	var steps []Step
	for _, kind := range kindOrder {
		c := byKind[kind]
		if c == nil {
			continue
		}
		network := kind != KindNTP && kind != KindChrony && kind != KindOSUpgrade
		if kind == KindFirewall && d.Firewall == nil {
			steps = append(steps, firewallSteps(d, false)...)
		}
		for _, f := range c.writes {
			steps = append(steps, newStep("file", f.Path, "write", kind, network,
				func(ctx context.Context, e *Env) error { return e.writeFile(f) }))
		}
		for _, p := range c.removes {
			steps = append(steps, newStep("file", p, "remove", kind, network,
				func(ctx context.Context, e *Env) error { return e.removeFile(p) }))
		}
		if kind == KindFirewall && d.Firewall != nil {
			steps = append(steps, firewallSteps(d, len(c.writes) > 0)...)
		}
		cmds := reloads[kind].written
		if len(c.writes) == 0 {
			cmds = reloads[kind].removed
		}
		for _, argv := range cmds {
			steps = append(steps, command("service", strings.Join(argv, " "), "run", argv, nil, network))
		}
	}
	return steps, nil
}

// firewallSteps loads the new table (after its files are written, so a reboot loads the
// same rules) or, when the config has no firewall any more, deletes ours (before its files
// go).
func firewallSteps(d Desired, written bool) []Step {
	if d.Firewall != nil && written {
		return []Step{
			command("firewall", "table "+FirewallTable, "load", []string{"nft", "-f", "-"}, d.Firewall, true),
			command("service", "systemctl enable fleetprov-firewall.service", "run", []string{"systemctl", "enable", "fleetprov-firewall.service"}, nil, true),
		}
	}
	if d.Firewall == nil {
		return []Step{
			command("service", "systemctl disable fleetprov-firewall.service", "run", []string{"systemctl", "disable", "fleetprov-firewall.service"}, nil, true),
			command("firewall", "table "+FirewallTable, "delete", []string{"nft", "-f", "-"}, []byte("table "+FirewallTable+"\ndelete table "+FirewallTable+"\n"), true),
		}
	}
	return nil
}

func command(kind, object, action string, argv []string, stdin []byte, network bool) Step {
	return newStep(kind, object, action, "", network, func(ctx context.Context, e *Env) error {
		return e.Host.Run(ctx, stdin, argv...)
	})
}

func (e *Env) writeFile(f File) error {
	r, err := e.root()
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.MkdirAll(path.Dir(rel(f.Path)), 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", path.Dir(f.Path), err)
	}
	return state.WriteFileAtomicIn(r, rel(f.Path), f.Content, f.Mode, -1, -1)
}

func (e *Env) removeFile(p string) error {
	r, err := e.root()
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.Remove(rel(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", p, err)
	}
	return nil
}
