package testsupport

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB that records how a helper ended the test.
type recorder struct {
	testing.TB
	mu      sync.Mutex
	failed  string
	skipped string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.failed = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	panic(r) // stands for runtime.Goexit, which would end this test too
}

func (r *recorder) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	panic(r)
}

// run calls f with a fresh recorder and returns it once f returned or
// ended the test.
func run(t *testing.T, f func(*recorder)) *recorder {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if v := recover(); v != nil && v != r {
				panic(v)
			}
		}()
		f(r)
	}()
	return r
}

func TestEventually(t *testing.T) {
	n := 0
	r := run(t, func(r *recorder) {
		Eventually(r, 5*time.Second, "the third check", func() bool { n++; return n == 3 })
	})
	if r.failed != "" || n != 3 {
		t.Errorf("condition true at the third check: failed %q after %d checks", r.failed, n)
	}
	r = run(t, func(r *recorder) {
		Eventually(r, 50*time.Millisecond, "never", func() bool { return false })
	})
	if !strings.Contains(r.failed, "waiting for never") {
		t.Errorf("condition never true: failed %q, want it to name what it waited for", r.failed)
	}
}

func TestNeed(t *testing.T) {
	missing := errors.New("not installed")
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		r := run(t, func(r *recorder) { Need(r, "Chromium", nil) })
		if r.failed != "" || r.skipped != "" {
			t.Errorf("CI=%q, nothing missing: failed %q, skipped %q", ci, r.failed, r.skipped)
		}
		r = run(t, func(r *recorder) { Need(r, "Chromium", missing) })
		got := r.skipped
		if ci == "true" {
			got = r.failed
		}
		if !strings.Contains(got, "Chromium") || !strings.Contains(got, "not installed") {
			t.Errorf("CI=%q, Chromium missing: failed %q, skipped %q", ci, r.failed, r.skipped)
		}
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := len(b.String()); n != 400 {
		t.Errorf("%d bytes after 400 writes of one", n)
	}
}
