package deploymgr

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// TestWatch drives automatic rollback with per-deployment hits in a real
// (SQLite) store: a new deployment is rolled back when, within its watch
// window, at least 10 of its calls failed, over 5 %, and clearly more than
// its predecessor's; not otherwise, nor with auto_rollback = false.
func TestWatch(t *testing.T) {
	for _, tc := range []struct {
		name             string
		auto             manifest.AutoRollback
		promotedAgo      time.Duration
		oldHits, oldErrs int64
		newHits, newErrs int64
		want             string // the new deployment's error; "" when not rolled back
	}{
		{name: "errors jump", oldHits: 1000, oldErrs: 3, newHits: 100, newErrs: 42, want: "rolled back: 42 % errors vs 0.3 %"},
		{name: "every call fails", newHits: 20, newErrs: 20, want: "rolled back: 100 % errors vs 0 %"},
		{name: "too few failures", newHits: 20, newErrs: 9},
		{name: "under 5 %", oldHits: 1000, newHits: 1000, newErrs: 50},
		{name: "as bad as before", oldHits: 1000, oldErrs: 300, newHits: 100, newErrs: 40},
		{name: "off", auto: manifest.AutoRollback{Off: true}, newHits: 100, newErrs: 100},
		{name: "past the window", promotedAgo: 3 * time.Minute, newHits: 100, newErrs: 100},
		{name: "longer window", auto: manifest.AutoRollback{Watch: 10 * time.Minute}, promotedAgo: 3 * time.Minute, newHits: 100, newErrs: 100, want: "rolled back: 100 % errors vs 0 %"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			m, err := New(Config{PublicURL: "http://x"}, st)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.CreateComponent(ctx, store.Component{Name: "app", Runtime: "wasm"}); err != nil {
				t.Fatal(err)
			}
			mk := func(auto manifest.AutoRollback) store.Deployment {
				man, _ := json.Marshal(manifest.Manifest{Name: "app", Runtime: "wasm", AutoRollback: auto})
				d, err := st.CreateDeployment(ctx, store.Deployment{Component: "app", Runtime: "wasm", Digest: strings.Repeat("a", 64), Manifest: man, Status: store.StatusReady})
				if err != nil {
					t.Fatal(err)
				}
				if err := st.PutArtifact(ctx, d.Digest, []byte("tar")); err != nil {
					t.Fatal(err)
				}
				if err := st.SetTarget(ctx, "app", d.ID); err != nil {
					t.Fatal(err)
				}
				if err := st.Promote(ctx, "app", d.ID); err != nil {
					t.Fatal(err)
				}
				return d
			}
			old := mk(manifest.AutoRollback{})
			bad := mk(tc.auto)
			promoted := time.Now().Add(-tc.promotedAgo)
			if tc.promotedAgo > 0 {
				setPromotedAt(t, st, "app", promoted)
			}
			before := promoted.Add(-time.Minute)
			if err := st.AddHits(ctx, []store.Hits{
				{Component: "app", Deployment: old.ID, Minute: before, Hits: tc.oldHits, Errors: tc.oldErrs},
				{Component: "app", Deployment: bad.ID, Minute: time.Now(), Hits: tc.newHits, Errors: tc.newErrs},
			}); err != nil {
				t.Fatal(err)
			}
			if err := m.watch(ctx); err != nil {
				t.Fatal(err)
			}
			got, err := st.Deployment(ctx, bad.ID)
			if err != nil {
				t.Fatal(err)
			}
			comp, err := st.Component(ctx, "app")
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if got.Status != store.StatusReady || comp.Target != bad.ID {
					t.Fatalf("rolled back: status %q (%s), target %d; want it left live", got.Status, got.Error, comp.Target)
				}
				return
			}
			if got.Status != store.StatusFailed || got.Error != tc.want || comp.Target != old.ID {
				t.Fatalf("status %q error %q target %d; want failed %q and the target back to %d", got.Status, got.Error, comp.Target, tc.want, old.ID)
			}
			lines, err := st.TailLogs(ctx, "app", 10)
			if err != nil || len(lines) == 0 || !strings.Contains(lines[len(lines)-1].Line, fmt.Sprintf("deployment %d %s", bad.ID, tc.want)) {
				t.Errorf("component logs %+v (err %v) do not say so", lines, err)
			}
			// The next round does not roll back again while the old one
			// comes back.
			if err := m.watch(ctx); err != nil {
				t.Fatal(err)
			}
			if d, _ := st.Deployment(ctx, old.ID); d.Status != store.StatusPending {
				t.Errorf("previous deployment %q, want pending (being placed again)", d.Status)
			}
		})
	}
}

// setPromotedAt moves the component's last promotion into the past, as if
// it had been made then.
func setPromotedAt(t *testing.T, st *store.Store, component string, at time.Time) {
	t.Helper()
	if err := st.SetPromotedAt(context.Background(), component, at); err != nil {
		t.Fatal(err)
	}
}

func TestPercent(t *testing.T) {
	for r, want := range map[float64]string{0: "0 %", 0.003: "0.3 %", 0.42: "42 %", 1: "100 %", 0.0999: "10.0 %", 0.05: "5.0 %"} {
		if got := percent(r); got != want {
			t.Errorf("percent(%v) = %q, want %q", r, got, want)
		}
	}
}
