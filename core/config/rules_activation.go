package config

import (
	"net"
	"net/url"
	"strconv"
	"strings"
)

func (d *decoder) activation(t map[string]any, p Path) Activation {
	a := Activation{TimeoutSeconds: DefaultTimeoutSeconds, Strategy: DefaultStrategy, Restart: []string{}, AllowDegraded: []string{},
		Confirm: DefaultConfirm, ConfirmSeconds: DefaultConfirmSeconds}
	if s, ok := d.str(t, p, "confirm"); ok {
		switch s {
		case ConfirmAuto, ConfirmOperator, ConfirmNone:
		default:
			d.r.Errorf(p.Key("confirm"), "expected one of auto, operator, none")
		}
		a.Confirm = s
	}
	if v, ok := d.integer(t, p, "confirm_seconds"); ok {
		if v < 10 || v > 3600 {
			d.r.Errorf(p.Key("confirm_seconds"), "expected integer in 10..3600")
		}
		a.ConfirmSeconds = int(v)
	}
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
	if ht, ok := d.table(t, p, "health"); ok {
		hp := p.Key("health")
		a.Health = map[string]HealthCheck{}
		for _, name := range d.keys(ht, hp) {
			if ct, ok := d.table(ht, hp, name); ok {
				a.Health[name] = d.healthCheck(ct, hp.Key(name))
			}
		}
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
	for _, n := range SortedKeys(m.Activation.Health) {
		if _, ok := m.Containers.Container[n]; !ok {
			r.Errorf(p.Key("health").Key(n), "activation.health references unknown container: %s", n)
		} else if !req[n] {
			r.Warnf(p.Key("health").Key(n), "health checks gate required units only: add %s to activation.required", n)
		}
	}
	for _, n := range m.Activation.AllowDegraded {
		if req[n] {
			r.Errorf(p.Key("allow_degraded"), "activation.allow_degraded must not overlap activation.required: %s", n)
		}
	}
}

// healthCheck reads one [activation.health.<name>] table and checks its fields.
func (d *decoder) healthCheck(t map[string]any, p Path) HealthCheck {
	h := HealthCheck{Status: DefaultHealthStatus, IntervalSeconds: DefaultHealthInterval, TimeoutSeconds: DefaultHealthTimeout,
		Retries: DefaultHealthRetries}
	h.HTTP, _ = d.str(t, p, "http")
	h.TCP, _ = d.str(t, p, "tcp")
	h.Exec, _ = d.strList(t, p, "exec")
	h.BodyContains, _ = d.str(t, p, "body_contains")
	bounded := func(key string, lo, hi int64, dst *int) {
		if v, ok := d.integer(t, p, key); ok {
			if v < lo || v > hi {
				d.r.Errorf(p.Key(key), "expected integer in %d..%d", lo, hi)
			}
			*dst = int(v)
		}
	}
	bounded("status", 100, 599, &h.Status)
	bounded("interval_seconds", 1, 60, &h.IntervalSeconds)
	bounded("timeout_seconds", 1, 60, &h.TimeoutSeconds)
	bounded("retries", 1, 100, &h.Retries)
	bounded("start_period_seconds", 0, 600, &h.StartPeriodSeconds)
	kinds := 0
	for _, set := range []bool{h.HTTP != "", h.TCP != "", h.Exec != nil} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		d.r.Errorf(p, "a health check needs exactly one of http, tcp, exec")
	}
	if h.HTTP != "" {
		u, err := url.Parse(h.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || hasControl(h.HTTP) {
			d.r.Errorf(p.Key("http"), "expected an http:// or https:// URL with a host, got %q", h.HTTP)
		}
	}
	if h.TCP != "" {
		host, port, err := net.SplitHostPort(h.TCP)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || n < 1 || n > 65535 || hasControl(h.TCP) {
			d.r.Errorf(p.Key("tcp"), "expected host:port with a port in 1..65535, got %q", h.TCP)
		}
	}
	if h.Exec != nil {
		if len(h.Exec) == 0 || h.Exec[0] == "" {
			d.r.Errorf(p.Key("exec"), "expected a non-empty command")
		}
		for i, a := range h.Exec {
			if hasControl(a) {
				d.r.Errorf(p.Key("exec").Index(i), "control characters are not allowed")
			}
		}
		h.ExecIn = HealthExecInContainer
		if s, ok := d.str(t, p, "exec_in"); ok {
			if s != HealthExecInContainer && s != HealthExecOnHost {
				d.r.Errorf(p.Key("exec_in"), "expected container or host, got %q", s)
			}
			h.ExecIn = s
		}
	} else if _, ok := t["exec_in"]; ok {
		d.r.Errorf(p.Key("exec_in"), "exec_in applies to exec checks only")
	}
	if h.HTTP == "" {
		if _, ok := t["body_contains"]; ok {
			d.r.Errorf(p.Key("body_contains"), "body_contains applies to http checks only")
		}
		if _, ok := t["status"]; ok {
			d.r.Errorf(p.Key("status"), "status applies to http checks only")
		}
		h.Status, h.BodyContains = 0, ""
	}
	return h
}

func hasControl(s string) bool { return strings.ContainsAny(s, "\x00\r\n") }
