package store

import (
	"context"
	"reflect"
	"testing"
	"time"
)

// testRollouts: a canary appears in its component's route with the workers
// holding a ready placement of it, and leaves it when it ends or is
// promoted; Promote records the deployment it replaced.
func testRollouts(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	v1 := mkDeployment(t, s, "app", "a", "wasm")
	v2 := mkDeployment(t, s, "app", "b", "wasm")
	ov := mkDeployment(t, s, "other", "o", "wasm")
	for _, w := range []string{"w2", "w1", "w3"} {
		must(t, s.UpsertWorker(ctx, Worker{Name: w, Addr: "http://" + w}))
	}
	must(t, s.Promote(ctx, "app", v1.ID))
	if ro, err := s.Rollout(ctx, "app"); err != nil || ro.Previous != 0 || ro.Canary != 0 {
		t.Fatalf("rollout after the first promotion = %+v, %v; want none previous", ro, err)
	}
	must(t, s.PutPlacement(ctx, Placement{Deployment: v1.ID, Worker: "w1", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: v2.ID, Worker: "w2", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: v2.ID, Worker: "w1", State: PlacementReady}))
	must(t, s.PutPlacement(ctx, Placement{Deployment: v2.ID, Worker: "w3", State: PlacementPending}))

	wantErr(t, "canary of another component", s.SetCanary(ctx, "app", ov.ID, 10), ErrNotFound)
	must(t, s.SetCanary(ctx, "app", v2.ID, 10))
	rs, err := s.Routes(ctx)
	must(t, err)
	if len(rs) != 2 || rs[0].Component != "app" || rs[1].Component != "other" {
		t.Fatalf("routes = %+v", rs)
	}
	r := rs[0]
	if r.Deployment != v1.ID || len(r.Workers) != 1 || r.Canary == nil {
		t.Fatalf("route app = %+v, want live v1 on w1 with a canary", r)
	}
	if c := r.Canary; c.Deployment != v2.ID || c.Weight != 10 || c.Runtime != "wasm" || len(c.Workers) != 2 ||
		c.Workers[0].Name != "w1" || c.Workers[1].Name != "w2" || c.Workers[1].Addr != "http://w2" {
		t.Errorf("canary = %+v, want v2 at 10 on ready w1, w2", c)
	}
	if rs[1].Canary != nil {
		t.Errorf("other has a canary: %+v", rs[1].Canary)
	}
	if one, ok, err := s.RoutesOf(ctx, "app"); err != nil || !ok || !reflect.DeepEqual(one, rs[0]) {
		t.Errorf("RoutesOf(app) = %+v, %v, %v; Routes has %+v", one, ok, err, rs[0])
	}
	if ro, _ := s.Rollout(ctx, "app"); ro.Canary != v2.ID || ro.Weight != 10 {
		t.Errorf("rollout = %+v", ro)
	}

	before := time.Now().Add(-time.Second)
	must(t, s.Promote(ctx, "app", v2.ID))
	ro, err := s.Rollout(ctx, "app")
	must(t, err)
	if ro.Canary != 0 || ro.Weight != 0 || ro.Previous != v1.ID || ro.PromotedAt.Before(before) {
		t.Errorf("rollout after promoting the canary = %+v, want no canary, previous v1 (#%d), promoted now", ro, v1.ID)
	}
	rs, err = s.Routes(ctx)
	must(t, err)
	if rs[0].Deployment != v2.ID || rs[0].Canary != nil || len(rs[0].Workers) != 2 {
		t.Errorf("route after promotion = %+v", rs[0])
	}
	// A canary that ends leaves the route.
	must(t, s.SetCanary(ctx, "app", v1.ID, 50))
	if rs, _ := s.Routes(ctx); rs[0].Canary == nil || rs[0].Canary.Weight != 50 {
		t.Errorf("canary v1 at 50: %+v", rs[0].Canary)
	}
	must(t, s.SetCanary(ctx, "app", 0, 0))
	if rs, _ := s.Routes(ctx); rs[0].Canary != nil {
		t.Errorf("ended canary still routed: %+v", rs[0].Canary)
	}
	all, err := s.Rollouts(ctx)
	must(t, err)
	if len(all) != 1 || all[0].Component != "app" || all[0].Previous != v1.ID {
		t.Errorf("Rollouts = %+v", all)
	}
	// What automatic rollback watches: promotions past a previous
	// deployment since a time, not a first promotion.
	must(t, s.Promote(ctx, "other", ov.ID))
	if got, err := s.PromotedRollouts(ctx, before); err != nil || len(got) != 1 || got[0] != all[0] {
		t.Errorf("PromotedRollouts(since before) = %+v, %v; want app's alone: %+v", got, err, all[0])
	}
	if got, err := s.PromotedRollouts(ctx, time.Now().Add(time.Minute)); err != nil || len(got) != 0 {
		t.Errorf("PromotedRollouts(since later) = %+v, %v; want none", got, err)
	}
}

// testDeploymentHits: hits with a deployment count for the component and
// for the deployment, each on its own.
func testDeploymentHits(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	v1 := mkDeployment(t, s, "app", "a", "wasm")
	v2 := mkDeployment(t, s, "app", "b", "wasm")
	m := time.Now().UTC().Truncate(time.Minute)
	must(t, s.AddHits(ctx, []Hits{
		{Component: "app", Deployment: v1.ID, Minute: m, Hits: 90, Errors: 1, Latency: []uint64{0, 3}},
		{Component: "app", Deployment: v2.ID, Minute: m, Hits: 10, Errors: 4},
		{Component: "app", Minute: m, Hits: 2, Errors: 2}, // the router's own 503s: no deployment
		{Component: "app", Deployment: 999999, Minute: m, Hits: 5},
	}))
	must(t, s.AddHits(ctx, []Hits{{Component: "app", Deployment: v2.ID, Minute: m, Hits: 5, Errors: 1}}))
	comp, err := s.Stats(ctx, "app", m)
	must(t, err)
	if len(comp) != 1 || comp[0].Hits != 112 || comp[0].Errors != 8 {
		t.Errorf("component stats = %+v, want 112 hits 8 errors", comp)
	}
	for _, tc := range []struct {
		d            int64
		hits, errors int64
	}{{v1.ID, 90, 1}, {v2.ID, 15, 5}} {
		st, err := s.DeploymentStats(ctx, tc.d, m)
		must(t, err)
		if len(st) != 1 || st[0].Hits != tc.hits || st[0].Errors != tc.errors || st[0].Component != "app" || st[0].Deployment != tc.d {
			t.Errorf("stats of deployment %d = %+v, want %d hits %d errors", tc.d, st, tc.hits, tc.errors)
		}
	}
	if st, _ := s.DeploymentStats(ctx, v1.ID, m); len(st) == 1 && nonZero(st[0].Latency)[1] != 3 {
		t.Errorf("latency of v1 = %v", st[0].Latency)
	}
	_, _, err = s.Prune(ctx, m.Add(time.Minute), m)
	must(t, err)
	if st, _ := s.DeploymentStats(ctx, v1.ID, m.Add(-time.Hour)); len(st) != 0 {
		t.Errorf("pruned deployment stats left: %+v", st)
	}
}
