package store

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/pgtest"
)

// TestTryLeaderPostgres: one session holds the lock at a time; it moves
// when the holder releases it or its process's connection goes away.
func TestTryLeaderPostgres(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	a, b := openStore(t, url), openStore(t, url)
	la, ok, err := a.TryLeader(ctx, 42)
	if err != nil || !ok {
		t.Fatalf("first TryLeader: ok=%v err=%v", ok, err)
	}
	if _, ok, err := b.TryLeader(ctx, 42); err != nil || ok {
		t.Fatalf("second TryLeader while held: ok=%v err=%v", ok, err)
	}
	if lb, ok, err := b.TryLeader(ctx, 43); err != nil || !ok {
		t.Fatalf("another key: ok=%v err=%v", ok, err)
	} else {
		lb.Release()
	}
	la.Release()
	la.Release() // twice is fine
	select {
	case <-la.Lost():
	default:
		t.Fatal("Lost not closed after Release")
	}
	lb, ok, err := b.TryLeader(ctx, 42)
	if err != nil || !ok {
		t.Fatalf("TryLeader after release: ok=%v err=%v", ok, err)
	}
	defer lb.Release()

	// Killing the holder's session (as when its process dies) frees the
	// lock for others and tells the holder its lease is lost.
	c := openStore(t, url)
	if _, err := c.db.exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'velo-leader' AND datname = current_database()`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lb.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("lease not reported lost after its session was terminated")
	}
	lc, ok, err := c.TryLeader(ctx, 42)
	if err != nil || !ok {
		t.Fatalf("TryLeader after the holder's session died: ok=%v err=%v", ok, err)
	}
	lc.Release()
}

func TestTryLeaderSQLite(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "v.db"))
	l, ok, err := s.TryLeader(context.Background(), 42)
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	l.Release()
}

// TestPlaceDeploymentRace: many schedulers claiming the same pending
// deployment at once place it exactly once.
func TestPlaceDeploymentRace(t *testing.T) {
	for _, engine := range []string{EnginePostgres, EngineSQLite} {
		t.Run(engine, func(t *testing.T) {
			url := filepath.Join(t.TempDir(), "v.db")
			if engine == EnginePostgres {
				url = pgtest.URL(t)
			}
			ctx := context.Background()
			s := openStore(t, url)
			mkComponent(t, s, "hello")
			must(t, s.UpsertWorker(ctx, Worker{Name: "w1", Addr: "http://w1"}))
			must(t, s.UpsertWorker(ctx, Worker{Name: "w2", Addr: "http://w2"}))
			for round := range 5 {
				d := mkDeployment(t, s, "hello", strings.Repeat("a", 64), "wasm")
				var wins atomic.Int64
				var wg sync.WaitGroup
				for g := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						st := s
						if engine == EnginePostgres && g%2 == 1 {
							st = openStore(t, url) // another process's pool
						}
						ok, err := st.PlaceDeployment(ctx, d.ID, []string{"w1", "w2"})
						if err != nil {
							t.Error(err)
						}
						if ok {
							wins.Add(1)
						}
					}()
				}
				wg.Wait()
				if wins.Load() != 1 {
					t.Fatalf("round %d: %d schedulers placed the deployment, want 1", round, wins.Load())
				}
				got, err := s.Deployment(ctx, d.ID)
				must(t, err)
				ps, err := s.Placements(ctx, d.ID)
				must(t, err)
				if got.Status != StatusPreparing || len(ps) != 2 {
					t.Fatalf("after placing: status %s, %d placements", got.Status, len(ps))
				}
			}
			all, err := s.AllPlacements(ctx)
			must(t, err)
			if len(all) != 10 {
				t.Fatalf("AllPlacements: %d, want 10", len(all))
			}
		})
	}
}
