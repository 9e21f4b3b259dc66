package deploymgr

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

func TestPick(t *testing.T) {
	workers := []store.Worker{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}}
	for _, tc := range []struct {
		name        string
		cfg         Config
		runtime     string
		load        map[string]int
		has         []string
		want        []string
		wantLoadOfA int
	}{
		{name: "wasm everywhere", runtime: "wasm", want: []string{"a", "b", "c", "d"}, wantLoadOfA: 1},
		{name: "wasm everywhere but where it is", runtime: "wasm", has: []string{"b", "c"}, want: []string{"a", "d"}, wantLoadOfA: 1},
		{name: "wasm replicas", cfg: Config{WasmReplicas: 2}, runtime: "wasm", load: map[string]int{"a": 3, "b": 1}, want: []string{"c", "d"}, wantLoadOfA: 3},
		{name: "docker least loaded", cfg: Config{DockerReplicas: 1}, runtime: "docker", load: map[string]int{"a": 2, "b": 1, "c": 1, "d": 5}, want: []string{"b"}, wantLoadOfA: 2},
		{name: "docker two replicas, one held", cfg: Config{DockerReplicas: 2}, runtime: "docker", load: map[string]int{"a": 0, "b": 1, "c": 1, "d": 1}, has: []string{"b"}, want: []string{"a"}, wantLoadOfA: 1},
		{name: "docker enough", cfg: Config{DockerReplicas: 1}, runtime: "docker", has: []string{"d"}, want: nil},
		{name: "more replicas than workers", cfg: Config{DockerReplicas: 9}, runtime: "docker", want: []string{"a", "b", "c", "d"}, wantLoadOfA: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.PublicURL = "http://x"
			m := &Manager{cfg: tc.cfg.withDefaults()}
			load := map[string]int{}
			for k, v := range tc.load {
				load[k] = v
			}
			has := map[string]bool{}
			for _, h := range tc.has {
				has[h] = true
			}
			got := m.pick(tc.runtime, workers, load, has)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("pick = %v, want %v", got, tc.want)
			}
			if load["a"] != tc.wantLoadOfA {
				t.Fatalf("load of a = %d, want %d (picks are counted)", load["a"], tc.wantLoadOfA)
			}
		})
	}
}

// TestAutoscaleDocker drives the Docker autoscaler with hit counts in a
// real (SQLite) store: up one replica per round while the rate per replica
// is over the target, no change in the hysteresis band, down one per round
// when the rest would stay under half the target, within the bounds.
func TestAutoscaleDocker(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := New(Config{PublicURL: "http://x", DockerTargetRPS: 1, ScaleCooldown: time.Nanosecond}, st)
	if err != nil {
		t.Fatal(err)
	}
	m.scheduling = time.Now().Add(-time.Hour)
	var workers []store.Worker
	for _, n := range []string{"a", "b", "c"} {
		if err := st.UpsertWorker(ctx, store.Worker{Name: n, Addr: "http://" + n}); err != nil {
			t.Fatal(err)
		}
		workers = append(workers, store.Worker{Name: n})
	}
	if err := st.CreateComponent(ctx, store.Component{Name: "web", Runtime: "docker"}); err != nil {
		t.Fatal(err)
	}
	d, err := st.CreateDeployment(ctx, store.Deployment{Component: "web", Digest: strings.Repeat("a", 64), Runtime: "docker",
		Manifest: []byte(`{"name":"web"}`), Source: "upload", Status: store.StatusReady})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, "web", d.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "a", State: store.PlacementReady}); err != nil {
		t.Fatal(err)
	}
	// 600 hits this minute: 3.3 to 5 requests/s over the 2-3 minutes
	// the autoscaler looks at.
	if err := st.AddHits(ctx, []store.Hits{{Component: "web", Minute: time.Now().UTC().Truncate(time.Minute), Hits: 600}}); err != nil {
		t.Fatal(err)
	}
	replicas := func() []string {
		ps, err := st.Placements(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		var ws []string
		for _, p := range ps {
			ws = append(ws, p.Worker)
		}
		return ws
	}
	round := func(target float64, want string) {
		t.Helper()
		m.cfg.DockerTargetRPS = target
		if err := m.rebalance(ctx, workers); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(replicas(), ","); got != want {
			t.Fatalf("target %v rps: replicas on %q, want %q", target, got, want)
		}
	}
	round(1, "a,b")   // 3.3+ rps on one replica > 1: up
	round(1, "a,b,c") // still over: up
	round(1, "a,b,c") // every live worker has one: the ceiling
	round(3, "a,b,c") // ≤ 1.7 per replica, but two would see ≥ 1.65 ≥ 1.5: band, no change
	round(100, "a,b") // far under: down, the most loaded (ties: last name) first
	round(100, "a")   // down again
	round(100, "a")   // DockerReplicas (1) is the floor
	m.cfg.ScaleCooldown = time.Hour
	m.scaled["web"] = time.Now()
	round(1, "a") // cooling down: no change however busy
}

// TestRunPrunes: the scheduler deletes hit buckets older than the
// retention when it starts, and keeps the recent ones.
func TestRunPrunes(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := st.CreateComponent(ctx, store.Component{Name: "web", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	recent := time.Now().UTC().Truncate(time.Minute)
	if err := st.AddHits(ctx, []store.Hits{{Component: "web", Minute: recent.Add(-48 * time.Hour), Hits: 1}, {Component: "web", Minute: recent, Hits: 2}}); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{PublicURL: "http://x", Retention: 24 * time.Hour}, st)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hits, err := st.Stats(ctx, "web", recent.Add(-72*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) == 1 && hits[0].Hits == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buckets after the scheduler started: %+v, want only the recent one", hits)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// outageStore is a store that is away while down is set: the scheduler's
// first read fails, as it does while Postgres restarts.
type outageStore struct {
	*store.Store
	down bool
}

func (s *outageStore) DeploymentsByStatus(ctx context.Context, statuses ...string) ([]store.Deployment, error) {
	if s.down {
		return nil, errors.New("connection refused")
	}
	return s.Store.DeploymentsByStatus(ctx, statuses...)
}

// TestStoreOutageKeepsPlacements: after a store outage longer than the
// worker timeout every heartbeat is that old, yet no worker is judged dead
// and no placement removed until the store has been back a WorkerTimeout
// (workers heartbeat again meanwhile); a worker still silent then loses
// its placement.
func TestStoreOutageKeepsPlacements(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	os := &outageStore{Store: st}
	m, err := New(Config{PublicURL: "http://x", WorkerTimeout: 10 * time.Second}, os)
	if err != nil {
		t.Fatal(err)
	}
	m.scheduling = time.Now().Add(-time.Hour) // scheduling for long
	beat := time.Now().Add(-20 * time.Second) // the last beats before a 20 s outage
	for _, n := range []string{"a", "b"} {
		if err := st.UpsertWorker(ctx, store.Worker{Name: n, Addr: "http://" + n, StartedAt: beat, SeenAt: beat}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateComponent(ctx, store.Component{Name: "web", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	d, err := st.CreateDeployment(ctx, store.Deployment{Component: "web", Runtime: "wasm", Digest: strings.Repeat("a", 64), Manifest: []byte(`{}`), Status: store.StatusReady})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetTarget(ctx, "web", d.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, "web", d.ID); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: n, State: store.PlacementReady}); err != nil {
			t.Fatal(err)
		}
	}
	placed := func() string {
		ps, err := st.Placements(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		var ws []string
		for _, p := range ps {
			ws = append(ws, p.Worker)
		}
		return strings.Join(ws, ",")
	}

	os.down = true
	if err := m.schedule(ctx); err == nil {
		t.Fatal("schedule with the store away succeeded")
	}
	os.down = false
	// Back: a beats again first, b's beat is still the old one.
	if err := st.Heartbeat(ctx, "a", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.schedule(ctx); err != nil {
		t.Fatal(err)
	}
	if got := placed(); got != "a,b" {
		t.Fatalf("placements right after the outage: %q, want a,b (no worker judged before it could beat)", got)
	}
	// A WorkerTimeout later b has still not beaten: it is dead.
	m.scheduling = time.Now().Add(-11 * time.Second)
	if err := m.schedule(ctx); err != nil {
		t.Fatal(err)
	}
	if got := placed(); got != "a" {
		t.Fatalf("placements once the store was back a WorkerTimeout: %q, want a (b never beat again)", got)
	}
}
