package router

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// TestPickWeights: a canary at weight w takes exactly w of every 100
// calls in a row, spread out (never more than one in a row below 50).
func TestPickWeights(t *testing.T) {
	for _, w := range []uint64{1, 10, 25, 33, 50, 90, 99} {
		rt := &route{canary: &route{}, weight: w}
		rt.split.Store(uint64(w) * 7) // any start
		got, run, maxRun := 0, 0, 0
		for range 1000 {
			if rt.pick() == rt.canary {
				got++
				run++
				maxRun = max(maxRun, run)
			} else {
				run = 0
			}
		}
		if got != int(w)*10 {
			t.Errorf("weight %d: %d of 1000 calls to the canary, want %d", w, got, w*10)
		}
		if w < 50 && maxRun > 1 {
			t.Errorf("weight %d: %d canary calls in a row", w, maxRun)
		}
	}
	if rt := (&route{}); rt.pick() != rt {
		t.Error("a route without a canary picked something else")
	}
}

// TestCanaryRouting: with a canary at 10 % the router sends it every tenth
// call, says so in X-Velo-Deployment, counts each deployment's calls on
// its own (and the component's together); a canary with no worker up gets
// nothing and loses nothing; promoting it sends everything to it.
func TestCanaryRouting(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	live := f.deploy("app", "w1")
	d, err := f.st.CreateDeployment(ctx, store.Deployment{Component: "app", Digest: fmt.Sprintf("%064d", 2), Runtime: "wasm", Manifest: []byte(`{}`), Source: "upload", Status: store.StatusReady})
	if err != nil {
		t.Fatal(err)
	}
	canary := d.ID
	if err := f.st.SetCanary(ctx, "app", canary, 10); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	if res := f.get("/fn/app/"); res.Header.Get("X-Velo-Deployment") != fmt.Sprint(live) {
		t.Fatalf("canary without a ready placement served: %v", res.Header)
	}
	if err := f.st.PutPlacement(ctx, store.Placement{Deployment: canary, Worker: "w2", State: store.PlacementReady}); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	if err := f.r.FlushHits(ctx); err != nil {
		t.Fatal(err)
	}
	byDep := map[string]int{}
	for range 1000 {
		res := f.get("/fn/app/")
		if res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
		dep, worker := res.Header.Get("X-Velo-Deployment"), res.Header.Get("X-Velo-Worker")
		if (dep == fmt.Sprint(canary)) != (worker == "w2") {
			t.Fatalf("deployment %s answered by worker %s", dep, worker)
		}
		byDep[dep]++
	}
	if byDep[fmt.Sprint(canary)] != 100 || byDep[fmt.Sprint(live)] != 900 {
		t.Fatalf("calls by deployment: %v, want 100 to the canary #%d and 900 to #%d", byDep, canary, live)
	}
	if err := f.r.FlushHits(ctx); err != nil {
		t.Fatal(err)
	}
	minute := time.Now().Add(-time.Hour)
	for dep, want := range map[int64]int64{live: 901, canary: 100} {
		st, err := f.st.DeploymentStats(ctx, dep, minute)
		if err != nil {
			t.Fatal(err)
		}
		var hits int64
		for _, h := range st {
			hits += h.Hits
		}
		if hits != want {
			t.Errorf("deployment %d: %d hits in its statistics, want %d", dep, hits, want)
		}
	}
	if tot := f.r.Totals()["app"]; tot[0] != 1001 {
		t.Errorf("component total %d, want 1001", tot[0])
	}

	// Promoted: every call goes to it.
	if err := f.st.Promote(ctx, "app", canary); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	for range 20 {
		if res := f.get("/fn/app/"); res.Header.Get("X-Velo-Deployment") != fmt.Sprint(canary) {
			t.Fatalf("after promotion: served by %s", res.Header.Get("X-Velo-Deployment"))
		}
	}
}

// TestFastCanary: on the fast path (event loops and net/http, workers
// over HTTP) the canary takes its share too, answered by its own worker
// with its own X-Velo-Deployment and its deployment in the upstream call.
func TestFastCanary(t *testing.T) { bothPaths(t, testFastCanary) }

func testFastCanary(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", nil)
	b := newFakeWorker(t, "b", "tok", nil)
	rm := NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"})
	t.Cleanup(rm.Close)
	st := &tableStore{routes: []store.Route{{
		Component: "hello", Deployment: 7,
		Workers: []store.Worker{{Name: "a", Addr: a.srv.URL, SeenAt: time.Now()}},
		Canary:  &store.Canary{Deployment: 8, Weight: 25, Workers: []store.Worker{{Name: "b", Addr: b.srv.URL, SeenAt: time.Now()}}},
	}}}
	r := New(Config{Backend: rm.Backend, Logger: discardLogger()}, st)
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rt := r.table.Load().routes["hello"]; !rt.fast || rt.canary == nil {
		t.Fatalf("route fast=%v canary=%v, want both", rt.fast, rt.canary != nil)
	}
	addr := fastServer(t, r, loops)
	var raw strings.Builder
	for range 99 {
		raw.WriteString("GET /fn/hello/ HTTP/1.1\r\nHost: h\r\n\r\n")
	}
	raw.WriteString("GET /fn/hello/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
	by := map[string]int{}
	for _, res := range rawExchange(t, addr, raw.String(), 100) {
		body := readBody(res)
		dep, worker := res.Header.Get("X-Velo-Deployment"), res.Header.Get("X-Velo-Worker")
		if res.StatusCode != 200 || !strings.HasPrefix(body, worker+" ") || !strings.Contains(body, "dep="+dep+" ") {
			t.Fatalf("answer %d %q from worker %s, deployment %s", res.StatusCode, body, worker, dep)
		}
		by[dep+"@"+worker]++
	}
	if by["8@b"] != 25 || by["7@a"] != 75 {
		t.Fatalf("answers by deployment@worker: %v, want 25 from the canary 8@b and 75 from 7@a", by)
	}
}
