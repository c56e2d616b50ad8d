package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/fleetprov/fleetprov/schemas"
)

// Defaults that are part of the contract (DESIGN.md, config-v1.md).
const (
	DefaultAppUser        = "appsvc"
	DefaultBridgePort     = 8080
	DefaultTimeoutSeconds = 300
	DefaultStrategy       = "rollback"
	// DefaultConfirm and DefaultConfirmSeconds: a network change is confirmed by the hub
	// link (when there is a hub) within two minutes.
	DefaultConfirm        = ConfirmAuto
	DefaultConfirmSeconds = 120
	DefaultGatewayCIDR    = "172.20.30.1/24"
	DefaultDomain         = "local"
	DefaultNTPServer      = "time.cloudflare.com"
)

// Options tune the rules that depend on the device rather than on the file. The zero value
// means the defaults.
type Options struct {
	// AppUser is the account rootless containers run as; its name is reserved (default appsvc).
	AppUser string
	// BridgePort is the HTTP bridge port that WAN tcp must not open (default 8080).
	BridgePort int
}

func (o Options) withDefaults() Options {
	if o.AppUser == "" {
		o.AppUser = DefaultAppUser
	}
	if o.BridgePort == 0 {
		o.BridgePort = DefaultBridgePort
	}
	return o
}

// Parse reads config.toml v1 and returns the normalized model and a report of every error
// and warning. The error is nil, ErrInvalid, ErrUnsupportedVersion or ErrEmpty; a non-nil
// error comes with at least one error entry in the report, and a nil error with none.
func Parse(raw []byte, opts Options) (Model, Report, error) {
	opts = opts.withDefaults()
	src := string(raw)
	r := Report{lines: indexLines(src)}
	if strings.TrimSpace(stripComments(src)) == "" {
		r.Errorf(nil, "config is empty")
		return Model{}, r, ErrEmpty
	}
	var doc map[string]any
	md, err := toml.Decode(src, &doc)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			r.Entries = append(r.Entries, Entry{Severity: SeverityError, Line: perr.Position.Line,
				Message: fmt.Sprintf("TOML syntax error (column %d): %s", perr.Position.Col, perr.Message)})
		} else {
			r.Errorf(nil, "TOML syntax error: %s", err.Error())
		}
		return Model{}, r, ErrInvalid
	}
	if len(doc) == 0 {
		r.Errorf(nil, "config is empty")
		return Model{}, r, ErrEmpty
	}
	switch v := doc["version"].(type) {
	case nil:
		r.structuralf(at("version"), "is required")
	case int64:
		if v != 1 {
			r.Errorf(at("version"), "unsupported version %d: the supported version is 1", v)
			return Model{}, r, ErrUnsupportedVersion
		}
	default:
		r.structuralf(at("version"), "expected the integer 1, got %s", tomlType(v))
	}

	sch, err := schemas.Config()
	if err != nil {
		// The schema is embedded and tested; failing here is a build defect.
		panic(err)
	}
	inst := toJSON(doc)
	for _, v := range sch.Validate(inst) {
		r.structuralf(instancePath(inst, v.Path), "%s", v.Message)
	}

	d := &decoder{r: &r, order: keyOrder(md), opts: opts}
	m := d.model(doc)
	checkModel(&r, &m)
	if r.Fatal() {
		return Model{}, r, fmt.Errorf("%w: %d error(s)", ErrInvalid, len(r.Errors()))
	}
	return m, r, nil
}

// instancePath turns a schema instance location into a Path, writing array indexes as [i].
func instancePath(inst any, loc []string) Path {
	p := make(Path, 0, len(loc))
	node := inst
	for _, k := range loc {
		switch n := node.(type) {
		case []any:
			i, err := strconv.Atoi(k)
			p = append(p, "["+k+"]")
			if err == nil && i >= 0 && i < len(n) {
				node = n[i]
			} else {
				node = nil
			}
		case map[string]any:
			p = append(p, k)
			node = n[k]
		default:
			p = append(p, k)
			node = nil
		}
	}
	return p
}

// stripComments drops full-line comments, for the emptiness check only.
func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if t := strings.TrimSpace(line); t != "" && t[0] != '#' {
			b.WriteString(t)
		}
	}
	return b.String()
}

// keyOrder maps each table path to its direct keys in document order.
func keyOrder(md toml.MetaData) map[string][]string {
	out := map[string][]string{}
	for _, k := range md.Keys() {
		if len(k) == 0 {
			continue
		}
		parent := strings.Join(k[:len(k)-1], "\x1f")
		out[parent] = append(out[parent], k[len(k)-1])
	}
	return out
}

// toJSON converts decoded TOML into JSON values for the schema validator.
func toJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = toJSON(e)
		}
		return out
	case []map[string]any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = toJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = toJSON(e)
		}
		return out
	case int64:
		return json.Number(strconv.FormatInt(t, 10))
	case float64:
		if math.IsInf(t, 0) || math.IsNaN(t) {
			return strconv.FormatFloat(t, 'g', -1, 64)
		}
		return json.Number(strconv.FormatFloat(t, 'g', -1, 64))
	case time.Time:
		return t.Format(time.RFC3339Nano)
	case fmt.Stringer:
		return t.String()
	}
	return v
}

func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "boolean"
	case []any, []map[string]any:
		return "array"
	case map[string]any:
		return "table"
	case nil:
		return "nothing"
	}
	return "datetime"
}
