package bridge

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRateReaderCutsSlowUploads drives the upload-rate cut with a fake clock: within the
// grace period any rate passes; after it, an upload whose average fell under
// MinUploadRate is cut with errTooSlow, and one at the rate goes on.
func TestRateReaderCutsSlowUploads(t *testing.T) {
	clock := time.Unix(1000, 0)
	now := func() time.Time { return clock }
	read := func(r *rateReader) error {
		_, err := r.Read(make([]byte, 1024))
		return err
	}
	slow := &rateReader{r: strings.NewReader(strings.Repeat("x", 1<<20)), start: clock, now: now}
	fast := &rateReader{r: strings.NewReader(strings.Repeat("x", 1<<30)), start: clock, now: now}
	if err := read(slow); err != nil {
		t.Fatalf("within the grace period: %v", err)
	}
	clock = clock.Add(UploadGrace + time.Second) // 1 KiB in 11 s
	if err := read(slow); !errors.Is(err, errTooSlow) {
		t.Errorf("1 KiB read in %s: err = %v; want errTooSlow", UploadGrace+time.Second, err)
	}
	// At the minimum rate (bytes read match elapsed time), reads go on.
	fast.n = int64(MinUploadRate * (UploadGrace + time.Second).Seconds())
	if err := read(fast); err != nil {
		t.Errorf("an upload at the minimum rate was cut: %v", err)
	}
}
