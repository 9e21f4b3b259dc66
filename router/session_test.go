package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// fakeSessions is the dashboard's session store: secret → user while the
// session lives.
type fakeSessions struct {
	mu    sync.Mutex
	live  map[string]string
	reads int
	// during, when set, runs inside SessionUser after the session is read
	// (a sign-out arriving while a call reads it).
	during func()
}

func (f *fakeSessions) SessionSecret(*http.Request) string { return "" }

func (f *fakeSessions) SessionUser(_ context.Context, secret string) (string, time.Time, bool, error) {
	f.mu.Lock()
	user, ok := f.live[secret]
	f.reads++
	during := f.during
	f.mu.Unlock()
	if during != nil {
		during()
	}
	return user, time.Now().Add(time.Hour), ok, nil
}

func (f *fakeSessions) Repos(context.Context, string) (bool, []string, error) {
	return false, []string{"alice/site"}, nil
}

func (f *fakeSessions) end(secret string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live, secret)
}

func (f *fakeSessions) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func endedNote(secret string) store.Note {
	h := sha256.Sum256([]byte(secret))
	return store.SessionEnded(hex.EncodeToString(h[:]))
}

// TestSessionEndedForgotten: a remembered session is read once; a
// sign-out's note makes the router forget it (the next call reads it
// again and finds it gone), a session read while a sign-out came in is
// not remembered, and a resync forgets every session.
func TestSessionEndedForgotten(t *testing.T) {
	f := &fakeSessions{live: map[string]string{"s1": "github:alice", "s2": "github:alice", "s3": "github:bob"}}
	r := New(Config{Sessions: f, Logger: discardLogger()}, nil)
	ctx, now := context.Background(), time.Now()
	user := func(secret string) string {
		t.Helper()
		s, err := r.sessionOf(ctx, secret, now)
		if err != nil {
			t.Fatal(err)
		}
		return s.user
	}
	if u := user("s1"); u != "github:alice" || f.readCount() != 1 {
		t.Fatalf("first call: %q after %d reads", u, f.readCount())
	}
	f.end("s1")
	if u := user("s1"); u != "github:alice" || f.readCount() != 1 {
		t.Fatalf("remembered: %q after %d reads, want alice from the cache", u, f.readCount())
	}
	r.sessionEnded(endedNote("s1"))
	if u := user("s1"); u != "" || f.readCount() != 2 {
		t.Errorf("after the sign-out note: %q after %d reads, want no user, read again", u, f.readCount())
	}

	// s2 is read just before its sign-out, whose note lands during the
	// read: the answer serves that call but is not remembered.
	f.during = func() { f.end("s2"); r.sessionEnded(endedNote("s2")) }
	if u := user("s2"); u != "github:alice" {
		t.Fatalf("the call in flight: %q", u)
	}
	f.during = nil
	if u := user("s2"); u != "" {
		t.Errorf("s2 after its sign-out: %q, a session read as it ended was remembered", u)
	}

	// A resync (notes may have been missed) forgets every session.
	if u := user("s3"); u != "github:bob" {
		t.Fatalf("s3: %q", u)
	}
	f.end("s3")
	r.sessionEnded(store.SessionEnded(""))
	if u := user("s3"); u != "" {
		t.Errorf("s3 after a resync: %q", u)
	}
}
