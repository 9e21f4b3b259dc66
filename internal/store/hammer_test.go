package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/hist"
)

// testHammer has 16 goroutines add hits and logs to the same few
// components at once, then checks that nothing was lost or doubled.
func testHammer(t *testing.T, s *Store) {
	ctx := context.Background()
	const (
		goroutines = 16
		rounds     = 25
		components = 3
	)
	for c := range components {
		mkComponent(t, s, fmt.Sprintf("c%d", c))
	}
	minute := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var rec hist.Recorder
			for r := range rounds {
				rec.Record(time.Duration(r+1) * time.Millisecond)
				// Every goroutine hits every component in the same
				// two minutes, in a different order each.
				var batch []Hits
				for c := range components {
					name := fmt.Sprintf("c%d", (c+g)%components)
					batch = append(batch, Hits{Component: name, Minute: minute.Add(time.Duration(r%2) * time.Minute),
						Hits: 2, Errors: 1, Latency: rec.Drain()})
					rec.Record(time.Millisecond)
				}
				rec.Drain()
				if err := s.AddHits(ctx, batch); err != nil {
					errs <- err
					return
				}
				var lines []LogLine
				for c := range components {
					lines = append(lines, LogLine{Component: fmt.Sprintf("c%d", (c+g)%components),
						Stream: "stdout", Line: fmt.Sprintf("g%d r%d", g, r)})
				}
				if err := s.AppendLogs(ctx, lines); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for c := range components {
		name := fmt.Sprintf("c%d", c)
		hs, err := s.Stats(ctx, name, minute)
		must(t, err)
		var hits, errors int64
		var latency uint64
		for _, h := range hs {
			hits += h.Hits
			errors += h.Errors
			for _, n := range h.Latency {
				latency += n
			}
		}
		if want := int64(goroutines * rounds * 2); hits != want || errors != want/2 {
			t.Errorf("%s: %d hits %d errors, want %d and %d", name, hits, errors, want, want/2)
		}
		// The first component of each goroutine's batch carries one
		// recorded latency per round; the others one more each round.
		if latency == 0 {
			t.Errorf("%s: no latency recorded", name)
		}
		ls, err := s.Logs(ctx, name, 0, 0)
		must(t, err)
		if len(ls) != goroutines*rounds {
			t.Errorf("%s: %d log lines, want %d", name, len(ls), goroutines*rounds)
		}
		seen := make(map[string]bool)
		for i, l := range ls {
			if seen[l.Line] {
				t.Errorf("%s: line %q stored twice", name, l.Line)
			}
			seen[l.Line] = true
			if i > 0 && l.ID <= ls[i-1].ID {
				t.Errorf("%s: IDs not increasing", name)
			}
		}
	}
}
