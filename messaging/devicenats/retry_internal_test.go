package devicenats

import (
	"testing"
	"time"
)

// Retries back off from the base to a minute, each within ±25% so a fleet that failed
// together spreads out, and stop after maxRetries (the resync reads again).
func TestRetryDelay(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {7, time.Minute}, {maxRetries, time.Minute}} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d, ok := retryDelay(time.Second, tc.n)
			if !ok {
				t.Fatalf("retry %d refused; want at most %d retries refused past them", tc.n, maxRetries)
			}
			if d < tc.want*3/4 || d > tc.want*5/4 {
				t.Fatalf("retry %d waits %s; want %s ±25%%", tc.n, d, tc.want)
			}
			seen[d] = true
		}
		if len(seen) < 100 {
			t.Errorf("retry %d: %d distinct waits in 200; want jitter", tc.n, len(seen))
		}
	}
	if _, ok := retryDelay(time.Second, maxRetries+1); ok {
		t.Errorf("retry %d was scheduled; want none past %d", maxRetries+1, maxRetries)
	}
}
