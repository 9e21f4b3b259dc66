package worker

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"
)

// serveAsync calls w.Serve for deployment d and reports whether it served
// and what was answered.
func serveAsync(w *Worker, ctx context.Context, d int64) <-chan *httptest.ResponseRecorder {
	out := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		rec := httptest.NewRecorder()
		if !w.Serve(rec, httptest.NewRequest("GET", "/x", nil).WithContext(ctx), d, "") {
			rec = nil
		}
		out <- rec
	}()
	return out
}

func pending(t *testing.T, c <-chan *httptest.ResponseRecorder, what string) {
	t.Helper()
	select {
	case rec := <-c:
		t.Fatalf("%s: answered (%v) instead of waiting", what, rec)
	case <-time.After(50 * time.Millisecond):
	}
}

func answer(t *testing.T, c <-chan *httptest.ResponseRecorder, what string) *httptest.ResponseRecorder {
	t.Helper()
	select {
	case rec := <-c:
		return rec
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer", what)
		return nil
	}
}

// TestServeWaitsForPreparation: a call for a deployment being prepared
// waits for it and is served once it is ready; one whose preparation fails
// is refused then (for another worker), as is one for a deployment not
// placed here, once the worker has looked at its placements; the caller's
// deadline ends a wait.
func TestServeWaitsForPreparation(t *testing.T) {
	w, err := New(Config{Name: "w1", DataDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Before Run has read its placements, any deployment may be one.
	early := serveAsync(w, ctx, 7)
	unknown := serveAsync(w, ctx, 99)
	pending(t, early, "deployment 7 before the first look at the placements")
	w.mu.Lock()
	w.preparing[7] = make(chan struct{})
	w.preparing[8] = make(chan struct{})
	w.mu.Unlock()
	w.markStarted()
	if rec := answer(t, unknown, "deployment 99, not placed here"); rec != nil {
		t.Fatalf("deployment 99 was served: %d", rec.Code)
	}
	pending(t, early, "deployment 7 being prepared")
	failing := serveAsync(w, ctx, 8)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	timedOut := serveAsync(w, short, 7)
	pending(t, failing, "deployment 8 being prepared")
	if rec := answer(t, timedOut, "deployment 7 past the caller's deadline"); rec != nil {
		t.Fatalf("served past the deadline: %d", rec.Code)
	}

	// 7 becomes ready, 8 fails: as prepare ends them.
	w.mu.Lock()
	next := map[int64]Instance{7: echoInstance{}}
	w.serving.Store(&next)
	close(w.preparing[7])
	delete(w.preparing, 7)
	w.mu.Unlock()
	w.prepared(8)
	if rec := answer(t, early, "deployment 7 once ready"); rec == nil || rec.Code != 200 {
		t.Fatalf("deployment 7 once ready: %v", rec)
	}
	if rec := answer(t, failing, "deployment 8 once failed"); rec != nil {
		t.Fatalf("deployment 8 served after its preparation failed: %d", rec.Code)
	}
}
