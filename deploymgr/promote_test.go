package deploymgr_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestPromoteRefusesDroppedArtifact: promoting (weight 1-99) an old
// deployment whose artifact was dropped, or a skipped one, is refused
// with the deployment and the reason, and nothing stored changes (no
// canary, the deployment still ready, nothing written in its logs),
// where it used to make it the canary and leave it pending for ever (no
// worker can place it). A kept old deployment is still promoted.
func TestPromoteRefusesDroppedArtifact(t *testing.T) { testPromoteRefusesDroppedArtifact(t, "") }

// TestPromoteRefusesDroppedArtifactPostgres is the same on Postgres.
func TestPromoteRefusesDroppedArtifactPostgres(t *testing.T) {
	testPromoteRefusesDroppedArtifact(t, pgtest.URL(t))
}

func testPromoteRefusesDroppedArtifact(t *testing.T, dbURL string) {
	const keep = 2
	e := startWith(t, node.Config{DatabaseURL: dbURL, KeepDeployments: keep, Grace: 500 * time.Millisecond})
	ctx, n := e.ctx, e.n
	var deps []api.Deployment
	for i := 0; i < keep+2; i++ {
		d := e.deploy("old", map[string][]byte{
			"echo.wasm": variantWasm(i),
			"velo.toml": []byte(fmt.Sprintf("name = \"old\"\n[env]\nGREETING = \"v%d\"\n", i)),
		})
		if d.Status != "ready" || !d.Live {
			t.Fatalf("deployment %d: %s %s", i, d.Status, d.Error)
		}
		deps = append(deps, d)
	}
	gone := deps[0]
	testsupport.EventuallyShow(t, 60*time.Second, "the oldest deployment's artifact dropped", func() bool {
		ok, err := n.Store.HasArtifact(ctx, gone.Digest)
		return err == nil && !ok
	}, func() string {
		ok, err := n.Store.HasArtifact(ctx, gone.Digest)
		ps, perr := n.Store.Placements(ctx, gone.ID)
		return fmt.Sprintf("HasArtifact: %v, %v; placements %v, %v", ok, err, ps, perr)
	})
	skipped, err := n.Store.CreateDeployment(ctx, store.Deployment{Component: "old", Source: "github",
		Status: store.StatusSkipped, Error: "what is live is newer"})
	if err != nil {
		t.Fatal(err)
	}

	state := func() string {
		ro, err := n.Store.Rollout(ctx, "old")
		if err != nil {
			t.Fatal(err)
		}
		comp, err := n.Store.Component(ctx, "old")
		if err != nil {
			t.Fatal(err)
		}
		var statuses []string
		for _, id := range []int64{gone.ID, skipped.ID} {
			d, err := n.Store.Deployment(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			statuses = append(statuses, d.Status)
		}
		logs, err := n.Store.Logs(ctx, "old", 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("canary %d weight %d, live %d target %d, statuses %v, %d log lines",
			ro.Canary, ro.Weight, comp.Live, comp.Target, statuses, len(logs))
	}
	before := state()
	for _, tc := range []struct {
		id   int64
		want []string
	}{
		{gone.ID, []string{fmt.Sprint("deployment ", gone.ID), "artifact was removed", "deploy that version again"}},
		{skipped.ID, []string{fmt.Sprint("deployment ", skipped.ID), "skipped", "no artifact"}},
	} {
		_, err := e.c.Promote(ctx, "old", tc.id, 30)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("promote deployment %d to 30 %%: %v, want a refusal saying %q", tc.id, err, w)
			}
		}
		if after := state(); after != before {
			t.Errorf("after the refused promote of deployment %d: %s; before: %s", tc.id, after, before)
		}
	}

	// The oldest kept one (not live, not the rollback target) is placed
	// again as the canary.
	kept := deps[len(deps)-keep]
	if _, err := e.c.Promote(ctx, "old", kept.ID, 30); err != nil {
		t.Fatalf("promote kept deployment %d: %v", kept.ID, err)
	}
	testsupport.EventuallyShow(t, 60*time.Second, "the kept deployment ready as the canary", func() bool {
		d, err := n.Store.Deployment(ctx, kept.ID)
		ro, rerr := n.Store.Rollout(ctx, "old")
		return err == nil && rerr == nil && d.Status == store.StatusReady && ro.Canary == kept.ID
	}, state)
}
