package deploymgr

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// TestRetireDropsArtifact: an old deployment beyond KeepDeployments that
// was still placed when the drop passes after its successors' deploys ran
// (they spare it) loses its artifact once retire removes its placement,
// not at the component's next deploy, which may never come.
func TestRetireDropsArtifact(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const grace = time.Millisecond
	m, err := New(Config{PublicURL: "http://x", KeepDeployments: 1, Grace: grace}, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.UpsertWorker(ctx, store.Worker{Name: "a", Addr: "http://a"}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateComponent(ctx, store.Component{Name: "app", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	var deps []store.Deployment
	for i := 0; i < 3; i++ {
		digest := strings.Repeat(fmt.Sprint(i), 64)
		if err := st.PutArtifact(ctx, digest, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		d, err := st.CreateDeployment(ctx, store.Deployment{Component: "app", Digest: digest, Runtime: "wasm",
			Manifest: []byte(`{"name":"app"}`), Source: "upload", Status: store.StatusReady})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Promote(ctx, "app", d.ID); err != nil {
			t.Fatal(err)
		}
		deps = append(deps, d)
	}
	// The first is neither live nor the rollback target, beyond the one
	// kept, but still placed on a, so the drop pass spares it.
	old := deps[0]
	if err := st.PutPlacement(ctx, store.Placement{Deployment: old.ID, Worker: "a", State: store.PlacementReady}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * grace) // the artifacts are older than the grace
	m.dropArtifacts(ctx, "app")
	if ok, err := st.HasArtifact(ctx, old.Digest); err != nil || !ok {
		t.Fatalf("placed deployment %d: artifact kept %v, %v; want it spared", old.ID, ok, err)
	}

	// Replaced for longer than the grace: retired.
	m.superseded = map[int64]time.Time{old.ID: time.Now().Add(-time.Minute)}
	if err := m.retireComponent(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if ps, err := st.Placements(ctx, old.ID); err != nil || len(ps) != 0 {
		t.Fatalf("placements of %d after retire: %v, %v; want none", old.ID, ps, err)
	}
	if ok, err := st.HasArtifact(ctx, old.Digest); err != nil || ok {
		t.Errorf("retired deployment %d: artifact kept %v, %v; want it dropped", old.ID, ok, err)
	}
	for _, d := range deps[1:] {
		if ok, err := st.HasArtifact(ctx, d.Digest); err != nil || !ok {
			t.Errorf("deployment %d (live or the rollback target): artifact kept %v, %v; want it kept", d.ID, ok, err)
		}
	}
}
