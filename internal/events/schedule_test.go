package events

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
)

func TestSchedulerSQLite(t *testing.T) {
	testScheduler(t, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"), 1)
}

func TestSchedulerPostgres(t *testing.T) { testScheduler(t, pgtest.URL(t), 3) }

// testScheduler: each tick is queued once however many executors queue
// it (procs engines on one database, each with its own store as separate
// processes have); ticks missed while down give one catch-up run, not
// one per tick; a schedule that never ran waits for its next tick.
func testScheduler(t *testing.T, url string, procs int) {
	ctx := context.Background()
	sched := []router.Scheduled{{Component: "cron", Schedules: []manifest.Schedule{{Cron: "@every 10s", Path: "/", Method: "POST"}},
		Call: func(int) *router.Call {
			return &router.Call{Component: "cron", Method: "POST", URI: "/fn/cron/", Header: http.Header{}, Source: router.SourceSchedule,
				Timeout: time.Second, Events: manifest.Events{}.WithDefaults()}
		}}}
	var engines []*Engine
	for range procs {
		st, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		e, err := New(Config{Store: st, Schedules: func() []router.Scheduled { return sched }})
		if err != nil {
			t.Fatal(err)
		}
		engines = append(engines, e)
	}
	count := func() int {
		res, err := engines[0].client.JobList(ctx, river.NewJobListParams().Queues("cron").First(1000))
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Jobs)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	states := make([]*scheduler, procs)
	for i := range states {
		states[i] = &scheduler{last: map[string]time.Time{}}
	}
	run := func(now time.Time) {
		for i, e := range engines {
			if err := e.scheduleOnce(ctx, states[i], now); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(t0) // first sight: nothing ran, nothing is due
	if n := count(); n != 0 {
		t.Fatalf("a new schedule queued %d ticks at once", n)
	}
	for s := 1; s <= 30; s++ { // 30 s, every executor looking every second
		run(t0.Add(time.Duration(s) * time.Second))
	}
	if n := count(); n != 3 {
		t.Fatalf("30 s of an @every 10s schedule with %d executors queued %d jobs, want 3", procs, n)
	}
	// Down for 5 minutes: a fresh process (no memory) catches up once.
	fresh := &scheduler{last: map[string]time.Time{}}
	if err := engines[0].scheduleOnce(ctx, fresh, t0.Add(5*time.Minute+5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 4 {
		t.Fatalf("after 5 minutes down, %d jobs, want 3 + one catch-up", n)
	}
	tick, _, err := engines[0].st.LastScheduled(ctx, "cron", sched[0].Schedules[0].Key(0))
	if err != nil || !time.UnixMicro(tick).Equal(t0.Add(5*time.Minute)) {
		t.Errorf("last tick %v, %v; want the latest missed one, %v", time.UnixMicro(tick).UTC(), err, t0.Add(5*time.Minute))
	}
}

func TestLatestDue(t *testing.T) {
	spec, err := manifest.Schedule{Cron: "*/5 * * * *"}.Spec()
	if err != nil {
		t.Fatal(err)
	}
	last := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		now, want time.Time
	}{
		{last.Add(4 * time.Minute), time.Time{}},
		{last.Add(5 * time.Minute), last.Add(5 * time.Minute)},
		{last.Add(17 * time.Minute), last.Add(15 * time.Minute)},
	} {
		if got := latestDue(spec, last, tc.now); !got.Equal(tc.want) {
			t.Errorf("latestDue(%v) = %v, want %v", tc.now, got, tc.want)
		}
	}
	for _, d := range []time.Duration{1, 2, 3, 10} {
		b := backoff(time.Second, int(d))
		want := time.Second << (d - 1)
		if b < want*8/10 || b > want*12/10 {
			t.Errorf("backoff after attempt %d = %v, want %v ±20%%", d, b, want)
		}
	}
	if b := backoff(time.Second, 40); b > manifest.EventMaxBackoff*12/10 {
		t.Errorf("backoff after 40 attempts = %v, want capped", b)
	}
}
