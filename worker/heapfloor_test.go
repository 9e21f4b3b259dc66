package worker

import (
	"context"
	"runtime/debug"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/testsupport"
)

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live, floor int64
		base, want  int
	}{
		{3 << 20, 16 << 20, 100, 534},   // a small worker: the goal is live + 16 MiB
		{16 << 20, 16 << 20, 100, 100},  // from here GOGC's own goal is as large
		{400 << 20, 16 << 20, 100, 100}, // a large live heap: GOGC alone
		{0, 16 << 20, 100, 1600},        // nothing measured yet: as for 1 MiB
		{3 << 20, 16 << 20, 800, 800},   // never under the process's own GOGC
	} {
		if got := gcPercentFor(tc.live, tc.floor, tc.base); got != tc.want {
			t.Errorf("gcPercentFor(%d, %d, %d) = %d, want %d", tc.live, tc.floor, tc.base, got, tc.want)
		}
	}
}

// TestHoldHeapFloor: while held, the process's GOGC puts the goal above
// the floor; when the hold ends, the percent the process had is back.
func TestHoldHeapFloor(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); holdHeapFloor(ctx, 1<<30) }()
	testsupport.Eventually(t, 30*time.Second, "GOGC raised for a 1 GiB floor", func() bool {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		return p > 1000
	})
	cancel()
	<-done
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC after the hold: %d, want the 100 it had", p)
	}
}
