package router

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestRateLimitAcrossRouters: two routers on one real Postgres share what
// they admitted, so a client's limit holds across both: after 15 of 20
// calls on one router, the other admits the 5 left; and hammering both at
// once admits no more than the burst plus what both may admit between two
// syncs.
func TestRateLimitAcrossRouters(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.UpsertWorker(ctx, store.Worker{Name: "w1", Addr: "http://w1", StartedAt: time.Now(), SeenAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	limits := func(name string, count int) {
		if err := st.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}); err != nil {
			t.Fatal(err)
		}
		d, err := st.CreateDeployment(ctx, store.Deployment{Component: name, Digest: "d", Runtime: "wasm", Status: store.StatusReady,
			Manifest: []byte(`{"limits":` + limitsJSON(count, time.Hour, count, "ip") + `}`)})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "w1", State: store.PlacementReady}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetTarget(ctx, name, d.ID); err != nil {
			t.Fatal(err)
		}
		if err := st.Promote(ctx, name, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	limits("seq", 20)
	limits("hammer", 50)
	be := &backend{name: "w1"}
	var routers []*Router
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for range 2 {
		r := New(Config{Backend: func(store.Worker) Backend { return be }, ShareLimits: true, Flush: 50 * time.Millisecond, Logger: discardLogger()}, st)
		if err := r.Load(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = r.Run(ctx) }()
		routers = append(routers, r)
	}
	call := func(r *Router, component, ip string) int {
		req := httptest.NewRequest("GET", "/fn/"+component+"/", nil)
		req.RemoteAddr = ip + ":1234"
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range 15 {
		if code := call(routers[0], "seq", "192.0.2.1"); code != 200 {
			t.Fatalf("call %d on router 0: %d", i, code)
		}
	}
	// Router 1 takes router 0's calls out of its bucket at its next sync.
	l := routers[1].table.Load().routes["seq"].gate.limit
	testsupport.Eventually(t, 30*time.Second, "router 1 to see router 0's calls", func() bool {
		sh := &l.shards[shardOf(ipKey("192.0.2.1"))]
		sh.mu.Lock()
		defer sh.mu.Unlock()
		b := sh.m[string(ipKey("192.0.2.1"))]
		return b != nil && b.tokens < 6
	})
	admitted := 0
	for range 10 {
		if call(routers[1], "seq", "192.0.2.1") == 200 {
			admitted++
		}
	}
	if admitted != 5 {
		t.Fatalf("router 1 admitted %d more calls, want the 5 left of 20", admitted)
	}
	if call(routers[1], "seq", "192.0.2.9") != 200 {
		t.Fatal("another client was limited too")
	}

	// Both routers hammered at once for a while by one client: the limit
	// (50, refilling at 50/h) holds within the tolerance: what the other
	// router admits between two syncs, at most one more burst.
	var ok atomic.Int64
	var hw sync.WaitGroup
	deadline := time.Now().Add(2 * time.Second)
	for i := range 8 {
		hw.Add(1)
		go func() {
			defer hw.Done()
			for time.Now().Before(deadline) {
				if call(routers[i%2], "hammer", "198.51.100.1") == 200 {
					ok.Add(1)
				}
			}
		}()
	}
	hw.Wait()
	if n := ok.Load(); n < 50 || n > 101 {
		t.Fatalf("two routers admitted %d calls of one client with a limit of 50, want 50 to 100", n)
	}
	t.Logf("two routers hammered for 2s admitted %d calls against a limit of 50", ok.Load())
}

func ipKey(ip string) []byte {
	a := netipMust(ip).As16()
	return a[:]
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
