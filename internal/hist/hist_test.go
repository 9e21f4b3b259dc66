package hist

import (
	"sync"
	"testing"
	"time"
)

func TestQuantileWithinBucketPrecision(t *testing.T) {
	var r Recorder
	for i := 1; i <= 1000; i++ {
		r.Record(time.Duration(i) * time.Millisecond)
	}
	counts := r.Drain()
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, 1000 * time.Millisecond}} {
		got := Quantile(counts, tc.q)
		if got < tc.want || float64(got) > float64(tc.want)*1.13 {
			t.Errorf("Quantile(%v) = %v, want within 13%% above %v", tc.q, got, tc.want)
		}
	}
	if r.Drain() != nil {
		t.Error("Drain after Drain returned counts")
	}
}

func TestIndexMonotonic(t *testing.T) {
	prev := 0
	for us := 0; us < 1<<20; us += 7 {
		i := index(time.Duration(us) * time.Microsecond)
		if i < prev {
			t.Fatalf("index(%dµs) = %d < %d", us, i, prev)
		}
		if d := time.Duration(us) * time.Microsecond; d > upper(i) {
			t.Fatalf("%v above upper bound %v of its bucket %d", d, upper(i), i)
		}
		prev = i
	}
	if got := index(time.Hour); got != Buckets-1 {
		t.Errorf("index(1h) = %d, want last bucket", got)
	}
}

func TestMergeAndEmpty(t *testing.T) {
	if Quantile(nil, 0.5) != 0 {
		t.Error("Quantile(nil) != 0")
	}
	var a, b Recorder
	a.Record(time.Millisecond)
	b.Record(time.Second)
	m := Merge(Merge(nil, a.Drain()), b.Drain())
	if got := Quantile(m, 1); got < time.Second {
		t.Errorf("merged max = %v, want >= 1s", got)
	}
	if got := Quantile(m, 0.5); got > 2*time.Millisecond {
		t.Errorf("merged p50 = %v, want about 1ms", got)
	}
}

func TestRecorderHammer(t *testing.T) {
	var r Recorder
	var wg sync.WaitGroup
	var drained uint64
	var mu sync.Mutex
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			c := r.Drain()
			mu.Lock()
			for _, n := range c {
				drained += n
			}
			mu.Unlock()
		}
	}()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				r.Record(time.Duration(i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	for _, n := range r.Drain() {
		drained += n
	}
	if drained != 80000 {
		t.Fatalf("drained %d counts, want 80000", drained)
	}
}
