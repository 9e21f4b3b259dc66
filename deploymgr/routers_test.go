package deploymgr

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// TestAwaitRouters: a promotion is held back from "live" while a router
// that heartbeats has not reported its route version; a router silent for
// RouterTimeout is not waited for; past RouterWait it is released anyway
// and the build log names the router that lags.
func TestAwaitRouters(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := New(Config{PublicURL: "http://x", RouterWait: time.Hour, RouterTimeout: time.Minute}, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateComponent(ctx, store.Component{Name: "web", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	d, err := st.CreateDeployment(ctx, store.Deployment{Component: "web", Digest: "d1", Runtime: "wasm", Manifest: []byte(`{"name":"web"}`), Source: "upload"})
	if err != nil {
		t.Fatal(err)
	}
	m.startWaiting()
	v, err := m.announce(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	held := func() bool { _, ok := m.routing.Load(d.ID); return ok }
	report := func(id string, applied int64, seen time.Time) {
		t.Helper()
		if err := st.ReportRouter(ctx, store.RouterState{ID: id, Addr: "10.0.0.9:" + id, Applied: applied, SeenAt: seen}); err != nil {
			t.Fatal(err)
		}
	}
	report("1", v-1, time.Now().Add(-time.Hour)) // killed long ago: not waited for
	report("2", v-1, time.Time{})
	m.routing.Store(d.ID, struct{}{})
	m.awaitRouters(d, v)
	m.releaseServed(ctx)
	if !held() {
		t.Fatal("released while router 2, heartbeating, serves an older version")
	}
	report("2", v, time.Time{})
	m.releaseServed(ctx)
	if held() {
		t.Fatal("held back once every live router serves it (router 1 is silent)")
	}

	// A router that lags past RouterWait: released, and named.
	m.cfg.RouterWait = time.Millisecond
	v, err = m.announce(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	m.routing.Store(d.ID, struct{}{})
	m.awaitRouters(d, v)
	time.Sleep(5 * time.Millisecond)
	m.releaseServed(ctx)
	if held() {
		t.Fatal("held back past RouterWait")
	}
	log, err := st.BuildLog(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "routers: ") || !strings.Contains(log, "10.0.0.9:2") || strings.Contains(log, "10.0.0.9:1") {
		t.Fatalf("build log does not name the lagging router (only): %q", log)
	}
}
