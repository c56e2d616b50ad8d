package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Severity tells an error, which fails validation, from a warning, which does not.
type Severity int

const (
	// SeverityError entries make the config invalid.
	SeverityError Severity = iota
	// SeverityWarning entries are shown but never fail validation.
	SeverityWarning
)

func (s Severity) String() string {
	if s == SeverityWarning {
		return "warning"
	}
	return "error"
}

// Path addresses a value in the config: one element per table key, with array indexes
// written as "[i]". Paths are built by copying, never by appending to a shared slice.
type Path []string

func at(elems ...string) Path { return Path(elems) }

// Key returns a new Path one key deeper.
func (p Path) Key(k string) Path {
	out := make(Path, len(p), len(p)+1)
	copy(out, p)
	return append(out, k)
}

// Index returns a new Path for the i-th element of the array at p.
func (p Path) Index(i int) Path { return p.Key("[" + strconv.Itoa(i) + "]") }

// String renders the path dotted, e.g. containers.container.web.Container.PublishPort[0].
func (p Path) String() string {
	var b strings.Builder
	for i, e := range p {
		if i > 0 && !strings.HasPrefix(e, "[") {
			b.WriteByte('.')
		}
		b.WriteString(e)
	}
	return b.String()
}

// Entry is one finding: an error or a warning at a path, with the TOML line when the key
// is known. It implements error so a single entry can travel on its own.
type Entry struct {
	Severity Severity `json:"-"`
	Path     string   `json:"path"`
	Line     int      `json:"line,omitempty"`
	Message  string   `json:"message"`
}

// Error renders the entry as `<path> (line N): <message>` (parts that are unknown left out).
func (e Entry) Error() string {
	var b strings.Builder
	switch {
	case e.Path != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s (line %d): ", e.Path, e.Line)
	case e.Path != "":
		b.WriteString(e.Path + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	b.WriteString(e.Message)
	return b.String()
}

// Report collects every finding of one Parse. The zero value is ready to use.
type Report struct {
	Entries []Entry `json:"entries"`

	lines   lineIndex
	flagged map[string]bool
}

// Fatal reports whether the report holds at least one error.
func (r *Report) Fatal() bool {
	for _, e := range r.Entries {
		if e.Severity == SeverityError {
			return true
		}
	}
	return false
}

// Errors returns the error entries in the order they were found.
func (r *Report) Errors() []Entry { return r.filter(SeverityError) }

// Warnings returns the warning entries in the order they were found.
func (r *Report) Warnings() []Entry { return r.filter(SeverityWarning) }

func (r *Report) filter(s Severity) []Entry {
	var out []Entry
	for _, e := range r.Entries {
		if e.Severity == s {
			out = append(out, e)
		}
	}
	return out
}

// String renders one line per entry, errors first.
func (r *Report) String() string {
	var b strings.Builder
	for _, e := range r.Errors() {
		b.WriteString("error: " + e.Error() + "\n")
	}
	for _, e := range r.Warnings() {
		b.WriteString("warning: " + e.Error() + "\n")
	}
	return b.String()
}

// Errorf records an error at p unless p or one of its parents failed a structural rule
// (schema or type): such a value is not judged again by the semantic rules.
func (r *Report) Errorf(p Path, format string, args ...any) {
	if r.covered(p) {
		return
	}
	r.add(SeverityError, p, fmt.Sprintf(format, args...))
}

// structuralf records a structural error (wrong type, unknown key, schema rule) and marks
// p so that later rules skip it and everything below it.
func (r *Report) structuralf(p Path, format string, args ...any) {
	if r.covered(p) {
		return
	}
	r.flag(p)
	r.add(SeverityError, p, fmt.Sprintf(format, args...))
}

// Warnf records a warning at p.
func (r *Report) Warnf(p Path, format string, args ...any) {
	r.add(SeverityWarning, p, fmt.Sprintf(format, args...))
}

// Merge appends the entries of another report (for example from rendering).
func (r *Report) Merge(o Report) { r.Entries = append(r.Entries, o.Entries...) }

func (r *Report) add(s Severity, p Path, msg string) {
	r.Entries = append(r.Entries, Entry{Severity: s, Path: p.String(), Line: r.lines.line(p), Message: msg})
}

func (r *Report) flag(p Path) {
	if r.flagged == nil {
		r.flagged = map[string]bool{}
	}
	r.flagged[strings.Join(p, "\x1f")] = true
}

func (r *Report) covered(p Path) bool {
	for i := len(p); i >= 0; i-- {
		if r.flagged[strings.Join(p[:i], "\x1f")] {
			return true
		}
	}
	return false
}

// hasErrorsUnder reports whether an error was recorded at p or below it.
func (r *Report) hasErrorsUnder(p Path) bool {
	prefix := strings.Join(p, "\x1f")
	for k := range r.flagged {
		if k == prefix || strings.HasPrefix(k, prefix+"\x1f") {
			return true
		}
	}
	return false
}
