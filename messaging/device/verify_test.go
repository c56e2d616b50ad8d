package device

import (
	"testing"
	"time"
)

func TestFetchDeadline(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		expires time.Time
		size    int64
		want    time.Time
	}{
		{name: "expiry_first", expires: now.Add(10 * time.Second), size: 32 << 20, want: now.Add(10 * time.Second)},
		{name: "rate_first", expires: now.Add(10 * time.Minute), size: 640 << 10, want: now.Add(FetchGrace + 10*time.Second)},
		{name: "tiny_payload_gets_the_grace", expires: now.Add(10 * time.Minute), size: 10, want: now.Add(FetchGrace)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := fetchDeadline(now, tc.expires, tc.size); !got.Equal(tc.want) {
				t.Errorf("fetchDeadline() = %s; want %s", got.Sub(now), tc.want.Sub(now))
			}
		})
	}
}
