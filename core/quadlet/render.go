package quadlet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/fleetprov/fleetprov/core/config"
)

// RootlessNetwork is the network every rootless container is forced onto.
const RootlessNetwork = "pasta"

// Options for Render.
type Options struct {
	// ConfigDir is the runtime path of the active config dir (e.g. /var/lib/fleetprov/config);
	// ${CONFIG_DIR} becomes it and ${FILES_DIR} becomes its files/ subdirectory. Never the
	// candidate path.
	ConfigDir string
	// AppUser runs rootless units (default appsvc).
	AppUser string
}

// File is one rendered unit for one manager.
type File struct {
	Unit    config.Unit
	Content []byte
}

// Runtime is quadlet-runtime.json.
type Runtime struct {
	AppUser         string        `json:"app_user"`
	RootlessNetwork string        `json:"rootless_network"`
	Units           []config.Unit `json:"units"`
}

// Rendered is everything Render produces.
type Rendered struct {
	Files   []File
	Runtime Runtime
}

// RuntimeJSON returns quadlet-runtime.json.
func (r Rendered) RuntimeJSON() []byte {
	b, _ := json.MarshalIndent(r.Runtime, "", "  ")
	return append(b, '\n')
}

// Render turns a model into unit files, in the order of m.Units(). It fails only on what
// validation already rejects (a token path leaving its root, a PublishPort that cannot be
// made local), so a validated model always renders.
func Render(m config.Model, opts Options) (Rendered, error) {
	if opts.AppUser == "" {
		opts.AppUser = config.DefaultAppUser
	}
	if opts.ConfigDir == "" || !path.IsAbs(opts.ConfigDir) {
		return Rendered{}, fmt.Errorf("rendering units: config dir %q must be an absolute path", opts.ConfigDir)
	}
	sub := strings.NewReplacer(config.TokenConfigDir, opts.ConfigDir, config.TokenFilesDir, path.Join(opts.ConfigDir, "files"))
	out := Rendered{Runtime: Runtime{AppUser: opts.AppUser, RootlessNetwork: RootlessNetwork, Units: m.Units()}}
	for _, u := range out.Runtime.Units {
		var b bytes.Buffer
		if u.Kind == "container" {
			c := m.Containers.Container[u.Name]
			eff, _, errs := config.EffectiveContainer(u.Name, c)
			if len(errs) > 0 {
				return Rendered{}, fmt.Errorf("rendering %s: %s", u.Filename, errs[0].Msg)
			}
			writeSection(&b, "Unit", c.Unit, sub)
			writeSection(&b, "Container", eff, sub)
			writeSection(&b, "Install", c.Install, sub)
		} else {
			for _, rk := range config.ResourceKinds {
				if rk.Kind == u.Kind {
					writeSection(&b, rk.Section, m.Containers.Resources(rk.Kind)[u.Name], sub)
				}
			}
		}
		for _, d := range allStrings(b.String()) {
			if bad := escapes(d, opts.ConfigDir); bad != "" {
				return Rendered{}, fmt.Errorf("rendering %s: %q leaves the config dir", u.Filename, bad)
			}
		}
		out.Files = append(out.Files, File{Unit: u, Content: b.Bytes()})
	}
	return out, nil
}

func writeSection(b *bytes.Buffer, name string, s config.Section, sub *strings.Replacer) {
	if len(s) == 0 {
		return
	}
	if b.Len() > 0 {
		b.WriteByte('\n')
	}
	fmt.Fprintf(b, "[%s]\n", name)
	for _, d := range s {
		vals := make([]string, len(d.Values))
		for i, v := range d.Values {
			vals[i] = sub.Replace(v.String())
		}
		switch {
		case name == "Container" && d.Key == "Exec" && len(vals) > 1:
			// Quadlet keeps only the last Exec= line, so a list becomes one line of
			// quoted arguments: what the config means is all of them.
			quoted := make([]string, len(vals))
			for i, v := range vals {
				quoted[i] = quoteArg(v)
			}
			fmt.Fprintf(b, "Exec=%s\n", strings.Join(quoted, " "))
		case name == "Container" && d.Key == "Environment":
			// Quadlet splits Environment= values on whitespace; one list item is one
			// variable, so items with spaces are quoted.
			for _, v := range vals {
				fmt.Fprintf(b, "Environment=%s\n", quoteArg(v))
			}
		default:
			for _, v := range vals {
				fmt.Fprintf(b, "%s=%s\n", d.Key, v)
			}
		}
	}
}

// quoteArg quotes a value for systemd-style word splitting when it needs it.
func quoteArg(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// allStrings returns the values of a rendered unit, for the containment check.
func allStrings(unit string) []string {
	var out []string
	for _, line := range strings.Split(unit, "\n") {
		if _, v, ok := strings.Cut(line, "="); ok {
			out = append(out, v)
		}
	}
	return out
}

// escapes returns a path in v that starts at configDir but leaves it after cleaning.
func escapes(v, configDir string) string {
	for {
		i := strings.Index(v, configDir)
		if i < 0 {
			return ""
		}
		v = v[i:]
		end := strings.IndexAny(v, ": \t,;\"'")
		if end < 0 {
			end = len(v)
		}
		p := v[:end]
		if c := path.Clean(p); c != configDir && !strings.HasPrefix(c, configDir+"/") {
			return p
		}
		v = v[len(configDir):]
	}
}
