package router

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

func TestPrefersAsync(t *testing.T) {
	for _, tc := range []struct {
		prefer []string
		want   bool
	}{
		{nil, false},
		{[]string{"respond-async"}, true},
		{[]string{"Respond-Async"}, true},
		{[]string{"return=minimal, respond-async; wait=5"}, true},
		{[]string{"return=minimal", " respond-async "}, true},
		{[]string{"respond-asyncx"}, false},
		{[]string{"wait=respond-async"}, false},
	} {
		h := http.Header{}
		for _, v := range tc.prefer {
			h.Add("Prefer", v)
		}
		if got := prefersAsync(h); got != tc.want {
			t.Errorf("prefersAsync(%q) = %v, want %v", tc.prefer, got, tc.want)
		}
	}
}

// countingAsync queues nothing and counts what it was given.
type countingAsync struct{ n atomic.Int64 }

func (a *countingAsync) Enqueue(context.Context, *Call) (int64, bool, error) {
	return a.n.Add(1), false, nil
}

// TestEventsRateLimited: [limits] applies to inbound events, by the
// sender's address (events carry no identity): over the limit the router
// answers 429 with Retry-After and the RateLimit fields and queues
// nothing; another sender has its own bucket.
func TestEventsRateLimited(t *testing.T) {
	q := &countingAsync{}
	a := newFakeWorker(t, "a", "tok", nil)
	r, _ := gatedRouter(t, a, map[string]string{
		"hook": `{"limits":{"count":3,"per":60000000000,"burst":3,"by":"ip"}}`,
	}, Config{Async: q})
	post := func(from string) *http.Response {
		req := httptest.NewRequest("POST", "/events/hook/stripe", strings.NewReader(`{"ping":1}`))
		req.RemoteAddr = from
		rec := httptest.NewRecorder()
		r.ServeEvents(rec, req)
		return rec.Result()
	}
	for i := range 3 {
		if res := post("192.0.2.1:1000"); res.StatusCode != http.StatusAccepted || res.Header.Get("RateLimit-Remaining") != strconv.Itoa(2-i) {
			t.Fatalf("event %d: %d, RateLimit-Remaining %q", i, res.StatusCode, res.Header.Get("RateLimit-Remaining"))
		}
	}
	res := post("192.0.2.1:1001")
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") == "" || res.Header.Get("RateLimit-Limit") != "3" {
		t.Fatalf("event over the limit: %d %v", res.StatusCode, res.Header)
	}
	if got := q.n.Load(); got != 3 {
		t.Errorf("events queued: %d, want 3 (the refused one queued)", got)
	}
	if res := post("198.51.100.7:1000"); res.StatusCode != http.StatusAccepted {
		t.Errorf("another sender's event: %d, want 202", res.StatusCode)
	}
}
