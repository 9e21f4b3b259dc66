package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/hist"
	"github.com/velo-run/velo/migrations"
)

// newURL returns the URL of a fresh, empty database of one engine.
type newURL func(t *testing.T) string

// openStore opens a Store on url, closed when t ends.
func openStore(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// runContract runs the store contract against the engine behind fresh.
func runContract(t *testing.T, engine string, fresh newURL) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s *Store)
	}{
		{"Components", testComponents},
		{"Deployments", testDeployments},
		{"TargetAndPromote", testTargetAndPromote},
		{"BuildLog", testBuildLog},
		{"Artifacts", testArtifacts},
		{"DropArtifacts", testDropArtifacts},
		{"DropArtifactsSparesRollout", testDropArtifactsSparesRollout},
		{"TrimBuildLogs", testTrimBuildLogs},
		{"PruneDeployments", testPruneDeployments},
		{"DeleteComponent", testDeleteComponent},
		{"Workers", testWorkers},
		{"Placements", testPlacements},
		{"Routes", testRoutes},
		{"RoutesDuringPromotions", testRoutesDuringPromotions},
		{"Prune", testPrune},
		{"Hits", testHits},
		{"Logs", testLogs},
		{"TokensAndSettings", testTokensAndSettings},
		{"ListenNotify", testListenNotify},
		{"SlowListener", testSlowListener},
		{"GitHub", testGitHub},
		{"Secrets", testSecrets},
		{"TLS", testTLS},
		{"TLSLocks", testTLSLocks},
		{"Domains", testDomains},
		{"Gateway", testGateway},
		{"Events", testEvents},
		{"EventSlots", testEventSlots},
		{"Rollouts", testRollouts},
		{"DeploymentHits", testDeploymentHits},
		{"Routers", testRouters},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, fresh(t))
			if s.Engine() != engine {
				t.Fatalf("Engine() = %q, want %q", s.Engine(), engine)
			}
			tc.fn(t, s)
		})
	}
	t.Run("ReopenIsIdempotent", func(t *testing.T) {
		t.Parallel()
		testReopen(t, fresh(t))
	})
	t.Run("Hammer", func(t *testing.T) {
		t.Parallel()
		testHammer(t, openStore(t, fresh(t)))
	})
}

// must fails the test on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: err = %v, want %v", what, err, want)
	}
}

func mkComponent(t *testing.T, s *Store, name string) {
	t.Helper()
	must(t, s.CreateComponent(context.Background(), Component{Name: name, Runtime: "wasm"}))
}

func mkDeployment(t *testing.T, s *Store, component, digest, runtime string) Deployment {
	t.Helper()
	d, err := s.CreateDeployment(context.Background(), Deployment{
		Component: component, Digest: digest, Runtime: runtime,
		Manifest: []byte(`{"name":"` + component + `"}`), Source: "upload",
	})
	must(t, err)
	return d
}

func testComponents(t *testing.T, s *Store) {
	ctx := context.Background()
	_, err := s.Component(ctx, "nope")
	wantErr(t, "Component(nope)", err, ErrNotFound)
	if cs, err := s.Components(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("Components on empty store = %v, %v", cs, err)
	}
	before := time.Now().Add(-time.Second)
	must(t, s.CreateComponent(ctx, Component{Name: "zeta", Runtime: "docker", Repo: "o/zeta"}))
	must(t, s.CreateComponent(ctx, Component{Name: "alpha", Runtime: "wasm"}))
	wantErr(t, "CreateComponent twice", s.CreateComponent(ctx, Component{Name: "alpha"}), ErrConflict)

	c, err := s.Component(ctx, "zeta")
	must(t, err)
	if c.Name != "zeta" || c.Runtime != "docker" || c.Repo != "o/zeta" || c.Paused || c.Live != 0 || c.Target != 0 {
		t.Errorf("Component(zeta) = %+v", c)
	}
	if c.CreatedAt.Before(before) || c.UpdatedAt.Before(before) {
		t.Errorf("timestamps not set: %+v", c)
	}
	cs, err := s.Components(ctx)
	must(t, err)
	if len(cs) != 2 || cs[0].Name != "alpha" || cs[1].Name != "zeta" {
		t.Errorf("Components = %+v, want alpha, zeta", cs)
	}

	must(t, s.SetPaused(ctx, "alpha", true))
	if c, _ := s.Component(ctx, "alpha"); !c.Paused {
		t.Error("SetPaused(true) did not pause")
	}
	must(t, s.SetPaused(ctx, "alpha", false))
	if c, _ := s.Component(ctx, "alpha"); c.Paused {
		t.Error("SetPaused(false) did not resume")
	}
	wantErr(t, "SetPaused(nope)", s.SetPaused(ctx, "nope", true), ErrNotFound)
}

func testDeployments(t *testing.T, s *Store) {
	ctx := context.Background()
	_, err := s.CreateDeployment(ctx, Deployment{Component: "ghost", Digest: "d", Runtime: "wasm"})
	wantErr(t, "CreateDeployment for missing component", err, ErrNotFound)
	_, err = s.Deployment(ctx, 12345)
	wantErr(t, "Deployment(12345)", err, ErrNotFound)

	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	var ids []int64
	for i := range 4 {
		d, err := s.CreateDeployment(ctx, Deployment{
			Component: "app", Digest: fmt.Sprintf("digest%d", i), Runtime: "wasm",
			Manifest: []byte(`{"name":"app"}`), Source: "github", Commit: "abc", Message: "fix\x00it", Author: "ann",
		})
		must(t, err)
		if d.Status != StatusPending || d.CreatedAt.IsZero() || d.UpdatedAt.IsZero() {
			t.Errorf("CreateDeployment = %+v, want pending with timestamps", d)
		}
		if len(ids) > 0 && d.ID <= ids[len(ids)-1] {
			t.Errorf("ID %d not above previous %d", d.ID, ids[len(ids)-1])
		}
		ids = append(ids, d.ID)
	}
	mkDeployment(t, s, "other", "x", "docker")

	d, err := s.Deployment(ctx, ids[1])
	must(t, err)
	if d.Component != "app" || d.Digest != "digest1" || string(d.Manifest) != `{"name":"app"}` ||
		d.Source != "github" || d.Commit != "abc" || d.Author != "ann" || !strings.HasPrefix(d.Message, "fix") {
		t.Errorf("Deployment = %+v", d)
	}

	ds, err := s.Deployments(ctx, "app", 3)
	must(t, err)
	if len(ds) != 3 || ds[0].ID != ids[3] || ds[2].ID != ids[1] {
		t.Errorf("Deployments(app, 3) = %v, want newest three of %v", deploymentIDs(ds), ids)
	}
	if ds, _ := s.Deployments(ctx, "app", 0); len(ds) != 4 {
		t.Errorf("Deployments(app, 0) returned %d, want all 4", len(ds))
	}

	must(t, s.SetDeploymentStatus(ctx, ids[0], StatusFailed, "no module"))
	must(t, s.SetDeploymentStatus(ctx, ids[2], StatusPreparing, ""))
	wantErr(t, "SetDeploymentStatus(missing)", s.SetDeploymentStatus(ctx, 999999, StatusReady, ""), ErrNotFound)
	d, _ = s.Deployment(ctx, ids[0])
	if d.Status != StatusFailed || d.Error != "no module" {
		t.Errorf("after SetDeploymentStatus: %+v", d)
	}
	ds, err = s.DeploymentsByStatus(ctx, StatusPending, StatusPreparing)
	must(t, err)
	// ids[1], ids[2] (preparing), ids[3] of app and the one of other
	if got := deploymentIDs(ds); len(got) != 4 || got[0] != ids[1] || got[1] != ids[2] || got[2] != ids[3] {
		t.Errorf("DeploymentsByStatus(pending, preparing) = %v", got)
	}
	if ds, _ := s.DeploymentsByStatus(ctx, StatusFailed); len(ds) != 1 || ds[0].ID != ids[0] {
		t.Errorf("DeploymentsByStatus(failed) = %v", deploymentIDs(ds))
	}
	if ds, _ := s.DeploymentsByStatus(ctx); len(ds) != 0 {
		t.Errorf("DeploymentsByStatus() = %v, want none", deploymentIDs(ds))
	}
}

func deploymentIDs(ds []Deployment) []int64 {
	var ids []int64
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

func testTargetAndPromote(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	d1 := mkDeployment(t, s, "app", "a", "wasm")
	d2 := mkDeployment(t, s, "app", "b", "docker")
	d3 := mkDeployment(t, s, "app", "c", "wasm")
	foreign := mkDeployment(t, s, "other", "z", "wasm")

	check := func(what string, live, target int64, runtime string) {
		t.Helper()
		c, err := s.Component(ctx, "app")
		must(t, err)
		if c.Live != live || c.Target != target || c.Runtime != runtime {
			t.Errorf("%s: live=%d target=%d runtime=%s, want %d %d %s", what, c.Live, c.Target, c.Runtime, live, target, runtime)
		}
	}
	wantErr(t, "SetTarget foreign deployment", s.SetTarget(ctx, "app", foreign.ID), ErrNotFound)
	wantErr(t, "SetTarget missing deployment", s.SetTarget(ctx, "app", 999999), ErrNotFound)
	wantErr(t, "SetTarget missing component", s.SetTarget(ctx, "ghost", d1.ID), ErrNotFound)
	wantErr(t, "Promote foreign deployment", s.Promote(ctx, "app", foreign.ID), ErrNotFound)

	must(t, s.SetTarget(ctx, "app", d2.ID))
	check("target d2 first", 0, d2.ID, "docker")
	// d2 fails before ever going live: the target is cleared.
	must(t, s.SetTarget(ctx, "app", 0))
	check("clear target", 0, 0, "docker")
	wantErr(t, "clear target of missing component", s.SetTarget(ctx, "ghost", 0), ErrNotFound)
	must(t, s.SetTarget(ctx, "app", d1.ID))
	check("target d1", 0, d1.ID, "wasm")
	must(t, s.SetDeploymentStatus(ctx, d1.ID, StatusPending, ""))
	must(t, s.Promote(ctx, "app", d1.ID))
	check("promote d1", d1.ID, d1.ID, "wasm")
	// Going live is one write: live and ready together.
	if got, err := s.Deployment(ctx, d1.ID); err != nil || got.Status != StatusReady {
		t.Errorf("promoted d1: status %q (%v), want %q", got.Status, err, StatusReady)
	}
	if got, err := s.Deployment(ctx, foreign.ID); err != nil || got.Status == StatusReady && foreign.Status != StatusReady {
		t.Errorf("a refused Promote changed the foreign deployment's status to %q (%v)", got.Status, err)
	}

	// A rollout of d2 starts; d3 overtakes it before d2 is ready.
	must(t, s.SetTarget(ctx, "app", d2.ID))
	check("target d2", d1.ID, d2.ID, "docker")
	must(t, s.SetTarget(ctx, "app", d3.ID))
	// d2 finishes late: it goes live, but the newer target stays.
	must(t, s.Promote(ctx, "app", d2.ID))
	check("late promote d2", d2.ID, d3.ID, "wasm")
	must(t, s.Promote(ctx, "app", d3.ID))
	check("promote d3", d3.ID, d3.ID, "wasm")

	// Rollback from a settled state moves the target too.
	must(t, s.Promote(ctx, "app", d2.ID))
	check("rollback to d2", d2.ID, d2.ID, "docker")
}

func testBuildLog(t *testing.T, s *Store) {
	ctx := context.Background()
	_, err := s.BuildLog(ctx, 424242)
	wantErr(t, "BuildLog(missing)", err, ErrNotFound)
	wantErr(t, "AppendBuildLog(missing)", s.AppendBuildLog(ctx, 424242, "x"), ErrNotFound)

	mkComponent(t, s, "app")
	d := mkDeployment(t, s, "app", "a", "wasm")
	if got, err := s.BuildLog(ctx, d.ID); err != nil || got != "" {
		t.Fatalf("BuildLog before any append = %q, %v", got, err)
	}
	must(t, s.AppendBuildLog(ctx, d.ID, "step 1\n"))
	must(t, s.AppendBuildLog(ctx, d.ID, "step 2\n"))
	if got, _ := s.BuildLog(ctx, d.ID); got != "step 1\nstep 2\n" {
		t.Errorf("BuildLog = %q", got)
	}

	// Push well past the cap: the tail stays, behind the marker.
	chunk := strings.Repeat(strings.Repeat("x", 99)+"\n", 100)
	for range 30 { // 300 kB in 10 kB appends
		must(t, s.AppendBuildLog(ctx, d.ID, chunk))
	}
	var big strings.Builder
	for i := range 12000 {
		fmt.Fprintf(&big, "line %06d %s\n", i, strings.Repeat("y", 88))
	}
	must(t, s.AppendBuildLog(ctx, d.ID, big.String()))
	must(t, s.AppendBuildLog(ctx, d.ID, "last line\n"))
	got, err := s.BuildLog(ctx, d.ID)
	must(t, err)
	if len(got) > BuildLogCap {
		t.Errorf("build log is %d bytes, over the cap %d", len(got), BuildLogCap)
	}
	if !strings.HasPrefix(got, buildLogMarker) {
		t.Errorf("trimmed build log does not start with the marker: %q", got[:60])
	}
	if !strings.HasSuffix(got, "line 011999 "+strings.Repeat("y", 88)+"\nlast line\n") {
		t.Errorf("trimmed build log lost its tail: %q", got[len(got)-120:])
	}
	if strings.Contains(got, "step 1") {
		t.Error("trimmed build log kept its oldest text")
	}
	// Whole lines only after the marker.
	if rest := strings.TrimPrefix(got, buildLogMarker); !strings.HasPrefix(rest, "line ") {
		t.Errorf("trimmed build log starts mid-line: %q", rest[:40])
	}
}

func testArtifacts(t *testing.T, s *Store) {
	ctx := context.Background()
	_, err := s.Artifact(ctx, "nope")
	wantErr(t, "Artifact(nope)", err, ErrNotFound)
	if ok, err := s.HasArtifact(ctx, "nope"); err != nil || ok {
		t.Errorf("HasArtifact(nope) = %v, %v", ok, err)
	}
	data := []byte{0, 1, 2, 0xff, 'a'}
	must(t, s.PutArtifact(ctx, "d1", data))
	must(t, s.PutArtifact(ctx, "d1", data))
	must(t, s.PutArtifact(ctx, "empty", nil))
	got, err := s.Artifact(ctx, "d1")
	must(t, err)
	if !bytes.Equal(got, data) {
		t.Errorf("Artifact = %x, want %x", got, data)
	}
	if got, err := s.Artifact(ctx, "empty"); err != nil || len(got) != 0 {
		t.Errorf("Artifact(empty) = %x, %v", got, err)
	}
	if ok, err := s.HasArtifact(ctx, "d1"); err != nil || !ok {
		t.Errorf("HasArtifact(d1) = %v, %v", ok, err)
	}
}

func testDeleteComponent(t *testing.T, s *Store) {
	ctx := context.Background()
	wantErr(t, "DeleteComponent(ghost)", s.DeleteComponent(ctx, "ghost"), ErrNotFound)
	mkComponent(t, s, "app")
	mkComponent(t, s, "keep")
	for _, d := range []string{"shared", "own", "orphan"} {
		must(t, s.PutArtifact(ctx, d, []byte(d)))
	}
	d1 := mkDeployment(t, s, "app", "own", "wasm")
	d2 := mkDeployment(t, s, "app", "shared", "wasm")
	dk := mkDeployment(t, s, "keep", "shared", "wasm")
	must(t, s.UpsertWorker(ctx, Worker{Name: "w1", Addr: "http://w1"}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: d1.ID, Worker: "w1", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: dk.ID, Worker: "w1", State: PlacementReady}))
	must(t, s.AppendBuildLog(ctx, d2.ID, "building\n"))
	must(t, s.AppendLogs(ctx, []LogLine{{Component: "app", Line: "hi"}, {Component: "keep", Line: "ho"}}))
	minute := time.Now().UTC().Truncate(time.Minute)
	must(t, s.AddHits(ctx, []Hits{{Component: "app", Minute: minute, Hits: 3}, {Component: "keep", Minute: minute, Hits: 1}}))

	must(t, s.DeleteComponent(ctx, "app"))
	wantErr(t, "DeleteComponent twice", s.DeleteComponent(ctx, "app"), ErrNotFound)
	_, err := s.Component(ctx, "app")
	wantErr(t, "Component after delete", err, ErrNotFound)
	for _, id := range []int64{d1.ID, d2.ID} {
		_, err := s.Deployment(ctx, id)
		wantErr(t, "Deployment after delete", err, ErrNotFound)
		_, err = s.BuildLog(ctx, id)
		wantErr(t, "BuildLog after delete", err, ErrNotFound)
	}
	if ps, _ := s.WorkerPlacements(ctx, "w1"); len(ps) != 1 || ps[0].Deployment != dk.ID {
		t.Errorf("placements on w1 after delete = %+v, want only keep's", ps)
	}
	if ls, _ := s.TailLogs(ctx, "app", 10); len(ls) != 0 {
		t.Errorf("logs survived delete: %+v", ls)
	}
	if hs, _ := s.Stats(ctx, "app", minute.Add(-time.Hour)); len(hs) != 0 {
		t.Errorf("hits survived delete: %+v", hs)
	}
	for digest, want := range map[string]bool{"own": false, "shared": true, "orphan": true} {
		if ok, err := s.HasArtifact(ctx, digest); err != nil || ok != want {
			t.Errorf("HasArtifact(%s) after delete = %v, %v; want %v", digest, ok, err, want)
		}
	}
	if ls, _ := s.TailLogs(ctx, "keep", 10); len(ls) != 1 {
		t.Errorf("other component's logs = %+v", ls)
	}
	if hs, _ := s.Stats(ctx, "keep", minute); len(hs) != 1 {
		t.Errorf("other component's hits = %+v", hs)
	}
}

func testWorkers(t *testing.T, s *Store) {
	ctx := context.Background()
	wantErr(t, "Heartbeat(ghost)", s.Heartbeat(ctx, "ghost", time.Now()), ErrNotFound)
	wantErr(t, "DeleteWorker(ghost)", s.DeleteWorker(ctx, "ghost"), ErrNotFound)
	started := time.Date(2024, 1, 2, 3, 4, 5, 6000, time.UTC)
	must(t, s.UpsertWorker(ctx, Worker{Name: "w2", Addr: "http://b", StartedAt: started, SeenAt: started}))
	must(t, s.UpsertWorker(ctx, Worker{Name: "w1", Addr: "http://a"}))
	must(t, s.UpsertWorker(ctx, Worker{Name: "w2", Addr: "http://b2", StartedAt: started, SeenAt: started}))
	seen := started.Add(time.Minute)
	must(t, s.Heartbeat(ctx, "w2", seen))
	ws, err := s.Workers(ctx)
	must(t, err)
	if len(ws) != 2 || ws[0].Name != "w1" || ws[1].Name != "w2" {
		t.Fatalf("Workers = %+v", ws)
	}
	if w := ws[1]; w.Addr != "http://b2" || !w.StartedAt.Equal(started) || !w.SeenAt.Equal(seen) {
		t.Errorf("w2 = %+v, want addr http://b2 started %v seen %v", w, started, seen)
	}
	if ws[0].StartedAt.IsZero() || ws[0].SeenAt.IsZero() {
		t.Errorf("w1 times not defaulted: %+v", ws[0])
	}
	mkComponent(t, s, "app")
	d := mkDeployment(t, s, "app", "a", "wasm")
	must(t, s.PutPlacement(ctx, Placement{Deployment: d.ID, Worker: "w1"}))
	must(t, s.DeleteWorker(ctx, "w1"))
	if ps, _ := s.Placements(ctx, d.ID); len(ps) != 0 {
		t.Errorf("placements of a deleted worker remain: %+v", ps)
	}
	if ws, _ := s.Workers(ctx); len(ws) != 1 {
		t.Errorf("Workers after delete = %+v", ws)
	}
}

func testPlacements(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	d1 := mkDeployment(t, s, "app", "a", "wasm")
	d2 := mkDeployment(t, s, "app", "b", "wasm")
	do := mkDeployment(t, s, "other", "c", "wasm")
	must(t, s.UpsertWorker(ctx, Worker{Name: "w1"}))
	must(t, s.UpsertWorker(ctx, Worker{Name: "w2"}))

	wantErr(t, "PutPlacement unknown worker", s.PutPlacement(ctx, Placement{Deployment: d1.ID, Worker: "ghost"}), ErrNotFound)
	wantErr(t, "PutPlacement unknown deployment", s.PutPlacement(ctx, Placement{Deployment: 999999, Worker: "w1"}), ErrNotFound)

	must(t, s.PutPlacement(ctx, Placement{Deployment: d1.ID, Worker: "w2"}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: d1.ID, Worker: "w1", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: d2.ID, Worker: "w1", State: PlacementFailed, Error: "boom"}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: do.ID, Worker: "w1", State: PlacementReady}))
	// Upsert on (deployment, worker).
	must(t, s.PutPlacement(ctx, Placement{Deployment: d1.ID, Worker: "w2", State: PlacementReady}))

	ps, err := s.Placements(ctx, d1.ID)
	must(t, err)
	if len(ps) != 2 || ps[0].Worker != "w1" || ps[1].Worker != "w2" || ps[1].State != PlacementReady || ps[1].UpdatedAt.IsZero() {
		t.Errorf("Placements(d1) = %+v", ps)
	}
	ps, err = s.WorkerPlacements(ctx, "w1")
	must(t, err)
	if len(ps) != 3 || ps[0].Deployment != d1.ID || ps[1].Deployment != d2.ID || ps[1].Error != "boom" || ps[2].Deployment != do.ID {
		t.Errorf("WorkerPlacements(w1) = %+v", ps)
	}
	ps, err = s.ComponentPlacements(ctx, "app")
	must(t, err)
	if len(ps) != 3 {
		t.Errorf("ComponentPlacements(app) = %+v, want 3", ps)
	}

	must(t, s.ResetPlacements(ctx, "w1"))
	ps, _ = s.WorkerPlacements(ctx, "w1")
	for _, p := range ps {
		if p.State != PlacementPending || p.Error != "" {
			t.Errorf("after ResetPlacements: %+v", p)
		}
	}
	if ps, _ := s.WorkerPlacements(ctx, "w2"); len(ps) != 1 || ps[0].State != PlacementReady {
		t.Errorf("ResetPlacements(w1) touched w2: %+v", ps)
	}

	must(t, s.DeletePlacement(ctx, d1.ID, "w1"))
	wantErr(t, "DeletePlacement twice", s.DeletePlacement(ctx, d1.ID, "w1"), ErrNotFound)
	if ps, _ := s.Placements(ctx, d1.ID); len(ps) != 1 || ps[0].Worker != "w2" {
		t.Errorf("Placements(d1) after delete = %+v", ps)
	}
	all, err := s.AllPlacements(ctx)
	must(t, err)
	want := map[string]int{}
	for _, p := range all {
		want[p.Worker]++
	}
	if got, err := s.PlacementCounts(ctx); err != nil || !reflect.DeepEqual(got, want) || len(got) == 0 {
		t.Errorf("PlacementCounts = %v, %v; AllPlacements counts %v", got, err, want)
	}
}

func testRoutes(t *testing.T, s *Store) {
	ctx := context.Background()
	if rs, err := s.Routes(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("Routes on empty store = %+v, %v", rs, err)
	}
	mkComponent(t, s, "b-app")
	mkComponent(t, s, "a-new") // no deployment yet
	mkComponent(t, s, "c-paused")
	old := mkDeployment(t, s, "b-app", "o", "wasm")
	live := mkDeployment(t, s, "b-app", "l", "docker")
	cp := mkDeployment(t, s, "c-paused", "p", "wasm")
	for _, w := range []string{"w3", "w1", "w2", "w4"} {
		must(t, s.UpsertWorker(ctx, Worker{Name: w, Addr: "http://" + w}))
	}
	must(t, s.Promote(ctx, "b-app", live.ID))
	must(t, s.Promote(ctx, "c-paused", cp.ID))
	must(t, s.SetPaused(ctx, "c-paused", true))
	must(t, s.PutPlacement(ctx, Placement{Deployment: live.ID, Worker: "w3", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: live.ID, Worker: "w1", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: live.ID, Worker: "w2", State: PlacementPending}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: live.ID, Worker: "w4", State: PlacementFailed}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: old.ID, Worker: "w2", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: cp.ID, Worker: "w4", State: PlacementReady}))

	rs, err := s.Routes(ctx)
	must(t, err)
	if len(rs) != 3 || rs[0].Component != "a-new" || rs[1].Component != "b-app" || rs[2].Component != "c-paused" {
		t.Fatalf("Routes = %+v", rs)
	}
	if r := rs[0]; r.Deployment != 0 || r.Runtime != "" || len(r.Workers) != 0 || r.Paused {
		t.Errorf("route of undeployed component = %+v", r)
	}
	r := rs[1]
	if r.Deployment != live.ID || r.Runtime != "docker" || string(r.Manifest) != `{"name":"b-app"}` || r.Paused {
		t.Errorf("route b-app = %+v", r)
	}
	if len(r.Workers) != 2 || r.Workers[0].Name != "w1" || r.Workers[0].Addr != "http://w1" || r.Workers[1].Name != "w3" {
		t.Errorf("route b-app workers = %+v, want ready w1, w3", r.Workers)
	}
	if r := rs[2]; !r.Paused || r.Deployment != cp.ID || len(r.Workers) != 1 || r.Workers[0].Name != "w4" {
		t.Errorf("route c-paused = %+v", r)
	}

	// RoutesOf reads one component's entry, the same as Routes has it.
	must(t, s.ClaimDomains(ctx, "b-app", []string{"b.example", "a.example"}, nil))
	rs, err = s.Routes(ctx)
	must(t, err)
	if got := rs[1].Domains; !reflect.DeepEqual(got, []string{"a.example", "b.example"}) {
		t.Errorf("Routes domains of b-app = %v", got)
	}
	for _, want := range rs {
		got, ok, err := s.RoutesOf(ctx, want.Component)
		if err != nil || !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("RoutesOf(%s) = %+v, %v, %v; Routes has %+v", want.Component, got, ok, err, want)
		}
	}
	if got, ok, err := s.RoutesOf(ctx, "no-such"); err != nil || ok {
		t.Errorf("RoutesOf(no-such) = %+v, %v, %v; want not found", got, ok, err)
	}
}

func testHits(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	m0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	m1 := m0.Add(time.Minute)

	var r1, r2 hist.Recorder
	r1.Record(2 * time.Millisecond)
	r1.Record(2 * time.Millisecond)
	r2.Record(2 * time.Millisecond)
	r2.Record(time.Second)
	l1, l2 := r1.Drain(), r2.Drain()

	must(t, s.AddHits(ctx, []Hits{
		{Component: "app", Minute: m0.Add(17 * time.Second), Hits: 10, Errors: 1, Latency: l1},
		{Component: "ghost", Minute: m0, Hits: 5},
		{Component: "other", Minute: m0, Hits: 7},
		{Component: "app", Minute: m1, Hits: 1},
	}))
	must(t, s.AddHits(ctx, []Hits{
		{Component: "app", Minute: m0, Hits: 5, Errors: 2, Latency: l2},
		{Component: "app", Minute: m0, Hits: 1}, // same key twice in one batch
	}))
	must(t, s.AddHits(ctx, nil))
	// Outbound calls come from the workers, in batches of their own.
	must(t, s.AddHits(ctx, []Hits{
		{Component: "app", Minute: m0, Outbound: 4, OutboundErrors: 1},
		{Component: "app", Minute: m0, Outbound: 2},
	}))
	must(t, s.AddHits(ctx, []Hits{{Component: "app", Minute: m0, Outbound: 3, OutboundErrors: 3}}))

	hs, err := s.Stats(ctx, "app", m0)
	must(t, err)
	if len(hs) != 2 {
		t.Fatalf("Stats = %+v, want 2 minutes", hs)
	}
	h := hs[0]
	if !h.Minute.Equal(m0) || h.Component != "app" || h.Hits != 16 || h.Errors != 3 {
		t.Errorf("minute 0 = %+v, want 16 hits 3 errors", h)
	}
	if h.Outbound != 9 || h.OutboundErrors != 4 {
		t.Errorf("minute 0: %d outbound calls, %d errors, want 9 and 4", h.Outbound, h.OutboundErrors)
	}
	want := hist.Merge(hist.Merge(nil, l1), l2)
	if !sameCounts(h.Latency, want) {
		t.Errorf("merged latency = %v, want %v", nonZero(h.Latency), nonZero(want))
	}
	if q := hist.Quantile(h.Latency, 0.5); q < 2*time.Millisecond || q > 3*time.Millisecond {
		t.Errorf("p50 of merged = %v", q)
	}
	if q := hist.Quantile(h.Latency, 1); q < time.Second {
		t.Errorf("p100 of merged = %v, want >= 1s", q)
	}
	if h := hs[1]; !h.Minute.Equal(m1) || h.Hits != 1 || len(h.Latency) != 0 {
		t.Errorf("minute 1 = %+v", h)
	}
	if hs, _ := s.Stats(ctx, "app", m1.Add(30*time.Second)); len(hs) != 1 || !hs[0].Minute.Equal(m1) {
		t.Errorf("Stats since inside m1 = %+v, want m1 only", hs)
	}
	if hs, _ := s.Stats(ctx, "ghost", m0); len(hs) != 0 {
		t.Errorf("hits of a missing component were kept: %+v", hs)
	}
	if hs, _ := s.Stats(ctx, "other", m0); len(hs) != 1 || hs[0].Hits != 7 {
		t.Errorf("Stats(other) = %+v", hs)
	}
}

func sameCounts(a, b []uint64) bool {
	for i := range max(len(a), len(b)) {
		var x, y uint64
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			return false
		}
	}
	return true
}

func nonZero(c []uint64) map[int]uint64 {
	m := make(map[int]uint64)
	for i, n := range c {
		if n != 0 {
			m[i] = n
		}
	}
	return m
}

func testLogs(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	at := time.Date(2025, 1, 1, 0, 0, 0, 1000, time.UTC)
	must(t, s.AppendLogs(ctx, []LogLine{
		{Component: "app", Deployment: 7, Time: at, Stream: "stdout", Line: "one"},
		{Component: "other", Stream: "stderr", Line: "x"},
		{Component: "ghost", Line: "dropped"},
		{Component: "app", Deployment: 7, Time: at, Stream: "stderr", Line: "two\xff"},
	}))
	must(t, s.AppendLogs(ctx, nil))
	ls, err := s.Logs(ctx, "app", 0, 0)
	must(t, err)
	if len(ls) != 2 || ls[0].Line != "one" || ls[0].Stream != "stdout" || ls[0].Deployment != 7 ||
		!ls[0].Time.Equal(at) || !strings.HasPrefix(ls[1].Line, "two") || ls[1].ID <= ls[0].ID {
		t.Fatalf("Logs = %+v", ls)
	}
	if o, _ := s.Logs(ctx, "other", 0, 0); len(o) != 1 || o[0].Time.IsZero() {
		t.Errorf("Logs(other) = %+v, want one line with a time", o)
	}
	if got, _ := s.Logs(ctx, "ghost", 0, 0); len(got) != 0 {
		t.Errorf("lines of a missing component were kept: %+v", got)
	}
	if got, _ := s.Logs(ctx, "app", ls[0].ID, 10); len(got) != 1 || got[0].ID != ls[1].ID {
		t.Errorf("Logs after first = %+v", got)
	}

	// Past the limit the oldest lines go.
	total := LogsPerComponent + 1234
	batch := make([]LogLine, 0, 1000)
	for i := range total {
		batch = append(batch, LogLine{Component: "app", Line: fmt.Sprintf("n%d", i)})
		if len(batch) == cap(batch) || i == total-1 {
			must(t, s.AppendLogs(ctx, batch))
			batch = batch[:0]
		}
	}
	all, err := s.Logs(ctx, "app", 0, 0)
	must(t, err)
	if len(all) != LogsPerComponent {
		t.Fatalf("kept %d lines, want %d", len(all), LogsPerComponent)
	}
	if all[0].Line != fmt.Sprintf("n%d", total-LogsPerComponent) || all[len(all)-1].Line != fmt.Sprintf("n%d", total-1) {
		t.Errorf("kept lines %s..%s", all[0].Line, all[len(all)-1].Line)
	}
	page, _ := s.Logs(ctx, "app", all[10].ID, 5)
	if len(page) != 5 || page[0].ID != all[11].ID || page[4].ID != all[15].ID {
		t.Errorf("Logs page = %+v", page)
	}
	tail, err := s.TailLogs(ctx, "app", 3)
	must(t, err)
	if len(tail) != 3 || tail[0].ID != all[len(all)-3].ID || tail[2].ID != all[len(all)-1].ID {
		t.Errorf("TailLogs(3) = %+v", tail)
	}
	if tail, _ := s.TailLogs(ctx, "app", 0); len(tail) != 0 {
		t.Errorf("TailLogs(0) = %d lines", len(tail))
	}
	if o, _ := s.Logs(ctx, "other", 0, 0); len(o) != 1 {
		t.Errorf("trimming app touched other: %d lines", len(o))
	}
}

func testTokensAndSettings(t *testing.T, s *Store) {
	ctx := context.Background()
	_, err := s.TokenByHash(ctx, "h")
	wantErr(t, "TokenByHash(missing)", err, ErrNotFound)
	wantErr(t, "DeleteToken(missing)", s.DeleteToken(ctx, "h"), ErrNotFound)
	must(t, s.PutToken(ctx, Token{Hash: "h", Name: "cli", User: "admin"}))
	tok, err := s.TokenByHash(ctx, "h")
	must(t, err)
	if tok.Hash != "h" || tok.Name != "cli" || tok.User != "admin" || tok.CreatedAt.IsZero() {
		t.Errorf("TokenByHash = %+v", tok)
	}
	must(t, s.DeleteToken(ctx, "h"))
	_, err = s.TokenByHash(ctx, "h")
	wantErr(t, "TokenByHash after delete", err, ErrNotFound)

	// Listing and revoking by ID, scoped to a user.
	hashA, hashB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	must(t, s.PutToken(ctx, Token{Hash: hashA, Name: "laptop", User: "github:ann"}))
	must(t, s.PutToken(ctx, Token{Hash: hashB, Name: "ci", User: "github:bob"}))
	ann, err := s.Tokens(ctx, "github:ann")
	must(t, err)
	if len(ann) != 1 || ann[0].Name != "laptop" || ann[0].ID() != hashA[:TokenIDLen] {
		t.Errorf("Tokens(ann) = %+v", ann)
	}
	if all, err := s.Tokens(ctx, ""); err != nil || len(all) != 2 {
		t.Errorf("Tokens(all) = %+v, %v", all, err)
	}
	wantErr(t, "DeleteTokenByID(bob's, as ann)", s.DeleteTokenByID(ctx, hashB[:TokenIDLen], "github:ann"), ErrNotFound)
	wantErr(t, "DeleteTokenByID(short id)", s.DeleteTokenByID(ctx, "b", ""), ErrNotFound)
	must(t, s.DeleteTokenByID(ctx, hashB[:TokenIDLen], "github:bob"))
	must(t, s.DeleteTokenByID(ctx, hashA[:TokenIDLen], ""))
	if all, err := s.Tokens(ctx, ""); err != nil || len(all) != 0 {
		t.Errorf("Tokens after revoking = %+v, %v", all, err)
	}

	_, err = s.Setting(ctx, "k")
	wantErr(t, "Setting(missing)", err, ErrNotFound)
	must(t, s.SetSetting(ctx, "k", "v1"))
	must(t, s.SetSetting(ctx, "k", "v2"))
	if v, err := s.Setting(ctx, "k"); err != nil || v != "v2" {
		t.Errorf("Setting(k) = %q, %v", v, err)
	}
}

// recv returns the next payload on ch, failing after a timeout.
func recv(t *testing.T, ch <-chan Note) (string, bool) {
	t.Helper()
	select {
	case n, ok := <-ch:
		return n.payload, ok
	case <-time.After(10 * time.Second):
		t.Fatal("no notification within 10s")
		return "", false
	}
}

func testListenNotify(t *testing.T, s *Store) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.Listen(ctx, ""); err == nil {
		t.Error("Listen on an empty channel name succeeded")
	}
	a, err := s.Listen(ctx, ChannelDeployments)
	must(t, err)
	bctx, bcancel := context.WithCancel(ctx)
	b, err := s.Listen(bctx, ChannelDeployments)
	must(t, err)
	other, err := s.Listen(ctx, ChannelLogs)
	must(t, err)

	must(t, s.Notify(ctx, DeploymentChanged(1)))
	must(t, s.Notify(ctx, DeploymentChanged(2)))
	for _, ch := range []<-chan Note{a, b} {
		for _, want := range []string{"1", "2"} {
			if p, ok := recv(t, ch); !ok || p != want {
				t.Errorf("got %q, %v; want %q", p, ok, want)
			}
		}
	}
	must(t, s.Notify(ctx, LogsWritten("web")))
	if p, _ := recv(t, other); p != "web" {
		t.Errorf("logs listener got %q, want web", p)
	}
	select {
	case n := <-a:
		t.Errorf("deployments listener got %s sent on logs", n)
	default:
	}

	// A cancelled listener's channel closes; the others keep working.
	bcancel()
	for {
		if _, ok := recv(t, b); !ok {
			break
		}
	}
	must(t, s.Notify(ctx, DeploymentChanged(3)))
	if p, _ := recv(t, a); p != "3" {
		t.Errorf("after cancelling b, a got %q, want 3", p)
	}

	// Closing the store ends every listener.
	s.Close()
	for _, ch := range []<-chan Note{a, other} {
		for {
			if _, ok := recv(t, ch); !ok {
				break
			}
		}
	}
}

func testSlowListener(t *testing.T, s *Store) {
	ctx := context.Background()
	slow, err := s.Listen(ctx, ChannelDeployments)
	must(t, err)
	fast, err := s.Listen(ctx, ChannelDeployments)
	must(t, err)
	// The fast listener reads each payload before the next is sent; the
	// slow one reads nothing and must not hold it up.
	const n = 3 * listenBuffer
	for i := range int64(n) {
		must(t, s.Notify(ctx, DeploymentChanged(i+1)))
		if p, ok := recv(t, fast); !ok || p != fmt.Sprint(i+1) {
			t.Fatalf("fast listener got %q, %v; want %d", p, ok, i+1)
		}
	}
	// The slow one lost payloads and was told to resync; its newest
	// payload comes after the last resync signal.
	var payloads []string
	for len(payloads) < listenBuffer {
		p, _ := recv(t, slow)
		payloads = append(payloads, p)
	}
	if !containsString(payloads, "") {
		t.Errorf("slow listener got no resync signal: %v", payloads)
	}
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func testReopen(t *testing.T, url string) {
	ctx := context.Background()
	s, err := Open(ctx, url)
	must(t, err)
	must(t, s.CreateComponent(ctx, Component{Name: "app"}))
	v1, err := s.SchemaVersion(ctx)
	must(t, err)
	if v1 < 1 {
		t.Errorf("SchemaVersion = %d", v1)
	}
	must(t, s.Migrate(ctx))
	s.Close()

	s = openStore(t, url)
	if v2, err := s.SchemaVersion(ctx); err != nil || v2 != v1 {
		t.Errorf("SchemaVersion after reopen = %d, %v; want %d", v2, err, v1)
	}
	var n int64
	must(t, s.db.queryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n))
	// Versions are assigned ahead, so they may have gaps: one row per
	// migration, not per number.
	all, err := migrations.For(s.Engine())
	must(t, err)
	if int(n) != len(all) {
		t.Errorf("schema_migrations has %d rows, want %d", n, len(all))
	}
	if _, err := s.Component(ctx, "app"); err != nil {
		t.Errorf("data lost on reopen: %v", err)
	}
}

// testRoutesDuringPromotions reads routes while a component flips between
// two deployments, each ready on its own worker: every read must pair the
// live deployment with its own worker, never with none (the old live one
// with the new one's placements, as two separate reads could).
func testRoutesDuringPromotions(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "flip")
	a := mkDeployment(t, s, "flip", "a", "wasm")
	b := mkDeployment(t, s, "flip", "b", "wasm")
	for _, w := range []string{"wa", "wb"} {
		must(t, s.UpsertWorker(ctx, Worker{Name: w, Addr: "http://" + w}))
	}
	must(t, s.PutPlacement(ctx, Placement{Deployment: a.ID, Worker: "wa", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: b.ID, Worker: "wb", State: PlacementReady}))
	must(t, s.Promote(ctx, "flip", a.ID))
	want := map[int64]string{a.ID: "wa", b.ID: "wb"}

	done := make(chan error, 1)
	go func() {
		for i := range 200 {
			if err := s.Promote(ctx, "flip", []int64{b.ID, a.ID}[i%2]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	reads := 0
	for finished := false; !finished; reads++ {
		select {
		case err := <-done:
			must(t, err)
			finished = true
		default:
		}
		rs, err := s.Routes(ctx)
		must(t, err)
		if len(rs) != 1 || len(rs[0].Workers) != 1 || rs[0].Workers[0].Name != want[rs[0].Deployment] {
			t.Fatalf("read %d during promotions: %+v, want deployment %d on wa or %d on wb", reads, rs, a.ID, b.ID)
		}
	}
}

// testPrune: old hit buckets and finished GitHub jobs go; recent buckets
// and unfinished jobs stay.
func testPrune(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	recent := time.Now().UTC().Truncate(time.Minute)
	old := recent.Add(-48 * time.Hour)
	must(t, s.AddHits(ctx, []Hits{{Component: "app", Minute: old, Hits: 5}, {Component: "app", Minute: recent, Hits: 7}}))
	for _, st := range []string{JobQueued, JobRunning, JobDone, JobFailed} {
		_, err := s.CreateGitHubJob(ctx, GitHubJob{Delivery: "d-" + st, Kind: "push", Repo: "o/r", Payload: []byte(`{}`), State: st})
		must(t, err)
	}

	// Nothing is old enough yet.
	hits, jobs, err := s.Prune(ctx, old, time.Now().Add(-time.Hour))
	must(t, err)
	if hits != 0 || jobs != 0 {
		t.Fatalf("Prune with nothing old enough removed %d buckets, %d jobs", hits, jobs)
	}
	hits, jobs, err = s.Prune(ctx, recent.Add(-24*time.Hour), time.Now().Add(time.Minute))
	must(t, err)
	if hits != 1 || jobs != 2 {
		t.Fatalf("Prune removed %d buckets and %d jobs, want 1 and 2", hits, jobs)
	}
	got, err := s.Stats(ctx, "app", old.Add(-time.Minute))
	must(t, err)
	if len(got) != 1 || got[0].Hits != 7 || !got[0].Minute.Equal(recent) {
		t.Errorf("buckets left: %+v, want the recent one", got)
	}
	for st, want := range map[string]bool{JobQueued: true, JobRunning: true, JobDone: false, JobFailed: false} {
		_, err := s.GitHubJob(ctx, "d-"+st)
		if kept := err == nil; kept != want {
			t.Errorf("%s job kept = %v (%v), want %v", st, kept, err, want)
		}
	}
}

// testDropArtifactsSparesRollout: beyond the newest keep, the canary, the
// deployment automatic rollback returns to and one still placed on a
// worker keep their artifacts (PruneDeployments keeps their records: a
// record without its artifact could be neither placed nor rolled back
// to); the others' go.
func testDropArtifactsSparesRollout(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	must(t, s.UpsertWorker(ctx, Worker{Name: "w", Addr: "127.0.0.1:1"}))
	var ds []Deployment
	for i := range 10 {
		digest := fmt.Sprint("r", i)
		must(t, s.PutArtifact(ctx, digest, []byte(digest)))
		ds = append(ds, mkDeployment(t, s, "app", digest, "wasm"))
	}
	must(t, s.SetTarget(ctx, "app", ds[0].ID))
	must(t, s.Promote(ctx, "app", ds[0].ID))
	must(t, s.SetTarget(ctx, "app", ds[1].ID))
	must(t, s.Promote(ctx, "app", ds[1].ID)) // live; ds[0] is the previous
	must(t, s.SetCanary(ctx, "app", ds[3].ID, 10))
	must(t, s.PutPlacement(ctx, Placement{Deployment: ds[2].ID, Worker: "w", State: PlacementReady}))
	n, err := s.DropArtifacts(ctx, "app", 2, time.Now().Add(time.Second))
	must(t, err)
	if n != 4 {
		t.Errorf("DropArtifacts = %d, want 4 (r4 to r7)", n)
	}
	for i, d := range ds {
		want := i < 4 || i >= 8 // previous, live, placed, canary; newest 2
		if ok, err := s.HasArtifact(ctx, d.Digest); err != nil || ok != want {
			t.Errorf("artifact of deployment %d (%s): stored %v, %v; want %v", i, d.Digest, ok, err, want)
		}
	}
}

// testDropArtifacts: the artifacts of a component's deployments beyond its
// newest keep go, except those still used by a kept deployment (its own,
// another component's, the live one) or stored too recently.
func testDropArtifacts(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	for _, d := range []string{"a1", "a2", "a3", "shared", "a5", "a6"} {
		must(t, s.PutArtifact(ctx, d, []byte(d)))
	}
	must(t, s.PutArtifact(ctx, "live", []byte("live")))
	// app: live, a1, a2, a3, shared, a2 again (same digest), a5, a6 — oldest first.
	live := mkDeployment(t, s, "app", "live", "wasm")
	must(t, s.SetTarget(ctx, "app", live.ID))
	must(t, s.Promote(ctx, "app", live.ID))
	for _, d := range []string{"a1", "a2", "a3", "shared", "a2", "a5", "a6"} {
		mkDeployment(t, s, "app", d, "wasm")
	}
	mkDeployment(t, s, "other", "shared", "wasm") // other's newest

	if _, err := s.DropArtifacts(ctx, "app", 0, time.Now()); err == nil {
		t.Error("DropArtifacts with keep 0: no error")
	}
	// Stored after storedBefore: nothing may go yet.
	if n, err := s.DropArtifacts(ctx, "app", 3, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("DropArtifacts of fresh artifacts = %d, %v; want 0", n, err)
	}
	// Storing an artifact again renews it (an upload of it under way).
	time.Sleep(2 * time.Millisecond)
	mid := time.Now()
	time.Sleep(2 * time.Millisecond)
	must(t, s.PutArtifact(ctx, "a3", []byte("a3")))
	if n, err := s.DropArtifacts(ctx, "app", 3, mid); err != nil || n != 1 {
		t.Errorf("DropArtifacts before a3 was stored again = %d, %v; want 1 (a1)", n, err)
	}
	n, err := s.DropArtifacts(ctx, "app", 3, time.Now().Add(time.Second))
	must(t, err)
	// Kept: a2, a5, a6 (newest 3), live (live), shared (other's newest).
	// Gone: a1 (above), a3.
	if n != 1 {
		t.Errorf("DropArtifacts = %d, want 1 (a3)", n)
	}
	for d, want := range map[string]bool{"a1": false, "a3": false, "a2": true, "shared": true, "a5": true, "a6": true, "live": true} {
		if ok, err := s.HasArtifact(ctx, d); err != nil || ok != want {
			t.Errorf("HasArtifact(%s) = %v, %v; want %v", d, ok, err, want)
		}
	}
	ds, err := s.Deployments(ctx, "app", 100)
	must(t, err)
	if len(ds) != 8 {
		t.Errorf("%d deployments of app after dropping artifacts, want all 8", len(ds))
	}
}
