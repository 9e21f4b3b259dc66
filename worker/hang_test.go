//go:build unix

package worker

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestHeartbeatSurvivesHungPostgres: with Postgres stopped (SIGSTOP: its
// connections stay open and nothing answers), each heartbeat gives up at
// its deadline and the loop goes on, rather than waiting for ever in the
// first one; once Postgres continues, heartbeats land again.
func TestHeartbeatSurvivesHungPostgres(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	var out testsupport.SyncBuffer
	w, err := New(Config{Name: "w1", DataDir: t.TempDir(), Heartbeat: 100 * time.Millisecond, Resync: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&out, nil))}, st)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Error("Run did not return within 60s of its end")
		}
	})
	seen := func() time.Time {
		ws, err := st.Workers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, wk := range ws {
			if wk.Name == "w1" {
				return wk.SeenAt
			}
		}
		return time.Time{}
	}
	first := seen()
	testsupport.Eventually(t, 60*time.Second, "a first heartbeat", func() bool { return seen().After(first) })

	thaw := pgtest.Freeze(t)
	failures := func() int { return strings.Count(out.String(), "heartbeat failed") }
	testsupport.EventuallyShow(t, 60*time.Second, "heartbeats failing at their deadline while Postgres hangs",
		func() bool { return failures() >= 2 }, out.String)
	if !strings.Contains(out.String(), "deadline exceeded") {
		t.Errorf("the failed heartbeats do not name their deadline:\n%s", out.String())
	}
	thaw()
	thawed := time.Now()
	testsupport.EventuallyShow(t, 60*time.Second, "heartbeats landing again once Postgres continues",
		func() bool { return seen().After(thawed) }, out.String)
}

// TestStartFailsOnHungPostgres: a worker starting while Postgres hangs
// (SIGSTOP) returns from Run with an error saying the store did not
// answer in time and what it was doing, rather than waiting for ever in
// its registration.
func TestStartFailsOnHungPostgres(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	w, err := New(Config{Name: "w1", DataDir: t.TempDir(), Heartbeat: 100 * time.Millisecond, Resync: time.Hour}, st)
	if err != nil {
		t.Fatal(err)
	}
	pgtest.Freeze(t)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "register worker w1") || !strings.Contains(err.Error(), "did not answer within") {
			t.Fatalf("Run while Postgres hangs: %v, want the registration's deadline named", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run still starting 60s after Postgres hung")
	}
}
