package events

import (
	"context"
	"sync"
	"time"
)

// Why a gate in front of the calls: Go's scheduler looks for network
// events (a request arriving, Postgres answering) only when a processor's
// run queue is empty, and otherwise from sysmon about every 10 ms. River
// hands a fetch of up to [events] concurrency jobs to as many goroutines at
// once; a batch of short WASM calls, all runnable together, keeps both run
// queues of a 2-core machine full for milliseconds, and every enqueue whose
// request or commit answer arrives meanwhile waits for them before its 202.
// So at most GOMAXPROCS calls start running at once in a process (each has
// a processor to itself, and the run queues drain); a call that runs longer
// than callSlice no longer counts (it waits for I/O, or Go preempts it like
// any other goroutine), so calls that wait on the network still start
// limit per slice, and are never held to a few at once.

// callSlice is how long a started call counts against the gate.
const callSlice = time.Millisecond

// callGate lets at most limit calls count as just started at once. Safe for
// concurrent use; the zero value with limit 0 lets every call through.
type callGate struct {
	limit int
	slice time.Duration // callSlice when 0

	mu      sync.Mutex
	fresh   int             // calls started less than callSlice ago, still running
	waiting []chan struct{} // calls waiting to start, first come first served
}

// enter waits until the call may start (or ctx ends: false) and returns
// the function to call when it ends.
func (g *callGate) enter(ctx context.Context) (leave func(), ok bool) {
	if g.limit <= 0 {
		return func() {}, true
	}
	g.mu.Lock()
	if g.fresh < g.limit && len(g.waiting) == 0 {
		g.fresh++
		g.mu.Unlock()
		return g.started(), true
	}
	ch := make(chan struct{})
	g.waiting = append(g.waiting, ch)
	g.mu.Unlock()
	select {
	case <-ch:
		return g.started(), true
	case <-ctx.Done():
	}
	g.mu.Lock()
	for i, w := range g.waiting {
		if w == ch {
			g.waiting = append(g.waiting[:i], g.waiting[i+1:]...)
			g.mu.Unlock()
			return nil, false
		}
	}
	g.mu.Unlock()
	// Handed a turn as ctx ended: pass it on.
	g.pass()
	return nil, false
}

// started returns the leave of a call that holds a turn: the turn goes to
// the next call at the call's end or after callSlice, whichever comes
// first.
func (g *callGate) started() func() {
	var once sync.Once
	d := g.slice
	if d <= 0 {
		d = callSlice
	}
	t := time.AfterFunc(d, func() { once.Do(g.pass) })
	return func() {
		t.Stop()
		once.Do(g.pass)
	}
}

// pass gives a turn to the first waiting call, or back.
func (g *callGate) pass() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.waiting) > 0 {
		close(g.waiting[0])
		g.waiting[0] = nil
		g.waiting = g.waiting[1:]
		return
	}
	g.fresh--
}
