package provision

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/BurntSushi/toml"

	"github.com/fleetprov/fleetprov/core/config"
)

// patchKinds maps a keyed kind to its path in the document.
var patchKinds = map[string][]string{
	"users":              {"users"},
	"containers":         {"containers", "container"},
	"container-networks": {"containers", "network"},
	"container-volumes":  {"containers", "volume"},
	"container-builds":   {"containers", "build"},
	"secrets":            {"secrets"},
}

// IsSecretsSet reports whether a patch is a secrets rotation: {"kind":"secrets","op":"set"}
// changes no config; the new values travel sealed in the envelope.
func IsSecretsSet(p config.Patch) bool { return p.Kind == "secrets" && p.Op == "set" }

// PreparePatch applies p to the active config and validates the result, and returns it
// as an apply input bound to that active config (Input.Base): if another apply changes
// the active config before this one holds the lock, it fails with ErrStaleBase instead of
// writing back a config built on the old one. An error is an *InvalidError (with every
// finding) when the patch or the result is invalid, or state.ErrNoActive on an
// unprovisioned device.
func (p *Provisioner) PreparePatch(patch config.Patch) (Input, error) {
	raw, err := p.opts.State.ReadActive()
	if err != nil {
		return Input{}, err
	}
	m, _, err := config.Parse(raw, p.opts.Config)
	if err != nil {
		return Input{}, fmt.Errorf("parsing active config: %w", err)
	}
	if IsSecretsSet(patch) {
		if _, err = ApplyPatch(m, patch, p.opts.Config); err != nil {
			return Input{}, err
		}
		// The active config.toml again, byte for byte: only the secrets change.
		return Input{Reader: bytes.NewReader(raw), Base: Digest(raw)}, nil
	}
	m, err = ApplyPatch(m, patch, p.opts.Config)
	if err != nil {
		return Input{}, err
	}
	return Input{Model: &m, Base: Digest(raw)}, nil
}

// ApplyPatch applies a patch to a model and returns the validated result.
func ApplyPatch(m config.Model, patch config.Patch, opts config.Options) (config.Model, error) {
	invalid := func(format string, args ...any) error {
		var r config.Report
		r.Errorf(config.Path{patch.Kind}, format, args...)
		return &InvalidError{Report: r, Err: config.ErrInvalid}
	}
	if IsSecretsSet(patch) {
		if patch.Name != "" || len(patch.Value) > 0 {
			return config.Model{}, invalid("a secrets set takes no name or value: the values travel sealed beside the patch")
		}
		return m, nil
	}
	var doc map[string]any
	if _, err := toml.Decode(string(config.Encode(m)), &doc); err != nil {
		return config.Model{}, fmt.Errorf("decoding active config: %w", err)
	}
	var value any
	if len(patch.Value) > 0 {
		dec := json.NewDecoder(bytes.NewReader(patch.Value))
		dec.UseNumber()
		if err := dec.Decode(&value); err != nil {
			return config.Model{}, invalid("body is not JSON: %v", err)
		}
		value = fromJSON(value)
	}
	if path, ok := patchKinds[patch.Kind]; ok {
		parent := mapAt(doc, path)
		switch patch.Op {
		case "put":
			obj, ok := value.(map[string]any)
			if !ok {
				return config.Model{}, invalid("expected a JSON object for %s %q", patch.Kind, patch.Name)
			}
			parent[patch.Name] = obj
		case "delete":
			if _, ok := parent[patch.Name]; !ok {
				return config.Model{}, invalid("%s %q does not exist", patch.Kind, patch.Name)
			}
			delete(parent, patch.Name)
			if patch.Kind == "containers" {
				dropFromActivation(doc, patch.Name)
			}
		default:
			return config.Model{}, invalid("op must be put or delete, got %q", patch.Op)
		}
	} else {
		switch patch.Kind {
		case "network", "activation":
		default:
			return config.Model{}, invalid("unknown kind %q", patch.Kind)
		}
		if patch.Op != "merge" {
			return config.Model{}, invalid("op must be merge for %s, got %q", patch.Kind, patch.Op)
		}
		if _, ok := value.(map[string]any); !ok {
			return config.Model{}, invalid("expected a JSON object for %s", patch.Kind)
		}
		merged := mergePatch(doc[patch.Kind], value)
		if merged == nil {
			delete(doc, patch.Kind)
		} else {
			doc[patch.Kind] = merged
		}
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
		return config.Model{}, invalid("cannot encode the result: %v", err)
	}
	out, rep, err := config.Parse(buf.Bytes(), opts)
	if err != nil {
		// Lines would point into the re-encoded document, not anything the caller sent.
		for i := range rep.Entries {
			rep.Entries[i].Line = 0
		}
		return config.Model{}, &InvalidError{Report: rep, Err: err}
	}
	return out, nil
}

// mapAt returns the table at path, creating it.
func mapAt(doc map[string]any, path []string) map[string]any {
	cur := doc
	for _, k := range path {
		next, ok := cur[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			cur[k] = next
		}
		cur = next
	}
	return cur
}

// dropFromActivation removes a deleted container from every activation list.
func dropFromActivation(doc map[string]any, name string) {
	act, ok := doc["activation"].(map[string]any)
	if !ok {
		return
	}
	for _, k := range []string{"required", "restart", "allow_degraded"} {
		list, ok := act[k].([]any)
		if !ok {
			continue
		}
		act[k] = slices.DeleteFunc(list, func(v any) bool { return v == name })
	}
}

// mergePatch applies an RFC 7396 JSON merge patch: objects merge, null deletes, anything
// else replaces.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}

// fromJSON turns json.Number into int64 (or float64 when not integral), so integers stay
// TOML integers.
func fromJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = fromJSON(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = fromJSON(e)
		}
		return t
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		f, _ := t.Float64()
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return t.String()
		}
		return f
	}
	return v
}
