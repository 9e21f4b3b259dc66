package events

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/testsupport"
)

// enterAsync enters g on a goroutine; the channel yields leave once in.
func enterAsync(ctx context.Context, g *callGate) <-chan func() {
	in := make(chan func(), 1)
	go func() {
		if leave, ok := g.enter(ctx); ok {
			in <- leave
		} else {
			close(in)
		}
	}()
	return in
}

func TestCallGateBoundsStartingCalls(t *testing.T) {
	g := &callGate{limit: 2, slice: time.Hour}
	ctx := context.Background()
	a, ok1 := g.enter(ctx)
	b, ok2 := g.enter(ctx)
	if !ok1 || !ok2 {
		t.Fatal("the first two calls did not enter a gate of 2")
	}
	third := enterAsync(ctx, g)
	select {
	case <-third:
		t.Fatal("a third call entered while two held the gate")
	case <-time.After(50 * time.Millisecond):
	}
	a()
	var c func()
	testsupport.Eventually(t, 30*time.Second, "the third call enters once one leaves", func() bool {
		select {
		case c = <-third:
			return true
		default:
			return false
		}
	})
	b()
	c()
	// Every turn is back: two enter at once again.
	d, _ := g.enter(ctx)
	e, _ := g.enter(ctx)
	d()
	e()
}

func TestCallGateLetsALongCallGo(t *testing.T) {
	// A call still running after its slice (waiting on the network, say)
	// no longer holds back the next.
	g := &callGate{limit: 1, slice: 5 * time.Millisecond}
	ctx := context.Background()
	long, _ := g.enter(ctx)
	defer long()
	next := enterAsync(ctx, g)
	testsupport.Eventually(t, 30*time.Second, "the next call enters after the long one's slice", func() bool {
		select {
		case leave := <-next:
			leave()
			return true
		default:
			return false
		}
	})
}

func TestCallGateWaiterGivesUp(t *testing.T) {
	g := &callGate{limit: 1, slice: time.Hour}
	first, _ := g.enter(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := enterAsync(ctx, g)
	testsupport.Eventually(t, 30*time.Second, "the second call waits", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.waiting) == 1
	})
	cancel()
	testsupport.Eventually(t, 30*time.Second, "the waiting call gives up with its context", func() bool {
		select {
		case leave, ok := <-gaveUp:
			if ok {
				leave()
				t.Fatal("a call whose context ended entered")
			}
			return true
		default:
			return false
		}
	})
	first()
	// The turn is free, not lost to the call that gave up.
	third := enterAsync(context.Background(), g)
	testsupport.Eventually(t, 30*time.Second, "a later call enters", func() bool {
		select {
		case leave := <-third:
			leave()
			return true
		default:
			return false
		}
	})
}

// TestCallGateHammer: many calls entering, leaving and giving up at once
// never hold more turns than the limit, and all get through.
func TestCallGateHammer(t *testing.T) {
	const limit = 3
	g := &callGate{limit: limit, slice: time.Hour}
	var holding, most, entered, stuck atomic.Int64
	// A turn lost would leave calls waiting for ever: they stop at this.
	base, stop := context.WithTimeout(context.Background(), 60*time.Second)
	defer stop()
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				ctx, cancel := context.WithCancel(base)
				switch (i + j) % 7 {
				case 0:
					cancel() // gives up at once
				case 1, 2:
					// gives up while waiting, maybe as its turn comes
					ctx, cancel = context.WithTimeout(ctx, time.Duration(j%5)*10*time.Microsecond)
				}
				leave, ok := g.enter(ctx)
				cancel()
				if !ok {
					if base.Err() != nil {
						stuck.Add(1)
					}
					continue
				}
				n := holding.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				entered.Add(1)
				runtime.Gosched()
				holding.Add(-1)
				leave()
			}
		}()
	}
	wg.Wait()
	if m := most.Load(); m > limit {
		t.Errorf("%d calls held the gate at once, limit %d", m, limit)
	}
	if n := stuck.Load(); n > 0 {
		t.Errorf("%d calls waited 60 s for a turn", n)
	}
	if entered.Load() == 0 {
		t.Error("no call entered")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fresh != 0 || len(g.waiting) != 0 {
		t.Errorf("after every call left: %d turns held, %d waiting", g.fresh, len(g.waiting))
	}
}
