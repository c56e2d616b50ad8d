package activation

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fleetprov/fleetprov/core/config"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/core/system"
	"github.com/fleetprov/fleetprov/core/system/simulate"
)

// TestTypedChecks runs the typed health checks on synctest's fake clock: no test sleeps,
// and the time a verdict took is exact.
func TestTypedChecks(t *testing.T) {
	httpCheck := func(mut func(*config.HealthCheck)) config.HealthCheck {
		h := config.HealthCheck{HTTP: "http://127.0.0.1:8081/", Status: 200, IntervalSeconds: 2, TimeoutSeconds: 1, Retries: 3}
		if mut != nil {
			mut(&h)
		}
		return h
	}
	// answers returns a probe that gives each answer once, then the last one forever.
	answers := func(codes ...int) func(string, string) (int, string, error) {
		i := 0
		return func(kind, target string) (int, string, error) {
			c := codes[min(i, len(codes)-1)]
			i++
			if c < 0 {
				return 0, "", errors.New("connection refused")
			}
			return c, "ok", nil
		}
	}
	tests := []struct {
		name    string
		unit    string
		check   config.HealthCheck
		probe   func(string, string) (int, string, error)
		want    error
		elapsed time.Duration // exact fake time to the verdict
		says    string        // in the error, or the passing event
	}{
		{name: "http_passes", unit: "web", check: httpCheck(nil), says: "web.service: http http://127.0.0.1:8081/ → 200"},
		{name: "http_500_fails_after_retries", unit: "web", check: httpCheck(nil), probe: answers(500), want: ErrCheckFailed,
			elapsed: 6 * time.Second, says: "http://127.0.0.1:8081/ → 500 (want 200), failed 4 times after its start period"},
		{name: "slow_app_passes_within_retries", unit: "web", check: httpCheck(nil), probe: answers(503, 503, -1, 200),
			elapsed: 6 * time.Second, says: "→ 200"},
		{name: "start_period_failures_do_not_count", unit: "web", check: httpCheck(func(h *config.HealthCheck) { h.Retries, h.StartPeriodSeconds = 1, 10 }),
			probe: answers(-1, -1, -1, -1, -1, 200), elapsed: 10 * time.Second, says: "→ 200"},
		{name: "body_substring_missing", unit: "web", check: httpCheck(func(h *config.HealthCheck) { h.BodyContains, h.Retries = "ready", 1 }),
			want: ErrCheckFailed, elapsed: 2 * time.Second, says: `200 without "ready" in the body`},
		{name: "tcp_passes", unit: "web", check: config.HealthCheck{TCP: "127.0.0.1:5432", IntervalSeconds: 1, TimeoutSeconds: 1, Retries: 2},
			says: "tcp 127.0.0.1:5432 → connected"},
		{name: "exec_on_host_passes", unit: "web", check: config.HealthCheck{Exec: []string{"/usr/local/bin/ready"}, ExecIn: config.HealthExecOnHost,
			IntervalSeconds: 1, TimeoutSeconds: 1, Retries: 1}, says: "exec /usr/local/bin/ready → exit 0"},
		{name: "tcp_refused", unit: "web", check: config.HealthCheck{TCP: "127.0.0.1:5432", IntervalSeconds: 1, TimeoutSeconds: 1, Retries: 2},
			probe: answers(-1), want: ErrCheckFailed, elapsed: 2 * time.Second, says: "tcp 127.0.0.1:5432 → error: connection refused"},
		{name: "exec_in_rootless_container", unit: "app", check: config.HealthCheck{Exec: []string{"pg_isready"}, ExecIn: config.HealthExecInContainer,
			IntervalSeconds: 1, TimeoutSeconds: 1, Retries: 1},
			probe: answers(2), want: ErrCheckFailed, elapsed: time.Second, says: "exec pg_isready → exit 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sim := started(t, simulate.Options{Probe: tc.probe})
				spec := Spec{Policy: config.Activation{Required: []string{tc.unit}, TimeoutSeconds: 120,
					Health: map[string]config.HealthCheck{tc.unit: tc.check}},
					Units: units(), AppUser: system.Account{Name: "appsvc"}, ContainerNames: map[string]string{"app": "systemd-app", "web": "systemd-web"}}
				var events []record.Event
				start := time.Now()
				err := Activate(context.Background(), spec, Options{Backend: sim.Backend(), PollInterval: 100 * time.Millisecond},
					func(e record.Event) { events = append(events, e) })
				elapsed := time.Since(start)
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("Activate() = %v; want %v", err, tc.want)
				}
				if elapsed != tc.elapsed {
					t.Errorf("verdict after %s of fake time; want %s", elapsed, tc.elapsed)
				}
				var said []string
				for _, e := range events {
					if e.Step == "health-check" || e.Step == "health-wait" {
						said = append(said, e.Message)
					}
				}
				all := strings.Join(said, "\n")
				if err != nil {
					all = err.Error()
				}
				if !strings.Contains(all, tc.says) {
					t.Errorf("events/error = %s; want %q", all, tc.says)
				}
				// Where an exec check ran: in the unit's container (as its account), or on the
				// host when the check says so.
				if where := map[string]string{"exec_in_rootless_container": "probe exec appsvc/systemd-app: pg_isready",
					"exec_on_host_passes": "probe exec host: /usr/local/bin/ready"}[tc.name]; where != "" && !strings.Contains(sim.Transcript(), where) {
					t.Errorf("the exec check did not run where it should (%q):\n%s", where, sim.Transcript())
				}
			})
		})
	}
}

// TestExecCheckWithoutContainerNeverRunsOnHost: a check meant for a container whose name
// is unknown fails; it must not fall back to running its command on the host.
func TestExecCheckWithoutContainerNeverRunsOnHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sim := started(t, simulate.Options{})
		spec := Spec{Policy: config.Activation{Required: []string{"web"}, TimeoutSeconds: 5,
			Health: map[string]config.HealthCheck{"web": {Exec: []string{"ready"}, ExecIn: config.HealthExecInContainer, IntervalSeconds: 1, TimeoutSeconds: 1, Retries: 1}}},
			Units: units(), AppUser: system.Account{Name: "appsvc"}}
		err := Activate(context.Background(), spec, Options{Backend: sim.Backend(), PollInterval: 100 * time.Millisecond}, func(record.Event) {})
		if err == nil {
			t.Fatal("Activate() passed a check that could not run")
		}
		if strings.Contains(sim.Transcript(), "probe exec host") {
			t.Errorf("the container's check ran on the host:\n%s", sim.Transcript())
		}
	})
}
