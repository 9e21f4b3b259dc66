package events_test

import (
	"bytes"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// deployAs deploys the flaky module as component name with toml's
// [events] (toml names no component) and waits until it serves.
func (s *spine) deployAs(name, toml string) {
	s.t.Helper()
	files := map[string][]byte{"velo.toml": []byte("name = \"" + name + "\"\nmodule = \"flaky.wasm\"\n" + toml), "flaky.wasm": flakyWasm}
	if _, err := s.c.Deploy(s.ctx, name, bytes.NewReader(archivetest.TarGz(s.t, files))); err != nil {
		s.t.Fatal(err)
	}
	testsupport.Eventually(s.t, 30*time.Second, name+" live", func() bool {
		res, err := http.Get(s.n.URL + "/fn/" + name + "/up")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
}

func (s *spine) counts(name string) api.EventCounts {
	s.t.Helper()
	var c api.Component
	if code := s.api("GET", "/components/"+name, &c); code != 200 || c.Events == nil {
		s.t.Fatalf("GET /components/%s: %d, events %v", name, code, c.Events)
	}
	return *c.Events
}

func TestPausedHoldsQueueSQLite(t *testing.T)   { testPausedHoldsQueue(t, "") }
func TestPausedHoldsQueuePostgres(t *testing.T) { testPausedHoldsQueue(t, pgtest.URL(t)) }

// testPausedHoldsQueue: calls queued for a paused component wait, none
// attempted however long it stays paused, and all run once it is resumed.
func testPausedHoldsQueue(t *testing.T, db string) {
	s := start(t, db, flakyToml)
	if code := s.api("POST", "/components/flaky/pause", nil); code != 200 && code != 204 {
		t.Fatalf("pause: %d", code)
	}
	before := s.settledTotals("flaky")
	var ids []int64
	for i := range 3 {
		id, res := s.post(fmt.Sprintf("/fn/flaky/held%d?ok=1", i), "x")
		if id == 0 {
			t.Fatalf("queueing for a paused component: %d", res.StatusCode)
		}
		ids = append(ids, id)
	}
	// The engine takes them up without running them: they show queued
	// (River has them running for the moment it holds them), no attempt
	// recorded, no hit. Several of its one-second holds pass.
	time.Sleep(4 * time.Second)
	for _, id := range ids {
		if inv := s.invocation(id); inv.State != "queued" || len(inv.Attempts) != 0 {
			t.Errorf("invocation %d while paused: state %s, %d attempts %+v", id, inv.State, inv.Attempt, inv.Attempts)
		}
	}
	if after := s.settledTotals("flaky"); after != before {
		t.Errorf("the paused component was called: hits %v → %v", before, after)
	}
	if c := s.counts("flaky"); c.Queued != 3 || c.Running != 0 {
		t.Errorf("counts while paused: %+v, want 3 queued", c)
	}
	if code := s.api("POST", "/components/flaky/resume", nil); code != 200 && code != 204 {
		t.Fatalf("resume: %d", code)
	}
	for _, id := range ids {
		if inv := s.waitState(id, "succeeded"); inv.Attempt != 1 {
			t.Errorf("invocation %d after resume: %d attempts, want 1", id, inv.Attempt)
		}
	}
}

func TestDeleteDropsQueueSQLite(t *testing.T)   { testDeleteDropsQueue(t, "") }
func TestDeleteDropsQueuePostgres(t *testing.T) { testDeleteDropsQueue(t, pgtest.URL(t)) }

// testDeleteDropsQueue: deleting a component drops its queued calls: they
// are gone from the API and the queue, and a new component of the same
// name never runs them.
func testDeleteDropsQueue(t *testing.T, db string) {
	s := start(t, db, flakyToml)
	if code := s.api("POST", "/components/flaky/pause", nil); code != 200 && code != 204 {
		t.Fatalf("pause: %d", code)
	}
	var ids []int64
	for i := range 3 {
		id, res := s.post(fmt.Sprintf("/fn/flaky/gone%d?ok=1", i), "x")
		if id == 0 {
			t.Fatalf("queue: %d", res.StatusCode)
		}
		ids = append(ids, id)
	}
	if c := s.counts("flaky"); c.Queued+c.Running != 3 {
		t.Fatalf("counts before delete: %+v, want 3 queued", c)
	}
	if code := s.api("DELETE", "/components/flaky", nil); code != 200 && code != 204 {
		t.Fatalf("delete: %d", code)
	}
	for _, id := range ids {
		if code := s.api("GET", fmt.Sprintf("/invocations/%d", id), nil); code != 404 {
			t.Errorf("invocation %d of the deleted component: %d, want 404", id, code)
		}
	}
	if n, err := s.n.Store.QueuedDepth(s.ctx, store.EventQueue("flaky")); err != nil || n != 0 {
		t.Errorf("queue depth after delete: %d %v, want 0", n, err)
	}
	// A new flaky: its own calls run, the old ones never do.
	s.deploy(flakyToml)
	before := s.settledTotals("flaky")
	id, _ := s.post("/fn/flaky/new?ok=1", "x")
	s.waitState(id, "succeeded")
	time.Sleep(2 * time.Second)
	if after := s.settledTotals("flaky"); after[0]-before[0] != 1 {
		t.Errorf("the new flaky got %d calls, want only its own", after[0]-before[0])
	}
	var list []api.Invocation
	if code := s.api("GET", "/components/flaky/invocations", &list); code != 200 || len(list) != 1 || list[0].ID != id {
		t.Errorf("the new flaky's invocations: %d %+v", code, list)
	}
}

// TestFairQueues: one component's deep backlog does not starve another's:
// the other's calls complete while most of the backlog still waits.
func TestFairQueues(t *testing.T) {
	s := start(t, pgtest.URL(t), flakyToml)
	// 150 calls of at least 300 ms each, one at a time: 45 s of work at
	// the very least.
	s.deployAs("busy", "[events]\nconcurrency = 1\n")
	s.deployAs("quiet", "[events]\nconcurrency = 1\n")
	const backlog = 150
	// Busy's calls done, counted by the router (not by the queue).
	base := s.n.Router.Totals()["busy"][0]
	done := func() int64 { return s.n.Router.Totals()["busy"][0] - base }
	for i := range backlog {
		if id, res := s.post(fmt.Sprintf("/fn/busy/slow%d?ok=1&ms=300", i), ""); id == 0 {
			t.Fatalf("queue busy call %d: %d", i, res.StatusCode)
		}
	}
	done0 := done()
	deep := backlog - done0
	if deep < 20 {
		t.Fatalf("busy's backlog is only %d deep", deep)
	}
	var ids []int64
	for i := range 3 {
		id, _ := s.post(fmt.Sprintf("/fn/quiet/q%d?ok=1", i), "")
		ids = append(ids, id)
	}
	for _, id := range ids {
		s.waitState(id, "succeeded")
	}
	if meanwhile := done() - done0; meanwhile > deep/2 {
		t.Errorf("busy ran %d of its %d waiting calls before quiet's 3 were done; want fewer than half", meanwhile, deep)
	}
	t.Logf("busy: %d waiting when quiet's calls came, %d of them run when they were done", deep, done()-done0)
}

// TestPostgresRestart: Postgres stops (fast shutdown, connections cut)
// while calls are queued and one runs, and comes back: no call is lost,
// all succeed after.
func TestPostgresRestart(t *testing.T) {
	s := start(t, pgtest.URL(t), flakyToml)
	s.deployAs("slow", "timeout = \"3s\"\n[events]\nconcurrency = 1\nbackoff = \"100ms\"\nmax_attempts = 10\n")
	var ids []int64
	for i := range 8 {
		id, res := s.post(fmt.Sprintf("/fn/slow/q%d?ok=1&ms=400", i), "x")
		if id == 0 {
			t.Fatalf("queue call %d: %d", i, res.StatusCode)
		}
		ids = append(ids, id)
	}
	testsupport.Eventually(t, 30*time.Second, "the first call running", func() bool {
		return s.invocation(ids[0]).State != "queued"
	})
	pgtest.Stop(t)
	restarted := false
	defer func() {
		if !restarted {
			pgtest.Start(t)
		}
	}()
	// Down for a while: the engine's polls and River's fetches fail.
	time.Sleep(3 * time.Second)
	pgtest.Start(t)
	restarted = true
	for _, id := range ids {
		testsupport.EventuallyShow(t, 60*time.Second, fmt.Sprintf("invocation %d succeeded", id), func() bool {
			var inv api.Invocation
			return s.api("GET", fmt.Sprintf("/invocations/%d", id), &inv) == 200 && inv.State == "succeeded"
		}, func() string {
			var inv api.Invocation
			code := s.api("GET", fmt.Sprintf("/invocations/%d", id), &inv)
			return fmt.Sprintf("%d %+v", code, inv)
		})
	}
}
