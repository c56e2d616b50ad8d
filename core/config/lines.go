package config

import (
	"strings"
)

// lineIndex maps a key path to the 1-based line where the key or table is defined.
// BurntSushi/toml keeps key positions private, so this scans the source once: table
// headers and `key = value` lines, skipping multi-line strings. A path that is not found
// falls back to its nearest ancestor (array items, inline tables).
type lineIndex map[string]int

func indexLines(src string) lineIndex {
	idx := lineIndex{}
	var table []string
	inMulti := "" // the delimiter of an open multi-line string
	for n, raw := range strings.Split(src, "\n") {
		lineNo := n + 1
		line := strings.TrimSpace(raw)
		if inMulti != "" {
			if strings.Count(line, inMulti)%2 == 1 {
				inMulti = ""
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			inner := strings.TrimLeft(line, "[")
			keys, rest, ok := parseKey(inner)
			if ok && strings.HasPrefix(strings.TrimSpace(rest), "]") {
				table = keys
				idx.set(table, lineNo)
			}
			continue
		}
		keys, rest, ok := parseKey(line)
		if !ok || !strings.HasPrefix(strings.TrimSpace(rest), "=") {
			continue
		}
		full := append(append([]string(nil), table...), keys...)
		idx.set(full, lineNo)
		value := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), "="))
		for _, d := range []string{`"""`, `'''`} {
			if strings.HasPrefix(value, d) && strings.Count(value, d)%2 == 1 {
				inMulti = d
			}
		}
	}
	return idx
}

func (idx lineIndex) set(keys []string, line int) {
	k := strings.Join(keys, "\x1f")
	if _, ok := idx[k]; !ok {
		idx[k] = line
	}
}

// line returns the line of p or of its nearest known ancestor, or 0.
func (idx lineIndex) line(p Path) int {
	var keys []string
	for _, e := range p {
		if strings.HasPrefix(e, "[") {
			break // array items share the line of their array (or later lines of it)
		}
		keys = append(keys, e)
	}
	for i := len(keys); i > 0; i-- {
		if l, ok := idx[strings.Join(keys[:i], "\x1f")]; ok {
			return l
		}
	}
	return 0
}

// parseKey reads a dotted TOML key (bare, "basic" or 'literal' parts) from the start of s
// and returns its parts and the rest of s.
func parseKey(s string) (keys []string, rest string, ok bool) {
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return nil, "", false
		}
		var part string
		switch s[0] {
		case '"':
			end := 1
			var b strings.Builder
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' && end+1 < len(s) {
					end++
				}
				b.WriteByte(s[end])
				end++
			}
			if end >= len(s) {
				return nil, "", false
			}
			part, s = b.String(), s[end+1:]
		case '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return nil, "", false
			}
			part, s = s[1:end+1], s[end+2:]
		default:
			end := 0
			for end < len(s) && isBareKeyChar(s[end]) {
				end++
			}
			if end == 0 {
				return nil, "", false
			}
			part, s = s[:end], s[end:]
		}
		keys = append(keys, part)
		s = strings.TrimLeft(s, " \t")
		if strings.HasPrefix(s, ".") {
			s = s[1:]
			continue
		}
		return keys, s, true
	}
}

func isBareKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}
