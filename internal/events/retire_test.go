package events

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/router"
)

// okCaller answers every call 200 and counts them.
type okCaller struct{ n atomic.Int64 }

func (c *okCaller) Invoke(ctx context.Context, w http.ResponseWriter, _ *router.Call, _ int64, _ int) error {
	c.n.Add(1)
	w.WriteHeader(http.StatusOK)
	return nil
}

// retireEngine runs an executor on url whose queues retire after idle;
// poll is its Poll (discoverQueues).
func retireEngine(t *testing.T, url string, idle, poll time.Duration, components ...string) (*Engine, *store.Store) {
	t.Helper()
	ctx := context.Background()
	st, _ := openMigrated(t, url)
	for _, name := range components {
		if err := st.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}); err != nil {
			t.Fatal(err)
		}
	}
	e, err := New(Config{Store: st, Caller: &okCaller{}, Poll: poll})
	if err != nil {
		t.Fatal(err)
	}
	e.idle = idle
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	return e, st
}

func asyncCall(component, path string) *router.Call {
	return &router.Call{Component: component, Method: "POST", URI: "/fn/" + component + path, Header: http.Header{},
		Source: router.SourceAsync, Timeout: 5 * time.Second,
		Events: manifest.Events{MaxAttempts: 3, Concurrency: 4}}
}

func (e *Engine) worksQueue(queue string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.queues[queue] != nil
}

func waitSucceeded(t *testing.T, st *store.Store, queue string, n int64) {
	t.Helper()
	var c store.EventCounts
	testsupport.EventuallyShow(t, 60*time.Second, fmt.Sprintf("%d calls of %s succeeded", n, queue), func() bool {
		var err error
		c, err = st.EventCounts(context.Background(), queue)
		return err == nil && c.Succeeded >= n
	}, func() string { return fmt.Sprintf("%+v", c) })
}

func TestIdleQueueRetiredSQLite(t *testing.T) {
	testIdleQueueRetired(t, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
}
func TestIdleQueueRetiredPostgres(t *testing.T) { testIdleQueueRetired(t, pgtest.URL(t)) }

// testIdleQueueRetired: a queue without calls stops being worked (River's
// producer of it removed: it polled the store every second for ever, for
// every component ever called, deleted ones too), and is worked again
// when a call comes.
func testIdleQueueRetired(t *testing.T, url string) {
	e, st := retireEngine(t, url, 300*time.Millisecond, 100*time.Millisecond, "idle")
	ctx := context.Background()
	queue := store.EventQueue("idle")
	if _, _, err := e.Enqueue(ctx, asyncCall("idle", "/first")); err != nil {
		t.Fatal(err)
	}
	waitSucceeded(t, st, queue, 1)
	testsupport.Eventually(t, 30*time.Second, "the idle queue's producer removed", func() bool { return !e.worksQueue(queue) })
	if _, _, err := e.Enqueue(ctx, asyncCall("idle", "/second")); err != nil {
		t.Fatal(err)
	}
	waitSucceeded(t, st, queue, 2)
}

// TestRetireRacesEnqueue: queues retired as fast as the engine can while
// calls keep coming to them lose no call. Queues are found again only by
// the calls queued here (Poll is an hour, so discoverQueues does not
// save a queue left without its producer).
func TestRetireRacesEnqueue(t *testing.T) {
	names := []string{"r0", "r1", "r2"}
	e, st := retireEngine(t, pgtest.URL(t), time.Millisecond, time.Hour, names...)
	ctx := context.Background()
	const each = 40
	var wg sync.WaitGroup
	for _, name := range names {
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each / 2 {
					if _, _, err := e.Enqueue(ctx, asyncCall(name, fmt.Sprintf("/%d-%d", g, i))); err != nil {
						t.Error(err)
						return
					}
					time.Sleep(time.Duration(i%4) * 2 * time.Millisecond)
				}
			}()
		}
	}
	wg.Wait()
	for _, name := range names {
		waitSucceeded(t, st, store.EventQueue(name), each)
	}
}
