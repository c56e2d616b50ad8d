package devicenats

import (
	"testing"
	"time"
)

// Retries back off from the base to a minute, each within ±25% so a fleet that failed
// together spreads out.
func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {7, time.Minute}, {100, time.Minute}} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := retryDelay(time.Second, tc.n)
			if d < tc.want*3/4 || d > tc.want*5/4 {
				t.Fatalf("retry %d waits %s; want %s ±25%%", tc.n, d, tc.want)
			}
			seen[d] = true
		}
		if len(seen) < 100 {
			t.Errorf("retry %d: %d distinct waits in 200; want jitter", tc.n, len(seen))
		}
	}
}
