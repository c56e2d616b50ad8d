package config

import (
	"fmt"
	"path"
	"regexp"
	"strings"
)

var (
	resourceNameRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*$`)
	directiveNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*$`)
)

// Tokens substituted at render time with the active config dir's runtime paths.
const (
	TokenConfigDir = "${CONFIG_DIR}"
	TokenFilesDir  = "${FILES_DIR}"
)

func (d *decoder) containers(t map[string]any, p Path) Containers {
	var c Containers
	if ct, ok := d.table(t, p, "container"); ok {
		c.Container = map[string]Container{}
		cp := p.Key("container")
		for _, name := range d.keys(ct, cp) {
			et, ok := d.table(ct, cp, name)
			if !ok {
				continue
			}
			d.resourceName(cp.Key(name), name)
			var k Container
			k.Privileged, _ = d.boolean(et, cp.Key(name), "privileged")
			k.Unit = d.section(et, cp.Key(name), "Unit")
			k.Container = d.section(et, cp.Key(name), "Container")
			k.Install = d.section(et, cp.Key(name), "Install")
			c.Container[name] = k
		}
	}
	for _, rk := range ResourceKinds {
		rt, ok := d.table(t, p, rk.Kind)
		if !ok {
			continue
		}
		kp := p.Key(rk.Kind)
		m := map[string]Section{}
		for _, name := range d.keys(rt, kp) {
			et, ok := d.table(rt, kp, name)
			if !ok {
				continue
			}
			d.resourceName(kp.Key(name), name)
			m[name] = d.section(et, kp.Key(name), rk.Section)
		}
		if len(m) > 0 {
			c.setResources(rk.Kind, m)
		}
	}
	return c
}

func (d *decoder) resourceName(p Path, name string) {
	if !resourceNameRE.MatchString(name) {
		d.r.structuralf(p, "invalid resource name: must match %s", resourceNameRE)
	}
}

// section reads one Quadlet section: directive -> scalar or non-empty list of scalars.
func (d *decoder) section(t map[string]any, p Path, key string) Section {
	st, ok := d.table(t, p, key)
	if !ok {
		return nil
	}
	sp := p.Key(key)
	var out Section
	for _, k := range d.keys(st, sp) {
		dp := sp.Key(k)
		if !directiveNameRE.MatchString(k) {
			d.r.structuralf(dp, "invalid directive name: must match %s", directiveNameRE)
			continue
		}
		dir := Directive{Key: k}
		switch v := st[k].(type) {
		case []any:
			dir.List = true
			if len(v) == 0 {
				d.r.structuralf(dp, "expected a non-empty list")
			}
			for i, e := range v {
				if s, ok := d.scalar(dp.Index(i), e); ok {
					dir.Values = append(dir.Values, s)
				}
			}
		default:
			if s, ok := d.scalar(dp, v); ok {
				dir.Values = append(dir.Values, s)
			}
		}
		if len(dir.Values) > 0 {
			out = append(out, dir)
		}
	}
	return out
}

func (d *decoder) scalar(p Path, v any) (Scalar, bool) {
	switch t := v.(type) {
	case string:
		if strings.ContainsAny(t, "\x00\r\n") {
			d.r.structuralf(p, "must not contain NUL, CR or LF")
			return Scalar{}, false
		}
		if strings.HasSuffix(t, `\`) {
			// A trailing backslash continues the line in a unit file.
			d.r.structuralf(p, "must not end with a backslash (it would continue the unit file line)")
			return Scalar{}, false
		}
		return Str(t), true
	case int64:
		return Int(t), true
	case bool:
		return Bool(t), true
	}
	d.r.structuralf(p, "expected a string, integer or boolean, got %s", tomlType(v))
	return Scalar{}, false
}

// checkContainers runs the rules that span sections: images, tokens, rootless ports,
// forced networks (warnings) and service-name collisions.
func checkContainers(r *Report, m *Model) {
	cp := at("containers", "container")
	for _, name := range SortedKeys(m.Containers.Container) {
		c := m.Containers.Container[name]
		p := cp.Key(name)
		img := c.Container.Get("Image")
		if len(img) != 1 || img[0].Kind != KindString || img[0].Str == "" {
			r.Errorf(p.Key("Container").Key("Image"), "expected exactly one non-empty image string")
		}
		for _, sec := range []struct {
			name string
			s    Section
		}{{"Unit", c.Unit}, {"Container", c.Container}, {"Install", c.Install}} {
			checkTokens(r, p.Key(sec.name), sec.s)
		}
		_, warns, errs := EffectiveContainer(name, c)
		for _, e := range errs {
			r.Errorf(p.Key("Container").Key(e.Key), "%s", e.Msg)
		}
		for _, w := range warns {
			r.Warnf(p.Key("Container").Key(w.Key), "%s", w.Msg)
		}
	}
	for _, rk := range ResourceKinds {
		for name, s := range m.Containers.Resources(rk.Kind) {
			checkTokens(r, at("containers", rk.Kind, name, rk.Section), s)
		}
	}
	seen := map[string]Unit{}
	for _, u := range m.Units() {
		key := u.Mode + "/" + u.Service
		if prev, ok := seen[key]; ok {
			r.Errorf(at("containers", u.Kind, u.Name), "%s unit %s (%s) collides with %s %s: both would be %s",
				u.Mode, u.Filename, u.Kind, prev.Kind, prev.Name, u.Service)
			continue
		}
		seen[key] = u
	}
}

// checkTokens makes sure every ${CONFIG_DIR}/${FILES_DIR} path stays under its root.
func checkTokens(r *Report, p Path, s Section) {
	for _, d := range s {
		for i, v := range d.Values {
			if v.Kind != KindString {
				continue
			}
			vp := p.Key(d.Key)
			if d.List {
				vp = vp.Index(i)
			}
			if bad := escapingToken(v.Str); bad != "" {
				r.Errorf(vp, "path %q leaves its root after substitution", bad)
			}
		}
	}
}

// escapingToken returns the first token path in s that escapes its root, or "".
func escapingToken(s string) string {
	for _, tok := range []string{TokenConfigDir, TokenFilesDir} {
		rest := s
		for {
			i := strings.Index(rest, tok)
			if i < 0 {
				break
			}
			rest = rest[i+len(tok):]
			end := strings.IndexAny(rest, ": \t,;\"'")
			if end < 0 {
				end = len(rest)
			}
			sub := rest[:end]
			if !strings.HasPrefix(path.Clean("/root/"+sub)+"/", "/root/") {
				return tok + sub
			}
		}
	}
	return ""
}

// Finding is a rule result tied to one directive of a container's [Container] section.
type Finding struct {
	Key string
	Msg string
}

// EffectiveContainer returns the [Container] section as it will be rendered: Network
// forced to host (privileged) or pasta (rootless), and, for rootless containers, every
// PublishPort bound to 127.0.0.1. It also returns the warnings for each rewrite and the
// errors for ports that cannot be made local.
func EffectiveContainer(name string, c Container) (Section, []Finding, []Finding) {
	var warns, errs []Finding
	want := "pasta"
	why := "unprivileged containers run rootless on pasta"
	if c.Privileged {
		want, why = "host", "privileged containers use the host network"
	}
	out := make(Section, 0, len(c.Container)+1)
	placed := false
	for _, d := range c.Container {
		switch d.Key {
		case "Network":
			var others []string
			for _, v := range d.Values {
				if v.String() != want {
					others = append(others, v.String())
				}
			}
			if len(others) > 0 {
				warns = append(warns, Finding{"Network", fmt.Sprintf("Network=%s replaced by Network=%s: %s",
					strings.Join(others, ","), want, why)})
			}
			if !placed {
				out = append(out, Directive{Key: "Network", Values: []Scalar{Str(want)}})
				placed = true
			}
		case "PublishPort":
			if c.Privileged {
				out = append(out, d)
				continue
			}
			nd := Directive{Key: d.Key, List: d.List}
			for _, v := range d.Values {
				local, warn, err := LocalPublishPort(v.String())
				if err != nil {
					errs = append(errs, Finding{"PublishPort", err.Error()})
					continue
				}
				if warn != "" {
					warns = append(warns, Finding{"PublishPort", warn})
				}
				nd.Values = append(nd.Values, Str(local))
			}
			if len(nd.Values) > 0 {
				out = append(out, nd)
			}
		default:
			out = append(out, d)
		}
	}
	if !placed {
		out = append(out, Directive{Key: "Network", Values: []Scalar{Str(want)}})
	}
	return out, warns, errs
}

// LocalPublishPort binds a rootless PublishPort value to 127.0.0.1. "H:C" becomes
// "127.0.0.1:H:C"; localhost, ::1 and [::1] become 127.0.0.1 silently; any other bind
// address is replaced with a warning naming it. A bare port or a non-numeric host port is
// an error, because it would publish on every address.
func LocalPublishPort(v string) (string, string, error) {
	var ip, rest string
	if strings.HasPrefix(v, "[") {
		end := strings.Index(v, "]:")
		if end < 0 {
			return "", "", fmt.Errorf("PublishPort %q: expected [IP]:HOST:CONTAINER", v)
		}
		ip, rest = v[1:end], v[end+2:]
		if ip == "::1" {
			ip = "localhost"
		}
	} else {
		parts := strings.Split(v, ":")
		switch len(parts) {
		case 1:
			return "", "", fmt.Errorf("PublishPort %q: a bare port publishes on every address; write HOST:CONTAINER", v)
		case 2:
			rest = v
		case 3:
			ip, rest = parts[0], parts[1]+":"+parts[2]
		default:
			return "", "", fmt.Errorf("PublishPort %q: IPv6 bind addresses must be in brackets", v)
		}
	}
	host, ctr, _ := strings.Cut(rest, ":")
	if !isPortSpec(host) {
		return "", "", fmt.Errorf("PublishPort %q: host port %q must be a number (or range) for a rootless container", v, host)
	}
	if ctr == "" {
		return "", "", fmt.Errorf("PublishPort %q: container port is missing", v)
	}
	local := "127.0.0.1:" + host + ":" + ctr
	switch ip {
	case "", "localhost", "127.0.0.1", "::1":
		if ip == "" && strings.Count(v, ":") == 2 {
			return local, fmt.Sprintf("PublishPort %q: empty bind address replaced by 127.0.0.1 (rootless ports are local only)", v), nil
		}
		return local, "", nil
	}
	return local, fmt.Sprintf("PublishPort %q: bind address %s replaced by 127.0.0.1 (rootless ports are local only)", v, ip), nil
}

func isPortSpec(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return s[0] != '-' && s[len(s)-1] != '-'
}

// checkModel runs the rules that need the whole model.
func checkModel(r *Report, m *Model) {
	if len(m.Users) > 0 && len(m.Admins()) == 0 && !r.hasErrorsUnder(at("users")) {
		r.Errorf(at("users"), "at least one user must have isAdmin = true and a non-empty ssh_key")
	}
	checkActivation(r, m)
	checkContainers(r, m)
	checkSecrets(r, m)
	if m.Fleet != nil {
		for _, name := range SortedKeys(m.Fleet.Signers) {
			u, ok := m.Users[name]
			if !ok || !u.IsAdmin || u.SSHKey == "" {
				r.Errorf(at("fleet", "signers", name), "signer %q is not an admin user with an ssh_key", name)
			}
		}
	}
}
