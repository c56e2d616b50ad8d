package config

import (
	"regexp"
	"strings"
)

// Secret declares one secret of the device. Its value never appears in config.toml: the
// publisher supplies it at push time, encrypted to each device's identity key, and the
// device hands it to Podman. Containers use it through Quadlet's own Secret= key.
type Secret struct {
	Description string `json:"description,omitempty"`
}

// secretNameRE is what a secret may be called: a Podman secret name that is also safe as a
// file name and in a Secret= value (no '/', ',', '=' or spaces).
var secretNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// ValidSecretName reports whether name may name a secret.
func ValidSecretName(name string) bool { return secretNameRE.MatchString(name) }

// SecretRefName returns the secret a Secret= value names: the text before the first
// comma ("db-password,type=env,target=DB_PASSWORD" names db-password).
func SecretRefName(v string) string {
	name, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(name)
}

// secrets reads [secrets.<name>] tables.
func (d *decoder) secrets(t map[string]any, p Path) map[string]Secret {
	out := map[string]Secret{}
	for _, name := range d.keys(t, p) {
		sp := p.Key(name)
		if !secretNameRE.MatchString(name) {
			d.r.Errorf(sp, "invalid secret name: must match %s", secretNameRE)
		}
		st, ok := d.table(t, p, name)
		if !ok {
			continue
		}
		var s Secret
		if desc, ok := d.str(st, sp, "description"); ok {
			s.Description = desc
		}
		out[name] = s
	}
	return out
}

// SecretUsers maps each secret named by a container's Secret= key to the containers that
// use it, sorted.
func (m *Model) SecretUsers() map[string][]string {
	out := map[string][]string{}
	for _, name := range SortedKeys(m.Containers.Container) {
		for _, v := range m.Containers.Container[name].Container.Get("Secret") {
			if v.Kind != KindString {
				continue
			}
			s := SecretRefName(v.Str)
			if n := out[s]; len(n) == 0 || n[len(n)-1] != name {
				out[s] = append(out[s], name)
			}
		}
	}
	return out
}

// SecretNames returns the declared secrets, sorted.
func (m *Model) SecretNames() []string { return SortedKeys(m.Secrets) }

// checkSecrets makes every Secret= reference name a declared secret and warns about
// declared secrets no container uses.
func checkSecrets(r *Report, m *Model) {
	for _, name := range SortedKeys(m.Containers.Container) {
		c := m.Containers.Container[name]
		for _, d := range c.Container {
			if d.Key != "Secret" {
				continue
			}
			for j, v := range d.Values {
				p := at("containers", "container", name, "Container", "Secret")
				if d.List {
					p = p.Index(j)
				}
				if v.Kind != KindString {
					r.Errorf(p, "expected a string \"<secret>[,type=mount|env][,target=...]\"")
					continue
				}
				s := SecretRefName(v.Str)
				if _, ok := m.Secrets[s]; !ok {
					declared := m.SecretNames()
					hint := "no secrets are declared"
					if len(declared) > 0 {
						hint = "declared: " + strings.Join(declared, ", ")
					}
					r.Errorf(p, "secret %q is not declared: add a [secrets.%s] table (%s)", s, s, hint)
				}
			}
		}
	}
	users := m.SecretUsers()
	for _, name := range m.SecretNames() {
		if len(users[name]) == 0 {
			r.Warnf(at("secrets", name), "secret %q is declared but no container uses it (Secret = [\"%s,type=env,target=...\"])", name, name)
		}
	}
}
