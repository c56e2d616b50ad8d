package config

import "strings"

// Unit modes: rootful units run under the system manager, rootless ones under the app
// user's manager.
const (
	ModeRootful  = "rootful"
	ModeRootless = "rootless"
)

// Unit is one Quadlet unit the model renders to: its resource, file and service names and
// the manager it runs under. The list is what quadlet-runtime.json records.
type Unit struct {
	Name     string `json:"name"`
	Kind     string `json:"-"`
	Filename string `json:"filename"`
	Service  string `json:"service"`
	Mode     string `json:"mode"`
}

// Units lists every unit in canonical order: containers, then networks, volumes, builds,
// pods, images, kubes; by name within a kind; rootful before rootless for resources used
// in both modes.
func (m *Model) Units() []Unit {
	var out []Unit
	for _, name := range SortedKeys(m.Containers.Container) {
		mode := ModeRootless
		if m.Containers.Container[name].Privileged {
			mode = ModeRootful
		}
		out = append(out, Unit{Name: name, Kind: "container", Filename: name + ".container", Service: name + ".service", Mode: mode})
	}
	for _, rk := range ResourceKinds {
		res := m.Containers.Resources(rk.Kind)
		for _, name := range SortedKeys(res) {
			u := Unit{Name: name, Kind: rk.Kind, Filename: name + rk.Ext, Service: serviceName(rk.Kind, name)}
			var modes []string
			switch rk.Kind {
			case "volume":
				modes = m.consumerModes(func(c Container) bool { return usesVolume(c, name) })
			case "build":
				tag := ""
				if v := res[name].Get("ImageTag"); len(v) > 0 {
					tag = v[0].String()
				}
				modes = m.consumerModes(func(c Container) bool { return usesBuild(c, name, tag) })
			}
			if len(modes) == 0 {
				modes = []string{ModeRootful}
			}
			for _, mode := range modes {
				u.Mode = mode
				out = append(out, u)
			}
		}
	}
	return out
}

func serviceName(kind, name string) string {
	if kind == "kube" {
		return name + ".service"
	}
	return name + "-" + kind + ".service"
}

// consumerModes returns the modes (rootful first) of the containers matching use.
func (m *Model) consumerModes(use func(Container) bool) []string {
	var rootful, rootless bool
	for _, c := range m.Containers.Container {
		if !use(c) {
			continue
		}
		if c.Privileged {
			rootful = true
		} else {
			rootless = true
		}
	}
	var out []string
	if rootful {
		out = append(out, ModeRootful)
	}
	if rootless {
		out = append(out, ModeRootless)
	}
	return out
}

// usesVolume reports whether a container mounts the named volume: a Volume= whose source
// (before the first ':') is the name or the Quadlet reference name.volume.
func usesVolume(c Container, name string) bool {
	for _, v := range c.Container.Get("Volume") {
		src, _, _ := strings.Cut(v.String(), ":")
		if src == name || src == name+".volume" {
			return true
		}
	}
	return false
}

// usesBuild reports whether a container's Image is the build's ImageTag or name.build.
func usesBuild(c Container, name, tag string) bool {
	for _, v := range c.Container.Get("Image") {
		if s := v.String(); (tag != "" && s == tag) || s == name+".build" {
			return true
		}
	}
	return false
}
