package store

import (
	"context"
	"testing"
	"time"
)

func testGateway(t *testing.T, s *Store) {
	ctx := context.Background()
	wantErr(t, "CreateAPIKey for a missing component",
		s.CreateAPIKey(ctx, APIKey{ID: "k0", Component: "ghost", Label: "x", Hash: "h0"}), ErrNotFound)
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	must(t, s.CreateAPIKey(ctx, APIKey{ID: "k1", Component: "app", Label: "ci", Hash: "h1"}))
	must(t, s.CreateAPIKey(ctx, APIKey{ID: "k2", Component: "other", Label: "", Hash: "h2"}))
	wantErr(t, "CreateAPIKey with a taken hash",
		s.CreateAPIKey(ctx, APIKey{ID: "k3", Component: "app", Hash: "h1"}), ErrConflict)
	keys, err := s.APIKeys(ctx, "app")
	must(t, err)
	if len(keys) != 1 || keys[0].ID != "k1" || keys[0].Label != "ci" || keys[0].Hash != "h1" || keys[0].CreatedAt.IsZero() {
		t.Fatalf("APIKeys(app) = %+v", keys)
	}
	all, err := s.APIKeys(ctx, "")
	must(t, err)
	if len(all) != 2 || all[0].Component != "app" || all[1].Component != "other" {
		t.Fatalf("APIKeys() = %+v", all)
	}
	wantErr(t, "DeleteAPIKey of another component's key", s.DeleteAPIKey(ctx, "app", "k2"), ErrNotFound)
	must(t, s.DeleteAPIKey(ctx, "app", "k1"))
	wantErr(t, "DeleteAPIKey twice", s.DeleteAPIKey(ctx, "app", "k1"), ErrNotFound)
	must(t, s.DeleteComponent(ctx, "other"))
	if all, _ := s.APIKeys(ctx, ""); len(all) != 0 {
		t.Fatalf("keys left after their component went: %+v", all)
	}

	d, err := s.CreateDeployment(ctx, Deployment{Component: "app", Digest: "d", Runtime: "wasm", Manifest: []byte("{}"), Status: StatusPending})
	must(t, err)
	if doc, err := s.OpenAPI(ctx, d.ID); err != nil || doc != nil {
		t.Fatalf("OpenAPI of a deployment without one = %q, %v", doc, err)
	}
	must(t, s.SetOpenAPI(ctx, d.ID, []byte(`{"openapi":"3.0.3"}`)))
	if doc, err := s.OpenAPI(ctx, d.ID); err != nil || string(doc) != `{"openapi":"3.0.3"}` {
		t.Fatalf("OpenAPI = %q, %v", doc, err)
	}
	_, err = s.OpenAPI(ctx, d.ID+100)
	wantErr(t, "OpenAPI of a missing deployment", err, ErrNotFound)

	t0 := time.Now().Add(-time.Minute)
	must(t, s.AddRateUsage(ctx, []RateUsage{
		{Router: "r1", Component: "app", Client: "1.2.3.4", Used: 5, At: t0},
		{Router: "r1", Component: "app", Client: "5.6.7.8", Used: 2},
		{Router: "r2", Component: "app", Client: "1.2.3.4", Used: 7},
	}))
	got, err := s.RateUsageSince(ctx, "r2", t0.Add(time.Second), 100)
	must(t, err)
	if len(got) != 1 || got[0].Router != "r1" || got[0].Client != "5.6.7.8" || got[0].Used != 2 || got[0].ID == 0 {
		t.Fatalf("RateUsageSince(r2) = %+v", got)
	}
	got, _ = s.RateUsageSince(ctx, "r3", t0, 100)
	if len(got) != 3 || got[0].ID >= got[1].ID {
		t.Fatalf("RateUsageSince(r3) = %+v", got)
	}
	n, err := s.PruneRateUsage(ctx, t0.Add(time.Second))
	if err != nil || n != 1 {
		t.Fatalf("PruneRateUsage = %d, %v", n, err)
	}
}
