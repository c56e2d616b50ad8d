// Package schemas embeds fleetprov's JSON Schema for config.toml and the OpenAPI document
// of the HTTP bridge, compiles the schema once, and turns validation failures into short,
// path-addressed violations that callers put in their own reports. (Envelopes, job
// records and events are Go types in messaging/envelope, core/record and messaging/wire,
// decoded strictly; they have no JSON Schema.)
//
// It imports nothing from core/ or messaging/; both use it.
package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

//go:embed *.json
var files embed.FS

// baseURL is where the embedded documents live for the compiler; nothing is fetched.
const baseURL = "https://fleetprov.dev/schemas/"

// Raw returns the bytes of an embedded schema document such as "config.schema.json".
func Raw(name string) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading embedded schema %s: %w", name, err)
	}
	return b, nil
}

// Schema is a compiled schema plus its document, kept for message lookups.
type Schema struct {
	name     string
	compiled *jsonschema.Schema
	doc      any
}

var (
	configOnce = sync.OnceValues(func() (*Schema, error) { return compile("config.schema.json") })
)

// Config returns the compiled config.toml v1 schema. It is compiled once per process.
func Config() (*Schema, error) { return configOnce() }

func compile(name string) (*Schema, error) {
	raw, err := Raw(name)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing schema %s: %w", name, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	// Only the embedded documents may be loaded: a schema never reaches the network.
	c.UseLoader(noLoader{})
	if err := c.AddResource(baseURL+name, doc); err != nil {
		return nil, fmt.Errorf("adding schema %s: %w", name, err)
	}
	sch, err := c.Compile(baseURL + name)
	if err != nil {
		return nil, fmt.Errorf("compiling schema %s: %w", name, err)
	}
	return &Schema{name: name, compiled: sch, doc: doc}, nil
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not embedded", url)
}

// Doc returns the parsed schema document (maps, slices, json.Number), for drift tests and tools.
func (s *Schema) Doc() any { return s.doc }

// Violation is one failed rule: where in the instance, and what is wrong, in words an
// operator can act on.
type Violation struct {
	// Path is the instance location, one element per object key or array index.
	Path []string
	// Message is the human-readable rule that failed.
	Message string
}

// Validate checks an instance made of JSON values (map[string]any, []any, string, bool,
// json.Number, float64, nil). It returns every leaf violation, at most one per path,
// sorted by path.
func (s *Schema) Validate(instance any) []Violation {
	err := s.compiled.Validate(instance)
	if err == nil {
		return nil
	}
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return []Violation{{Message: err.Error()}}
	}
	var out []Violation
	seen := map[string]bool{}
	var add func(Violation)
	var walk func(e *jsonschema.ValidationError, parentLoc []string)
	walk = func(e *jsonschema.ValidationError, parentLoc []string) {
		loc := e.InstanceLocation
		if pn, ok := e.ErrorKind.(*kind.PropertyNames); ok {
			// The library shares (and may later overwrite) the slice it reports as the
			// location of a propertyNames failure, so check it against the instance.
			objLoc := locateObject(instance, loc, pn.Property, parentLoc)
			v := Violation{Path: append(objLoc, pn.Property), Message: s.xMessage(e.SchemaURL)}
			if v.Message == "" {
				v.Message = "invalid name"
			}
			add(v)
			return
		}
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c, loc)
			}
			return
		}
		add(s.translate(e))
	}
	add = func(v Violation) {
		key := strings.Join(v.Path, "\x1f")
		if seen[key] {
			return
		}
		seen[key] = true
		out = append(out, v)
	}
	walk(ve, nil)
	sort.SliceStable(out, func(i, j int) bool {
		return strings.Join(out[i].Path, "\x1f") < strings.Join(out[j].Path, "\x1f")
	})
	return out
}

// locateObject returns loc when the instance holds an object with key prop there;
// otherwise the only location of such an object, or fallback.
func locateObject(instance any, loc []string, prop string, fallback []string) []string {
	if m, ok := lookup(instance, loc).(map[string]any); ok {
		if _, ok := m[prop]; ok {
			return append([]string(nil), loc...)
		}
	}
	var found [][]string
	var search func(node any, at []string)
	search = func(node any, at []string) {
		switch n := node.(type) {
		case map[string]any:
			if _, ok := n[prop]; ok {
				found = append(found, append([]string(nil), at...))
			}
			for k, v := range n {
				search(v, append(at[:len(at):len(at)], k))
			}
		case []any:
			for i, v := range n {
				search(v, append(at[:len(at):len(at)], strconv.Itoa(i)))
			}
		}
	}
	search(instance, nil)
	if len(found) == 1 {
		return found[0]
	}
	return append([]string(nil), fallback...)
}

func lookup(node any, loc []string) any {
	for _, k := range loc {
		switch n := node.(type) {
		case map[string]any:
			node = n[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(n) {
				return nil
			}
			node = n[i]
		default:
			return nil
		}
	}
	return node
}

// translate turns one leaf error into a Violation, preferring the schema's own
// "x-message" for the failing subschema.
func (s *Schema) translate(e *jsonschema.ValidationError) Violation {
	path := append([]string(nil), e.InstanceLocation...)
	custom := s.xMessage(e.SchemaURL, e.ErrorKind.KeywordPath())
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		// Report each missing key at its own path.
		return Violation{Path: append(path, k.Missing[0]), Message: "is required"}
	case *kind.AdditionalProperties:
		return Violation{Path: append(path, k.Properties[0]), Message: "unknown key"}
	}
	if custom != "" {
		return Violation{Path: path, Message: custom}
	}
	return Violation{Path: path, Message: describe(e.ErrorKind)}
}

func describe(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Type:
		return fmt.Sprintf("expected %s, got %s", strings.Join(k.Want, " or "), k.Got)
	case *kind.Const:
		return fmt.Sprintf("expected %s", jsonText(k.Want))
	case *kind.Enum:
		var w []string
		for _, v := range k.Want {
			w = append(w, jsonText(v))
		}
		return "expected one of " + strings.Join(w, ", ")
	case *kind.MinItems:
		return fmt.Sprintf("expected at least %d item(s)", k.Want)
	case *kind.MinProperties:
		return fmt.Sprintf("expected at least %d entr(y/ies)", k.Want)
	case *kind.MinLength:
		return fmt.Sprintf("expected at least %d character(s)", k.Want)
	case *kind.Pattern:
		return fmt.Sprintf("does not match %s", k.Want)
	case *kind.Minimum:
		return "must be at least " + ratText(k.Want)
	case *kind.Maximum:
		return "must be at most " + ratText(k.Want)
	case *kind.FalseSchema:
		return "not allowed"
	}
	return fmt.Sprint(k)
}

func ratText(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// xMessage resolves the location of the subschema whose keyword failed and returns its
// "x-messages" entry for that keyword, else its "x-message", or "" when there is none.
func (s *Schema) xMessage(schemaURL string, keyword ...[]string) string {
	_, frag, ok := strings.Cut(schemaURL, "#")
	if !ok {
		return ""
	}
	parts := strings.Split(strings.TrimPrefix(frag, "/"), "/")
	node := s.doc
	for _, p := range parts {
		if p == "" {
			continue
		}
		p = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
		switch n := node.(type) {
		case map[string]any:
			node = n[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(n) {
				return ""
			}
			node = n[i]
		default:
			return ""
		}
	}
	if m, ok := node.(map[string]any); ok {
		if byKeyword, ok := m["x-messages"].(map[string]any); ok && len(keyword) > 0 && len(keyword[0]) > 0 {
			if msg, ok := byKeyword[keyword[0][0]].(string); ok {
				return msg
			}
		}
		if msg, ok := m["x-message"].(string); ok {
			return msg
		}
	}
	return ""
}
