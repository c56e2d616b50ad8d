package config

import (
	"sort"
	"strings"
)

// decoder turns the decoded TOML tree into a Model. Wrong types are reported (unless the
// schema already flagged the path) and skipped, so every rule still runs on the rest.
type decoder struct {
	r     *Report
	order map[string][]string
	opts  Options
}

// keys returns the keys of t (at path p) in document order.
func (d *decoder) keys(t map[string]any, p Path) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range d.order[strings.Join(p, "\x1f")] {
		if _, ok := t[k]; ok && !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	// Keys from inline tables may be missing from the metadata order; append them sorted.
	var rest []string
	for k := range t {
		if !seen[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

func (d *decoder) table(t map[string]any, p Path, key string) (map[string]any, bool) {
	v, ok := t[key]
	if !ok {
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		d.r.structuralf(p.Key(key), "expected a table, got %s", tomlType(v))
		return nil, false
	}
	return m, true
}

func (d *decoder) str(t map[string]any, p Path, key string) (string, bool) {
	v, ok := t[key]
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		d.r.structuralf(p.Key(key), "expected string, got %s", tomlType(v))
		return "", false
	}
	return s, true
}

func (d *decoder) boolean(t map[string]any, p Path, key string) (bool, bool) {
	v, ok := t[key]
	if !ok {
		return false, false
	}
	b, ok := v.(bool)
	if !ok {
		d.r.structuralf(p.Key(key), "expected boolean, got %s", tomlType(v))
		return false, false
	}
	return b, true
}

func (d *decoder) integer(t map[string]any, p Path, key string) (int64, bool) {
	v, ok := t[key]
	if !ok {
		return 0, false
	}
	i, ok := v.(int64)
	if !ok {
		d.r.structuralf(p.Key(key), "expected integer, got %s", tomlType(v))
		return 0, false
	}
	return i, true
}

// strList reads an array of strings; present reports whether the key exists at all.
func (d *decoder) strList(t map[string]any, p Path, key string) (list []string, present bool) {
	v, ok := t[key]
	if !ok {
		return nil, false
	}
	arr, ok := v.([]any)
	if !ok {
		d.r.structuralf(p.Key(key), "expected a list of strings, got %s", tomlType(v))
		return nil, true
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			d.r.structuralf(p.Key(key).Index(i), "expected string, got %s", tomlType(e))
			continue
		}
		out = append(out, s)
	}
	return out, true
}

func (d *decoder) intList(t map[string]any, p Path, key string) []int {
	v, ok := t[key]
	if !ok {
		return nil
	}
	arr, ok := v.([]any)
	if !ok {
		d.r.structuralf(p.Key(key), "expected a list of integers, got %s", tomlType(v))
		return nil
	}
	var out []int
	for i, e := range arr {
		n, ok := e.(int64)
		if !ok {
			d.r.structuralf(p.Key(key).Index(i), "expected integer, got %s", tomlType(e))
			continue
		}
		out = append(out, int(n))
	}
	return out
}

// model assembles the whole Model; section rules live in the rules_*.go files.
func (d *decoder) model(doc map[string]any) Model {
	m := Model{Version: 1}
	root := Path(nil)
	if t, ok := d.table(doc, root, "users"); ok {
		m.Users = d.users(t, at("users"))
	}
	if t, ok := d.table(doc, root, "network"); ok {
		m.Network = d.network(t, at("network"))
	}
	if t, ok := d.table(doc, root, "os_upgrade"); ok {
		m.OSUpgrade = d.osUpgrade(t, at("os_upgrade"))
	}
	if t, ok := d.table(doc, root, "activation"); ok {
		m.Activation = d.activation(t, at("activation"))
	}
	if t, ok := d.table(doc, root, "containers"); ok {
		m.Containers = d.containers(t, at("containers"))
	}
	if t, ok := d.table(doc, root, "fleet"); ok {
		m.Fleet = d.fleet(t, at("fleet"))
	}
	if t, ok := d.table(doc, root, "secrets"); ok {
		if s := d.secrets(t, at("secrets")); len(s) > 0 {
			m.Secrets = s
		}
	}
	return m
}

// dedupe drops repeated strings, keeping the first occurrence.
func dedupe(in []string) []string {
	if in == nil {
		return nil
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func sortedUnique(in []string) []string {
	out := dedupe(in)
	sort.Strings(out)
	return out
}

func sortedUniqueInts(in []int) []int {
	seen := map[int]bool{}
	var out []int
	for _, n := range in {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}
