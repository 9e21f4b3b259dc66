package store

import (
	"context"
	"errors"
	"testing"
	"time"
)

func testRouters(t *testing.T, s *Store) {
	ctx := context.Background()
	v0, err := s.RouteVersion(ctx)
	must(t, err)
	v1, err := s.BumpRouteVersion(ctx)
	must(t, err)
	if v1 != v0+1 {
		t.Fatalf("bumped version %d after %d", v1, v0)
	}
	if got, err := s.RouteVersion(ctx); err != nil || got != v1 {
		t.Fatalf("RouteVersion = %d, %v; want %d", got, err, v1)
	}
	if rs, err := s.Routers(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("Routers before any report = %v, %v", rs, err)
	}
	old := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	must(t, s.ReportRouter(ctx, RouterState{ID: "b", Addr: "127.0.0.1:2", Applied: v1}))
	must(t, s.ReportRouter(ctx, RouterState{ID: "a", Addr: "127.0.0.1:1", SeenAt: old, Applied: v0}))
	// A late report of an older table keeps the newer applied version.
	must(t, s.ReportRouter(ctx, RouterState{ID: "b", Addr: "127.0.0.1:2", Applied: v0}))
	rs, err := s.Routers(ctx)
	must(t, err)
	if len(rs) != 2 || rs[0].ID != "a" || rs[1].ID != "b" {
		t.Fatalf("Routers = %+v", rs)
	}
	if rs[0].Applied != v0 || !rs[0].SeenAt.Equal(old) || rs[0].Addr != "127.0.0.1:1" {
		t.Fatalf("router a = %+v", rs[0])
	}
	if rs[1].Applied != v1 {
		t.Fatalf("router b applied %d, want %d (it went back)", rs[1].Applied, v1)
	}
	must(t, s.PruneRouters(ctx, time.Now().Add(-time.Minute)))
	rs, err = s.Routers(ctx)
	must(t, err)
	if len(rs) != 1 || rs[0].ID != "b" {
		t.Fatalf("after pruning = %+v", rs)
	}
	// A promotion bumps the version in its own transaction; one that
	// fails leaves the version as it was.
	must(t, s.CreateComponent(ctx, Component{Name: "versioned", Runtime: "wasm"}))
	d, err := s.CreateDeployment(ctx, Deployment{Component: "versioned", Digest: "sha256:v", Runtime: "wasm", Source: "upload", Status: StatusPreparing})
	must(t, err)
	v2, err := s.PromoteVersioned(ctx, "versioned", d.ID)
	must(t, err)
	if v2 != v1+1 {
		t.Fatalf("PromoteVersioned returned version %d after %d", v2, v1)
	}
	if c, err := s.Component(ctx, "versioned"); err != nil || c.Live != d.ID {
		t.Fatalf("after PromoteVersioned: %+v, %v", c, err)
	}
	if got, err := s.Deployment(ctx, d.ID); err != nil || got.Status != StatusReady {
		t.Fatalf("promoted deployment %+v, %v; want ready", got, err)
	}
	if _, err := s.PromoteVersioned(ctx, "versioned", d.ID+1000); !errors.Is(err, ErrNotFound) {
		t.Fatalf("promoting a missing deployment: %v, want ErrNotFound", err)
	}
	if got, err := s.RouteVersion(ctx); err != nil || got != v2 {
		t.Fatalf("version after a failed promotion = %d, %v; want %d", got, err, v2)
	}
	must(t, s.DeleteRouter(ctx, "b"))
	if err := s.DeleteRouter(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting a gone router: %v", err)
	}
}
