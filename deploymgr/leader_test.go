package deploymgr

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// flipElector grants leadership on every other try, through a real store
// lease that the test can take away.
type flipElector struct {
	st    *store.Store
	tries atomic.Int64
	mu    sync.Mutex
	lease *store.Lease
}

func (f *flipElector) TryLeader(ctx context.Context, key int64) (*store.Lease, bool, error) {
	if f.tries.Add(1)%2 == 1 {
		return nil, false, nil
	}
	l, ok, err := f.st.TryLeader(ctx, key)
	f.mu.Lock()
	f.lease = l
	f.mu.Unlock()
	return l, ok, err
}

// TestElectionRunsLeaderLoopsOnlyWhileLeading: the scheduler and the
// leader-only loops start when leadership is granted and stop when the
// lease is lost, and a standby tries again.
func TestElectionRunsLeaderLoopsOnlyWhileLeading(t *testing.T) {
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "v.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := New(Config{PublicURL: "http://x"}, st)
	if err != nil {
		t.Fatal(err)
	}
	var running, starts atomic.Int64
	el := &Election{Retry: 20 * time.Millisecond, Also: []func(context.Context) error{func(ctx context.Context) error {
		starts.Add(1)
		running.Add(1)
		defer running.Add(-1)
		<-ctx.Done()
		return nil
	}}}
	f := &flipElector{st: st}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- el.Run(ctx, m, f) }()

	testsupport.Eventually(t, 5*time.Second, "leading", func() bool { return el.Leading() && running.Load() == 1 })
	// Lose the lease: the loops stop, then leadership comes back.
	f.mu.Lock()
	f.lease.Release()
	f.mu.Unlock()
	testsupport.Eventually(t, 5*time.Second, "second term", func() bool { return starts.Load() == 2 && el.Leading() })
	if running.Load() != 1 {
		t.Fatalf("%d leader loops running, want 1", running.Load())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if el.Leading() || running.Load() != 0 {
		t.Fatalf("after stop: leading=%v, %d loops running", el.Leading(), running.Load())
	}
}
