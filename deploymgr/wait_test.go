package deploymgr

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestWaitDeployment: GET /deployments/{id}?wait= answers once the
// deployment differs from what the caller saw — told by a store note (a
// scheduler in another process) or by this process's scheduler without a
// note — or, when nothing changes, as it is at the end of the wait; bad
// wait parameters are refused with the parameter named.
func TestWaitDeployment(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := New(Config{PublicURL: "http://x", AdminToken: "tok", Logger: slog.New(slog.DiscardHandler)}, st)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	c := client.New(srv.URL, "tok", nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.CreateComponent(ctx, store.Component{Name: "web", Runtime: "wasm"}))
	d, err := st.CreateDeployment(ctx, store.Deployment{Component: "web", Runtime: "wasm", Digest: strings.Repeat("a", 64),
		Manifest: []byte(`{}`), Source: SourceUpload, Status: store.StatusPending})
	must(err)
	must(st.SetTarget(ctx, "web", d.ID))
	seen, err := c.Deployment(ctx, d.ID)
	must(err)
	if seen.Status != store.StatusPending || seen.Live {
		t.Fatalf("new deployment: %s, live %v", seen.Status, seen.Live)
	}

	// waitFor starts a wait from seen and returns its answer's channel,
	// once the server holds the request.
	waitFor := func(seen api.Deployment) <-chan api.Deployment {
		t.Helper()
		out := make(chan api.Deployment, 1)
		go func() {
			got, err := c.WaitDeployment(ctx, d.ID, seen, 30*time.Second)
			if err != nil {
				t.Error(err)
			}
			out <- got
		}()
		testsupport.Eventually(t, 30*time.Second, "the wait held", func() bool {
			m.changes.mu.Lock()
			defer m.changes.mu.Unlock()
			return m.changes.waits[d.ID] != nil
		})
		return out
	}
	answer := func(c <-chan api.Deployment, what string) api.Deployment {
		t.Helper()
		select {
		case got := <-c:
			return got
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no answer", what)
			return api.Deployment{}
		}
	}

	// Placed by a scheduler elsewhere: a placement note.
	w := waitFor(seen)
	must(st.SetDeploymentStatus(ctx, d.ID, store.StatusPreparing, ""))
	must(st.Notify(ctx, store.PlacementsChanged(d.ID)))
	if got := answer(w, "after a placement note"); got.Status != store.StatusPreparing {
		t.Errorf("answer after the deployment was placed: %s, want preparing", got.Status)
	}

	// Promoted by this process's scheduler: no note, its own wake-up
	// (m.changes), then live once the routers serve it.
	seen.Status = store.StatusPreparing
	w = waitFor(seen)
	m.routing.Store(d.ID, struct{}{})
	must(st.Promote(ctx, "web", d.ID))
	m.changes.changed(d.ID)
	got := answer(w, "after the promotion")
	if got.Status != store.StatusReady || got.Live {
		t.Errorf("answer after the promotion: %s, live %v; want ready, not yet live", got.Status, got.Live)
	}
	w = waitFor(got)
	m.routing.Delete(d.ID)
	if got := answer(w, "once routed"); got.Status != store.StatusReady || !got.Live {
		t.Errorf("answer once the routers serve it: %s, live %v; want ready and live", got.Status, got.Live)
	}

	// Nothing changes: the answer comes at the end of the wait, as it is.
	got, err = c.WaitDeployment(ctx, d.ID, api.Deployment{Status: store.StatusReady, Live: true}, 50*time.Millisecond)
	if err != nil || got.Status != store.StatusReady || !got.Live {
		t.Errorf("wait with nothing to change = %s, live %v, %v", got.Status, got.Live, err)
	}

	for q, want := range map[string]string{"wait=2m": "wait", "wait=soon": "wait", "wait=1s&live=maybe": "live"} {
		req, err := http.NewRequest("GET", srv.URL+"/api/v1/deployments/1?"+q, nil)
		must(err)
		req.Header.Set("Authorization", "Bearer tok")
		res, err := http.DefaultClient.Do(req)
		must(err)
		var e struct{ Error string }
		_ = json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(e.Error, want) {
			t.Errorf("GET ?%s = %d %q, want 400 naming %s", q, res.StatusCode, e.Error, want)
		}
	}
}
