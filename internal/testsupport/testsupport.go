// Package testsupport holds what Velo's tests share: waiting for a
// condition with a deadline, a buffer safe to read while something writes
// it, and the rule for tests that need a real Postgres, Docker engine or
// browser.
//
// It is imported by tests (and by test helper packages such as pgtest)
// only, never by code that ships.
package testsupport

import (
	"bytes"
	"os"
	"sync"
	"testing"
	"time"
)

// poll is how often Eventually checks its condition.
const poll = 20 * time.Millisecond

// Eventually checks cond until it holds, and fails t, naming what it
// waited for, if it still does not after d. Tests wait for something
// observable this way rather than sleep: a sleep either passes unchecked on
// a slow machine or wastes time on a fast one.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	EventuallyShow(t, d, what, cond, nil)
}

// EventuallyShow is Eventually that, when it fails, also says what state
// reports (what was seen instead of what was waited for).
func EventuallyShow(t testing.TB, d time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			if state != nil {
				t.Fatalf("timed out after %s waiting for %s: %s", d, what, state())
			}
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(poll)
	}
}

// InCI reports whether the tests run under CI=true, where every test must
// run: a missing dependency is a failure, not a skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Need is how a test that needs a real dependency (Postgres, the Docker
// engine, Chromium) reacts to its absence: err says why what is missing.
// With err nil it returns. Otherwise it skips t, or fails it under CI=true
// (.ci/run sets it), so that no run passes without those tests unnoticed.
func Need(t testing.TB, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if InCI() {
		t.Fatalf("%s is required under CI=true: %v", what, err)
	}
	t.Skipf("no %s, skipping (it is required under CI=true): %v", what, err)
}

// SyncBuffer is a bytes.Buffer that one goroutine may read while others
// write it: a process's output, a build log.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
