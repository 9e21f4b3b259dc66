package events

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/router"
)

// gatedCaller answers each call once its path's gate is opened, and says
// which calls are being answered.
type gatedCaller struct {
	mu      sync.Mutex
	gates   map[string]chan struct{}
	calling map[string]bool
}

func (g *gatedCaller) gate(uri string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates[uri] == nil {
		g.gates[uri] = make(chan struct{})
	}
	return g.gates[uri]
}

func (g *gatedCaller) inCall(uri string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calling[uri]
}

func (g *gatedCaller) Invoke(ctx context.Context, w http.ResponseWriter, c *router.Call, id int64, attempt int) error {
	gate := g.gate(c.URI)
	g.mu.Lock()
	g.calling[c.URI] = true
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.calling[c.URI] = false
		g.mu.Unlock()
	}()
	select {
	case <-gate:
		w.WriteHeader(http.StatusOK)
	case <-ctx.Done():
	}
	return nil
}

// TestHeldCountsQueuedSQLite: on the embedded store (no slots across
// executors; a paused component's calls are held there only for a
// moment) a running call marked held as Work marks it counts and lists
// as queued, and as running once the mark is cleared.
func TestHeldCountsQueuedSQLite(t *testing.T) {
	ctx := context.Background()
	st, _ := openMigrated(t, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	if err := st.CreateComponent(ctx, store.Component{Name: "slow", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	caller := &gatedCaller{gates: map[string]chan struct{}{}, calling: map[string]bool{}}
	e, err := New(Config{Store: st, Caller: caller, Poll: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	t.Cleanup(func() { close(caller.gate("/fn/slow/x")) })
	id, _, err := e.Enqueue(ctx, &router.Call{Component: "slow", Method: "POST", URI: "/fn/slow/x", Source: router.SourceAsync,
		Timeout: time.Minute, Events: manifest.Events{MaxAttempts: 3}})
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 60*time.Second, "the call running", func() bool { return caller.inCall("/fn/slow/x") })
	check := func(want string) {
		t.Helper()
		c, err := e.Counts(ctx, "slow")
		if err != nil {
			t.Fatal(err)
		}
		if got := map[string]int64{StateQueued: c.Queued, StateRunning: c.Running}; got[want] != 1 || c.Queued+c.Running != 1 {
			t.Fatalf("counts %+v, want 1 %s", c, want)
		}
		all, err := st.AllEventCounts(ctx)
		if err != nil || all[store.EventQueue("slow")] != (store.EventCounts{Queued: c.Queued, Running: c.Running}) {
			t.Fatalf("counts for /metrics %+v (%v), want %+v", all[store.EventQueue("slow")], err, c)
		}
		invs, err := e.Invocations(ctx, "slow", want, 10)
		if err != nil || len(invs) != 1 || invs[0].ID != id || invs[0].State != want {
			t.Fatalf("?state=%s lists %+v (%v), want invocation %d", want, invs, err, id)
		}
	}
	check(StateRunning)
	if err := e.markHeld(ctx, id, 1); err != nil {
		t.Fatal(err)
	}
	check(StateQueued)
	if err := e.markHeld(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	check(StateRunning)
}

// TestHeldCallShowsQueued: with [events] concurrency 1 held across two
// executors, a call that one of them took from the queue but that waits
// for the slot the other's call holds shows queued, not running, in its
// invocation, in the counts (velo status, the API, /metrics) and in the
// listings by state; once it is called it shows running, then succeeded.
func TestHeldCallShowsQueued(t *testing.T) {
	ctx := context.Background()
	st, _ := openMigrated(t, pgtest.URL(t))
	if err := st.CreateComponent(ctx, store.Component{Name: "slow", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	caller := &gatedCaller{gates: map[string]chan struct{}{}, calling: map[string]bool{}}
	var engines []*Engine
	for range 2 {
		e, err := New(Config{Store: st, Caller: caller, Poll: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = e.Run(runCtx) }()
		t.Cleanup(func() { stop(); <-done })
		engines = append(engines, e)
	}
	t.Cleanup(func() { // the calls end before the engines stop
		for _, uri := range []string{"/fn/slow/first", "/fn/slow/second"} {
			select {
			case <-caller.gate(uri):
			default:
				close(caller.gate(uri))
			}
		}
	})
	call := func(uri string) int64 {
		t.Helper()
		id, _, err := engines[0].Enqueue(ctx, &router.Call{Component: "slow", Method: "POST", URI: uri, Source: router.SourceAsync,
			Timeout: time.Minute, Events: manifest.Events{MaxAttempts: 3, Concurrency: 1}})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	state := func(id int64) string {
		t.Helper()
		inv, err := engines[0].Invocation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return inv.State
	}
	first := call("/fn/slow/first")
	testsupport.Eventually(t, 60*time.Second, "the first call running", func() bool { return caller.inCall("/fn/slow/first") })
	if s := state(first); s != StateRunning {
		t.Fatalf("the call being answered shows %s, want running", s)
	}
	second := call("/fn/slow/second")
	queue := store.EventQueue("slow")
	testsupport.Eventually(t, 60*time.Second, "the second call waiting for the slot", func() bool {
		for _, e := range engines {
			e.slots.mu.Lock()
			g := e.slots.gates[queue]
			waiting := g != nil && g.waiting > 0
			e.slots.mu.Unlock()
			if waiting {
				return true
			}
		}
		return false
	})
	listed := func(state string) []int64 {
		t.Helper()
		invs, err := engines[0].Invocations(ctx, "slow", state, 100)
		if err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, inv := range invs {
			ids = append(ids, inv.ID)
		}
		return ids
	}
	for i := range 20 { // across more than one wait (slotWait) and its return to the queue
		if s := state(second); s != StateQueued {
			t.Fatalf("read %d: the call waiting for a slot shows %s, want queued", i, s)
		}
		// Read while it is held (the state just read), the counts and
		// listings agree with it.
		if c, err := engines[0].Counts(ctx, "slow"); err != nil || c.Running != 1 || c.Queued != 1 {
			t.Fatalf("read %d: counts %+v (%v), want 1 running and 1 queued", i, c, err)
		}
		if all, err := st.AllEventCounts(ctx); err != nil || all[queue].Running != 1 || all[queue].Queued != 1 {
			t.Fatalf("read %d: counts for /metrics %+v (%v), want 1 running and 1 queued", i, all[queue], err)
		}
		if ids := listed(StateRunning); len(ids) != 1 || ids[0] != first {
			t.Fatalf("read %d: ?state=running lists %v, want only %d", i, ids, first)
		}
		if ids := listed(StateQueued); len(ids) != 1 || ids[0] != second {
			t.Fatalf("read %d: ?state=queued lists %v, want only %d", i, ids, second)
		}
		time.Sleep(200 * time.Millisecond) // spacing the reads, not a synchronization
	}
	if caller.inCall("/fn/slow/second") {
		t.Fatal("the second call ran beside the first with concurrency 1")
	}
	close(caller.gate("/fn/slow/first"))
	testsupport.Eventually(t, 60*time.Second, "the second call being answered", func() bool { return caller.inCall("/fn/slow/second") })
	if s := state(second); s != StateRunning {
		t.Fatalf("the second call, being answered, shows %s, want running", s)
	}
	close(caller.gate("/fn/slow/second"))
	testsupport.Eventually(t, 60*time.Second, "the second call succeeded", func() bool { return state(second) == StateSucceeded })
}
