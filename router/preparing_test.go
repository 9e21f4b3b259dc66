package router

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// deadlineBackend answers with how long the call had left.
type deadlineBackend struct{ left chan time.Duration }

func (b *deadlineBackend) Endpoint() *Endpoint { return nil }

func (b *deadlineBackend) Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	left := time.Duration(-1)
	if dl, ok := r.Context().Deadline(); ok {
		left = time.Until(dl)
	}
	b.left <- left
	fmt.Fprint(w, "prepared")
	return true
}

// TestCallsWaitForPreparingWorkers: a component whose live deployment is
// ready on no worker but being prepared on one (right after that worker
// restarts) sends its calls there, with the component's timeout as their
// deadline, instead of answering 503; once a worker is ready, calls go
// only to ready workers. The router's own 503s are counted like any
// answer, and calls for no component in a counter of their own.
func TestCallsWaitForPreparingWorkers(t *testing.T) {
	f := newFixture(t, Config{})
	prep := &deadlineBackend{left: make(chan time.Duration, 1)}
	f.r.cfg.Backend = func(w store.Worker) Backend {
		if w.Name == "w1" {
			return prep
		}
		return f.backends[w.Name]
	}
	ctx := context.Background()
	if err := f.st.CreateComponent(ctx, store.Component{Name: "hello", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	d, err := f.st.CreateDeployment(ctx, store.Deployment{Component: "hello", Digest: fmt.Sprintf("%064d", 1), Runtime: "wasm",
		Manifest: []byte(`{"timeout":3000000000}`), Source: "upload", Status: store.StatusReady})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "w1", State: store.PlacementPending}); err != nil {
		t.Fatal(err)
	}
	if err := f.st.SetTarget(ctx, "hello", d.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Promote(ctx, "hello", d.ID); err != nil {
		t.Fatal(err)
	}
	f.refresh()

	res := f.get("/fn/hello/")
	if got := body(t, res); res.StatusCode != 200 || got != "prepared" || res.Header.Get("X-Velo-Worker") != "w1" {
		t.Fatalf("preparing on w1 only: %d %q from %q", res.StatusCode, got, res.Header.Get("X-Velo-Worker"))
	}
	// The wait is bounded by the component's timeout (3s here), not the
	// default 10s or none; how much of it is left depends on the machine's
	// speed, so only the bound is checked.
	if left := <-prep.left; left <= 0 || left > 3*time.Second {
		t.Errorf("the call waited with %v left, want at most the component's 3s timeout", left)
	}

	// Ready on w2: only w2 serves.
	if err := f.st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "w2", State: store.PlacementReady}); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	for range 4 {
		if res := f.get("/fn/hello/"); res.StatusCode != 200 || res.Header.Get("X-Velo-Worker") != "w2" {
			t.Fatalf("with w2 ready: %d from %q", res.StatusCode, res.Header.Get("X-Velo-Worker"))
		}
	}
	if len(prep.left) != 0 {
		t.Fatal("a call went to the preparing worker although w2 was ready")
	}

	// A placement that failed is no target: 503, counted.
	for _, w := range []string{"w1", "w2"} {
		if err := f.st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: w, State: store.PlacementFailed, Error: "boom"}); err != nil {
			t.Fatal(err)
		}
	}
	f.refresh()
	if res := f.get("/fn/hello/"); res.StatusCode != 503 {
		t.Fatalf("all placements failed: %d, want 503", res.StatusCode)
	}
	if err := f.st.SetPaused(ctx, "hello", true); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	if res := f.get("/fn/hello/"); res.StatusCode != 503 {
		t.Fatalf("paused: %d, want 503", res.StatusCode)
	}
	f.get("/fn/nope/")
	if got := f.r.Totals()["hello"]; got != [2]int64{7, 2} {
		t.Errorf("hello's totals = %v, want 7 calls of which 2 errors (the router's 503s)", got)
	}
	if got := f.r.unrouted.Load(); got != 1 {
		t.Errorf("unrouted = %d, want 1", got)
	}
	if err := f.r.FlushHits(ctx); err != nil {
		t.Fatal(err)
	}
	buckets, err := f.st.Stats(ctx, "hello", time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var hits, errs int64
	for _, b := range buckets {
		hits, errs = hits+b.Hits, errs+b.Errors
	}
	if hits != 7 || errs != 2 {
		t.Errorf("hello's stored stats: %d hits, %d errors; want 7 and 2", hits, errs)
	}
}

// TestHeartbeatsAfterStoreOutage: a worker whose heartbeat is older than
// WorkerTimeout is left out only when others beat since; after an outage of
// the store, when every heartbeat is that old, none is.
func TestHeartbeatsAfterStoreOutage(t *testing.T) {
	f := newFixture(t, Config{WorkerTimeout: 10 * time.Second})
	ctx := context.Background()
	f.deploy("hello", "w1", "w2")
	stale := time.Now().Add(-30 * time.Second)
	for _, w := range []string{"w1", "w2"} {
		if err := f.st.Heartbeat(ctx, w, stale); err != nil {
			t.Fatal(err)
		}
	}
	f.refresh()
	seen := map[string]bool{}
	for range 4 {
		res := f.get("/fn/hello/")
		if res.StatusCode != 200 {
			t.Fatalf("after a 30s outage of the store: %d", res.StatusCode)
		}
		seen[res.Header.Get("X-Velo-Worker")] = true
	}
	if !seen["w1"] || !seen["w2"] {
		t.Fatalf("after an outage, served by %v; want both workers", seen)
	}
	// w1 beats again, w2 does not: w2 is dead.
	if err := f.st.Heartbeat(ctx, "w1", time.Now()); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	for range 4 {
		if res := f.get("/fn/hello/"); res.StatusCode != 200 || res.Header.Get("X-Velo-Worker") != "w1" {
			t.Fatalf("with w2's heartbeat 30s behind w1's: %d from %q", res.StatusCode, res.Header.Get("X-Velo-Worker"))
		}
	}
}

// TestSilenceCutoff: for a worker timeout after the store is back, only a
// worker's silence while the store could be reached counts.
func TestSilenceCutoff(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	lost, back := t0, t0.Add(30*time.Second) // a 30s outage
	const timeout = 10 * time.Second
	for _, tc := range []struct {
		now  time.Time
		want time.Time
		ok   bool
	}{
		{back, lost.Add(-10 * time.Second), true},                     // just back: 10s of silence before the outage
		{back.Add(4 * time.Second), lost.Add(-6 * time.Second), true}, // 4s since, 6s before
		{back.Add(timeout), time.Time{}, false},                       // the clock alone again
	} {
		got, ok := silenceCutoff(lost, back, tc.now, timeout)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("at %v after back: %v %v, want %v %v", tc.now.Sub(back), got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := silenceCutoff(time.Time{}, back, back, timeout); ok {
		t.Error("no bound wanted without a last contact before the outage")
	}
}
