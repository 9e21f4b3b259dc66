package events

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/router"
)

// TestGroupCommitBatches: items submitted while a flush is in flight go
// together in the next one, each submitter gets its own result, and a
// failed flush answers its error to every item in it (and none other).
func TestGroupCommitBatches(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	g := &groupCommit[int, int]{max: 100, slots: 1, bound: 1000, timeout: 30 * time.Second,
		flush: func(ctx context.Context, items []int) ([]int, error) {
			mu.Lock()
			sizes = append(sizes, len(items))
			first := len(sizes) == 1
			mu.Unlock()
			if first {
				<-release
			}
			out := make([]int, len(items))
			for i, v := range items {
				if v < 0 {
					return nil, fmt.Errorf("item %d refused", v)
				}
				out[i] = v * 10
			}
			return out, nil
		}}
	ctx := context.Background()
	type answer struct {
		in, out int
		err     error
	}
	answers := make(chan answer, 64)
	submit := func(v int) {
		out, err := g.Submit(ctx, v)
		answers <- answer{v, out, err}
	}
	go submit(1) // flushes alone, held by release
	testsupport.Eventually(t, 30*time.Second, "the first flush", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sizes) == 1
	})
	for v := 2; v <= 21; v++ {
		go submit(v)
	}
	testsupport.Eventually(t, 30*time.Second, "20 items waiting", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.waiting) == 20
	})
	close(release)
	for range 21 {
		a := <-answers
		if a.err != nil || a.out != a.in*10 {
			t.Errorf("item %d answered %d, %v", a.in, a.out, a.err)
		}
	}
	mu.Lock()
	if len(sizes) != 2 || sizes[1] != 20 {
		t.Errorf("batch sizes %v, want [1 20]", sizes)
	}
	mu.Unlock()

	idle := func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.inFlight == 0 && len(g.waiting) == 0
	}
	testsupport.Eventually(t, 30*time.Second, "no flush in flight", idle)

	// A batch with a refused item fails as a whole, for each of its items.
	release2 := make(chan struct{})
	g.flush = func(ctx context.Context, items []int) ([]int, error) {
		if items[0] == 100 {
			<-release2
			return []int{0}, nil
		}
		for _, v := range items {
			if v < 0 {
				return nil, errors.New("refused")
			}
		}
		return make([]int, len(items)), nil
	}
	go submit(100)
	testsupport.Eventually(t, 30*time.Second, "the held flush", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.inFlight == 1
	})
	for _, v := range []int{5, -1, 6} {
		go submit(v)
	}
	testsupport.Eventually(t, 30*time.Second, "3 items waiting", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.waiting) == 3
	})
	close(release2)
	for range 4 {
		a := <-answers
		if (a.in == 100) != (a.err == nil) {
			t.Errorf("item %d: err %v", a.in, a.err)
		}
	}
	testsupport.Eventually(t, 30*time.Second, "no flush in flight", idle)
}

func TestEnqueueBatchedSQLite(t *testing.T) {
	dir := t.TempDir()
	testEnqueueBatched(t, "sqlite://"+filepath.Join(dir, "velo.db"))
}

func TestEnqueueBatchedPostgres(t *testing.T) { testEnqueueBatched(t, pgtest.URL(t)) }

// testEnqueueBatched: many concurrent enqueues each land once with ids of
// their own; concurrent calls with one Idempotency-Key all get the same
// invocation and make one job; when the store goes away mid-stream every
// enqueue that was answered is readable from another connection at once
// (the 202 never comes before the commit); when the store closes
// mid-stream, every answered call is in the database afterwards and the
// rest get an error.
func testEnqueueBatched(t *testing.T, url string) {
	ctx := context.Background()
	st, closeStore := openMigrated(t, url)
	for _, name := range []string{"batch", "keyed", "closing"} {
		if err := st.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}); err != nil {
			t.Fatal(err)
		}
	}
	e, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	call := func(component, key string, i int) *router.Call {
		return &router.Call{Component: component, Method: "POST", URI: fmt.Sprintf("/fn/%s/%d", component, i),
			Body: []byte("x"), Source: router.SourceAsync, Key: key, Timeout: time.Second,
			Events: manifest.Events{MaxAttempts: 3}}
	}

	// 400 calls from 32 goroutines: 400 jobs, 400 ids.
	const n, clients = 400, 32
	ids := make(chan int64, n)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < n; i += clients {
				id, dup, err := e.Enqueue(ctx, call("batch", "", i))
				if err != nil || dup {
					t.Errorf("enqueue %d: %d %v %v", i, id, dup, err)
					continue
				}
				// Answered means committed: another connection reads it.
				if _, err := e.client.JobGet(ctx, id); err != nil {
					t.Errorf("call %d answered as invocation %d, which the database has not: %v", i, id, err)
				}
				ids <- id
			}
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("id %d answered twice", id)
		}
		seen[id] = true
	}
	if cnt, err := st.EventCounts(ctx, store.EventQueue("batch")); err != nil || cnt.Queued != n || len(seen) != n {
		t.Errorf("%d ids answered, queue counts %+v %v; want %d queued", len(seen), cnt, err, n)
	}

	// 64 concurrent calls with 4 keys: 4 jobs, one id per key.
	const keyed = 64
	type keyedID struct {
		key string
		id  int64
		dup bool
	}
	got := make(chan keyedID, keyed)
	for i := range keyed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("k%d", i%4)
			id, dup, err := e.Enqueue(ctx, call("keyed", key, i))
			if err != nil {
				t.Errorf("enqueue with key %s: %v", key, err)
				return
			}
			got <- keyedID{key, id, dup}
		}()
	}
	wg.Wait()
	close(got)
	byKey := map[string]map[int64]bool{}
	fresh := 0
	for g := range got {
		if byKey[g.key] == nil {
			byKey[g.key] = map[int64]bool{}
		}
		byKey[g.key][g.id] = true
		if !g.dup {
			fresh++
		}
	}
	for k, ids := range byKey {
		if len(ids) != 1 {
			t.Errorf("key %s answered invocations %v, want one", k, ids)
		}
	}
	cnt, err := st.EventCounts(ctx, store.EventQueue("keyed"))
	if err != nil || cnt.Queued != 4 || len(byKey) != 4 || fresh != 4 {
		t.Errorf("keyed calls: %d keys, %d answered as new, queue counts %+v %v; want 4 jobs", len(byKey), fresh, cnt, err)
	}

	// The store closes while 32 goroutines enqueue: whatever was answered
	// is in the database, read by a store opened afresh.
	answered := make(chan int64, 10000)
	failed := make(chan error, 10000)
	stop := make(chan struct{})
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; ; i += clients {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				id, _, err := e.Enqueue(cctx, call("closing", "", i))
				cancel()
				if err != nil {
					failed <- err
					return
				}
				answered <- id
				if len(answered) > 9000 {
					return
				}
			}
		}()
	}
	testsupport.Eventually(t, 30*time.Second, "calls answered before the close", func() bool { return len(answered) >= 100 })
	closeStore()
	close(stop)
	wg.Wait()
	close(answered)
	close(failed)
	if len(failed) == 0 {
		t.Errorf("no enqueue failed after the store was closed")
	}
	st2, _ := openMigrated(t, url)
	want := map[int64]bool{}
	for id := range answered {
		want[id] = true
	}
	have := map[int64]bool{}
	e2, err := New(Config{Store: st2})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e2.client.JobList(ctx, river.NewJobListParams().Queues(store.EventQueue("closing")).First(10000))
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range res.Jobs {
		have[j.ID] = true
	}
	missing := 0
	for id := range want {
		if !have[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d answered calls are not in the database after the store closed", missing, len(want))
	}
	t.Logf("%d calls answered before the close, %d in the database, %d enqueues failed", len(want), len(have), len(failed))
}

// openMigrated opens a migrated store on url; close closes it, once,
// and at the latest when t ends.
func openMigrated(t *testing.T, url string) (st *store.Store, close func()) {
	t.Helper()
	st, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	close = func() { once.Do(st.Close) }
	t.Cleanup(close)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st, close
}

// TestDepthSamplesBounded: the queue depths kept for max_queued do not
// grow with every component ever called (deleted ones included).
func TestDepthSamplesBounded(t *testing.T) {
	ctx := context.Background()
	st, _ := openMigrated(t, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	e, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxDepthSamples + 100 {
		if err := e.checkDepth(ctx, store.EventQueue(fmt.Sprintf("c%d", i)), 10); err != nil {
			t.Fatal(err)
		}
	}
	e.mu.Lock()
	n := len(e.depth)
	e.mu.Unlock()
	if n > maxDepthSamples {
		t.Fatalf("%d queue depths kept after %d queues, want at most %d", n, maxDepthSamples+100, maxDepthSamples)
	}
}

// TestStaleDepthDoesNotHoldCalls: a queue's depth read from the store goes
// stale every depthFresh; the call that finds it stale goes on with the
// depth it has while it is read again in the background, so a count that
// takes long (here: never answers until released) holds up no call. The
// first call of a queue, and one the stale depth would refuse, still wait
// for the count, and a full queue is refused.
func TestStaleDepthDoesNotHoldCalls(t *testing.T) {
	var mu sync.Mutex
	depth, reads := int64(0), 0
	block := make(chan struct{})
	e := &Engine{depth: map[string]*depthSample{}, queuedDepth: func(ctx context.Context, queue string) (int64, error) {
		mu.Lock()
		reads++
		n, r := depth, reads
		mu.Unlock()
		if r == 2 {
			select { // the first re-read hangs
			case <-block:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		return n, nil
	}}
	const max = 10
	if err := e.checkDepth(context.Background(), "q", max); err != nil {
		t.Fatalf("first call: %v", err)
	}
	e.mu.Lock()
	e.depth["q"].at = time.Now().Add(-time.Hour) // stale
	e.mu.Unlock()
	done := make(chan error, 1)
	go func() { done <- e.checkDepth(context.Background(), "q", max) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("call with a stale depth: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a call with a stale depth waited for the store's count")
	}
	readsNow := func() int { mu.Lock(); defer mu.Unlock(); return reads }
	testsupport.Eventually(t, 30*time.Second, "the depth read again", func() bool { return readsNow() == 2 })
	// More calls while the re-read hangs: no second read at once.
	for range 3 {
		if err := e.checkDepth(context.Background(), "q", max); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if reads != 2 {
		t.Errorf("%d reads of the depth, want 2 (the first, one re-read)", reads)
	}
	depth = max // the queue filled up meanwhile
	mu.Unlock()
	close(block)
	testsupport.Eventually(t, 30*time.Second, "the re-read depth refuses calls", func() bool {
		return errors.Is(e.checkDepth(context.Background(), "q", max), router.ErrQueueFull)
	})
	// Stale and full: the call waits for a fresh count (now room again).
	mu.Lock()
	depth = 0
	mu.Unlock()
	e.mu.Lock()
	e.depth["q"].at = time.Now().Add(-time.Hour)
	e.mu.Unlock()
	if err := e.checkDepth(context.Background(), "q", max); err != nil {
		t.Errorf("a stale full depth that the store no longer has: %v", err)
	}
}
