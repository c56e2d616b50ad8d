package fleet

import (
	"testing"

	"github.com/fleetprov/fleetprov/core/record"
)

func TestStageTextShowsWhatIsAwaited(t *testing.T) {
	for _, tc := range []struct {
		ev   record.Event
		want string
	}{
		{record.Event{Step: "activate"}, "activate"},
		{record.Event{Step: "health-wait", Service: "web.service", Message: "web.service: http http://127.0.0.1:8081/ → 503 (want 200), retry 3/10"},
			"health-wait: web.service: http http://127.0.0.1:8081/ → 503 (want 200), retry 3/10"},
		{record.Event{Step: "health-wait", Service: "web.service", Message: "waiting: activating (start)"}, "health-wait: web.service: waiting: activating (start)"},
		{record.Event{Step: "health-check", Service: "db.service", Message: "db.service failed (result exit-code)\nlast log lines"}, "health-check: db.service failed (result exit-code)"},
	} {
		if got := stageText(tc.ev); got != tc.want {
			t.Errorf("stageText(%+v) = %q; want %q", tc.ev, got, tc.want)
		}
	}
}
