package config

func (d *decoder) activation(t map[string]any, p Path) Activation {
	a := Activation{TimeoutSeconds: DefaultTimeoutSeconds, Strategy: DefaultStrategy, Restart: []string{}, AllowDegraded: []string{}}
	req, _ := d.strList(t, p, "required")
	a.Required = sortedUnique(req)
	if restart, ok := d.strList(t, p, "restart"); ok {
		a.Restart = dedupe(restart)
	}
	if ad, ok := d.strList(t, p, "allow_degraded"); ok {
		a.AllowDegraded = sortedUnique(ad)
		a.AllowDegradedSet = true
	}
	if v, ok := d.integer(t, p, "timeout_seconds"); ok {
		if v < 1 || v > 3600 {
			d.r.Errorf(p.Key("timeout_seconds"), "expected integer in 1..3600")
		}
		a.TimeoutSeconds = int(v)
	}
	if v, ok := d.integer(t, p, "settle_seconds"); ok {
		if v < 0 || v > 300 {
			d.r.Errorf(p.Key("settle_seconds"), "expected integer in 0..300")
		}
		a.SettleSeconds = int(v)
	}
	if s, ok := d.str(t, p, "strategy"); ok {
		if s != DefaultStrategy {
			d.r.Errorf(p.Key("strategy"), "unsupported strategy %q: only \"rollback\" is supported in v1", s)
		}
		a.Strategy = s
	}
	return a
}

// checkActivation checks the references from the activation policy to declared containers.
func checkActivation(r *Report, m *Model) {
	p := at("activation")
	for _, f := range []struct {
		key   string
		names []string
	}{{"required", m.Activation.Required}, {"restart", m.Activation.Restart}, {"allow_degraded", m.Activation.AllowDegraded}} {
		for _, n := range f.names {
			if _, ok := m.Containers.Container[n]; !ok {
				r.Errorf(p.Key(f.key), "activation.%s references unknown unit: %s", f.key, n)
			}
		}
	}
	req := map[string]bool{}
	for _, n := range m.Activation.Required {
		req[n] = true
	}
	for _, n := range m.Activation.AllowDegraded {
		if req[n] {
			r.Errorf(p.Key("allow_degraded"), "activation.allow_degraded must not overlap activation.required: %s", n)
		}
	}
}
