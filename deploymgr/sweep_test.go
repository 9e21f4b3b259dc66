package deploymgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// sweepCountingStore is a real store that counts the reads of every
// component, placement and rollout: what a full sweep costs.
type sweepCountingStore struct {
	*store.Store
	full atomic.Int64
}

func (s *sweepCountingStore) Components(ctx context.Context) ([]store.Component, error) {
	s.full.Add(1)
	return s.Store.Components(ctx)
}

func (s *sweepCountingStore) AllPlacements(ctx context.Context) ([]store.Placement, error) {
	s.full.Add(1)
	return s.Store.AllPlacements(ctx)
}

func (s *sweepCountingStore) Rollouts(ctx context.Context) ([]store.Rollout, error) {
	s.full.Add(1)
	return s.Store.Rollouts(ctx)
}

// fakeWorker prepares every placement on worker name as soon as a note
// names it, as a worker does, until ctx is done.
func fakeWorker(ctx context.Context, t *testing.T, st *store.Store, name string) <-chan struct{} {
	notes, err := st.Listen(ctx, store.ChannelPlacements)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := range notes {
			var ps []store.Placement
			var err error
			if d := n.Deployment(); d != 0 {
				ps, err = st.Placements(ctx, d)
			} else {
				ps, err = st.WorkerPlacements(ctx, name)
			}
			for _, p := range ps {
				if p.Worker != name || p.State != store.PlacementPending || err != nil {
					continue
				}
				p.State = store.PlacementReady
				if err = st.PutPlacement(ctx, p); err == nil {
					err = st.Notify(ctx, store.PlacementsChanged(p.Deployment))
				}
			}
			if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrNotFound) {
				t.Errorf("fake worker: %v", err)
			}
		}
	}()
	return done
}

// TestDeploysReadWhatChanged: once the scheduler has swept at start,
// deploys of new components and redeploys of one are placed, promoted and
// their old versions retired (a Grace later) without it reading every
// component, placement or rollout again: it looks at what the notes name,
// so a deploy costs the same at ten components and at ten thousand.
func TestDeploysReadWhatChanged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	st := &sweepCountingStore{Store: raw}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(raw.UpsertWorker(ctx, store.Worker{Name: "w1", Addr: "http://w1", StartedAt: time.Now(), SeenAt: time.Now()}))
	// WorkerTimeout: no worker is judged during the test, so the live
	// workers do not change.
	m, err := New(Config{PublicURL: "http://x", WorkerTimeout: time.Hour, Sweep: time.Hour, Grace: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}, st)
	must(err)
	workerDone := fakeWorker(ctx, t, raw, "w1")
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Error(err)
		}
		<-workerDone
	}()

	deploy := func(name string) int64 {
		t.Helper()
		if _, err := raw.Component(ctx, name); errors.Is(err, store.ErrNotFound) {
			must(raw.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}))
		}
		d, err := raw.CreateDeployment(ctx, store.Deployment{Component: name, Runtime: "wasm", Digest: strings.Repeat("a", 64),
			Manifest: []byte(`{}`), Source: SourceUpload, Status: store.StatusPending})
		must(err)
		must(raw.SetTarget(ctx, name, d.ID))
		must(raw.Notify(ctx, store.DeploymentChanged(d.ID)))
		return d.ID
	}
	live := func(name string, d int64) func() bool {
		return func() bool {
			c, err := raw.Component(ctx, name)
			return err == nil && c.Live == d
		}
	}
	placedOn := func(d int64) int {
		ps, err := raw.Placements(ctx, d)
		must(err)
		return len(ps)
	}

	for i := range 20 {
		name := fmt.Sprintf("c%d", i)
		testsupport.Eventually(t, 30*time.Second, name+" live", live(name, deploy(name)))
	}
	atStart := st.full.Load()
	if atStart == 0 {
		t.Fatal("the scheduler never swept at start")
	}

	var old []int64
	for i := 20; i < 40; i++ {
		name := fmt.Sprintf("c%d", i)
		testsupport.Eventually(t, 30*time.Second, name+" live", live(name, deploy(name)))
		if i%5 == 0 {
			c0, err := raw.Component(ctx, "c0")
			must(err)
			old = append(old, c0.Live)
			testsupport.Eventually(t, 30*time.Second, "c0 redeployed", live("c0", deploy("c0")))
		}
	}
	for _, d := range old {
		testsupport.Eventually(t, 30*time.Second, fmt.Sprintf("old deployment %d of c0 retired", d), func() bool { return placedOn(d) == 0 })
	}
	if n := st.full.Load() - atStart; n != 0 {
		t.Errorf("%d reads of every component, placement or rollout for 24 deploys, want none after the start", n)
	}
}

// slowPassStore holds the scheduler's next pass at its first read while
// hold is set, until release is closed.
type slowPassStore struct {
	*sweepCountingStore
	hold    atomic.Bool
	held    chan struct{} // closed when a pass is held
	release chan struct{}
}

func (s *slowPassStore) DeploymentsByStatus(ctx context.Context, statuses ...string) ([]store.Deployment, error) {
	if s.hold.CompareAndSwap(true, false) {
		close(s.held)
		<-s.release
	}
	return s.sweepCountingStore.DeploymentsByStatus(ctx, statuses...)
}

// TestRouteNotesDuringLongPass: more routes notes than a listener holds,
// arriving while a scheduler pass takes long (as deploys at thousands of
// components do), are read as they come: none is lost, so none costs a
// full sweep of every component and placement.
func TestRouteNotesDuringLongPass(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	raw, err := store.Open(ctx, filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	st := &slowPassStore{sweepCountingStore: &sweepCountingStore{Store: raw}, held: make(chan struct{}), release: make(chan struct{})}
	if err := raw.UpsertWorker(ctx, store.Worker{Name: "w1", Addr: "http://w1", StartedAt: time.Now(), SeenAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{PublicURL: "http://x", WorkerTimeout: time.Hour, Sweep: time.Hour, Grace: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}, st)
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Error(err)
		}
	}()
	testsupport.Eventually(t, 30*time.Second, "the sweep at start", func() bool { return st.full.Load() > 0 })
	// The start's passes are over once a deployment is placed.
	if err := raw.CreateComponent(ctx, store.Component{Name: "c", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	deploy := func() int64 {
		t.Helper()
		d, err := raw.CreateDeployment(ctx, store.Deployment{Component: "c", Runtime: "wasm", Digest: strings.Repeat("a", 64),
			Manifest: []byte(`{}`), Source: SourceUpload, Status: store.StatusPending})
		if err != nil {
			t.Fatal(err)
		}
		if err := raw.Notify(ctx, store.DeploymentChanged(d.ID)); err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	placed := func(d int64) func() bool {
		return func() bool { ps, err := raw.Placements(ctx, d); return err == nil && len(ps) > 0 }
	}
	testsupport.Eventually(t, 30*time.Second, "first deployment placed", placed(deploy()))
	atStart := st.full.Load()

	st.hold.Store(true)
	d := deploy() // its note starts the pass that is held
	select {
	case <-st.held:
	case <-time.After(30 * time.Second):
		t.Fatal("no pass started")
	}
	// Paced as deploys send them (the hub drops the oldest of a
	// listener 64 behind, whoever it is).
	for i := range 150 {
		if err := raw.Notify(ctx, store.RoutesChangedFor(fmt.Sprintf("n%d", i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Millisecond)
	}
	close(st.release)
	testsupport.Eventually(t, 30*time.Second, "deployment placed after the held pass", placed(d))
	// The 150 components named are looked at sweepEvery after their
	// notes; a lost note would have asked for a full sweep by then.
	deadline := time.Now().Add(4 * sweepEvery)
	for time.Now().Before(deadline) {
		if n := st.full.Load() - atStart; n != 0 {
			t.Fatalf("%d reads of every component, placement or rollout after routes notes during a long pass, want none", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
