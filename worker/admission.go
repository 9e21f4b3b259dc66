package worker

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Why admission lives in package worker and not in a runtime: the limits
// it enforces belong to the worker (one memory budget and one cap on calls
// in flight, whatever runtime serves them) and to the component (its calls
// on this worker, whichever of its deployments serves them). Neither
// depends on how a call runs; a runtime only tells what one call of an
// instance may cost (Footprint). So every runtime, and both ways a call
// arrives (in-process from the router, or forwarded to Handler), pass
// through this one gate, before the call reads its body or holds anything.

// Errors admit returns; the 503 says which.
var (
	errComponentBusy = errors.New("component at its limit of calls at once on this worker")
	errWorkerBusy    = errors.New("worker at its limit of calls at once")
)

// admission decides, for each call, whether it runs now, waits or is
// turned away. A call runs when the worker has fewer than MaxInflight
// calls running, its component fewer than its concurrency, and its memory
// reservation fits in the worker's call budget; and, so that one flooded
// component always leaves room for the others, a component that already
// has calls running may not hold more than half the budget or half of
// MaxInflight. Otherwise the call waits in a queue bounded overall by
// MaxQueue and per component by its concurrency, at most QueueWait, then
// gets 503 with Retry-After. When room frees, the waiter of the least busy
// component goes first (the oldest among equals), so a component with no
// calls running is not stuck behind another's backlog.
//
// It is safe for concurrent use. Every wait is bounded by QueueWait and the
// caller's context; every map and queue entry is removed when its last
// call leaves.
type admission struct {
	maxInflight, maxQueue int
	budget                int64
	wait                  time.Duration
	// idle are the runtimes whose memory held between calls counts
	// against budget (see releaseIdle); set before the first call.
	idle []IdleMemory

	mu       sync.Mutex
	inflight int
	reserved int64
	comps    map[string]*load
	queue    []*waiter // oldest first
}

// load is one component's share of the worker.
type load struct {
	active, waiting int
	reserved        int64
}

// waiter is a call waiting for room.
type waiter struct {
	comp     string
	ld       *load
	cost     int64
	limit    int
	ready    chan struct{} // closed once admitted
	admitted bool          // guarded by admission.mu
}

// grant is an admitted call; pass it to done when the call ends.
type grant struct {
	comp string
	ld   *load
	cost int64
}

func newAdmission(l Limits) *admission {
	return &admission{
		maxInflight: l.MaxInflight,
		maxQueue:    l.MaxQueue,
		budget:      l.CallBudget(),
		wait:        l.QueueWait,
		comps:       map[string]*load{},
	}
}

// admit returns once a call of comp costing cost bytes, with at most limit
// calls of comp running at once, may run, or with an error when it may
// not (errComponentBusy, errWorkerBusy or ctx's error).
func (a *admission) admit(ctx context.Context, comp string, cost int64, limit int) (grant, error) {
	a.mu.Lock()
	ld := a.comps[comp]
	if ld == nil {
		ld = new(load)
		a.comps[comp] = ld
	}
	g := grant{comp: comp, ld: ld, cost: cost}
	if a.fits(ld, cost, limit) {
		a.take(ld, cost)
		a.mu.Unlock()
		return g, nil
	}
	if ld.waiting >= limit || len(a.queue) >= a.maxQueue {
		err := a.busy(ld, limit)
		a.forget(comp, ld)
		a.mu.Unlock()
		return grant{}, err
	}
	w := &waiter{comp: comp, ld: ld, cost: cost, limit: limit, ready: make(chan struct{})}
	a.queue = append(a.queue, w)
	ld.waiting++
	a.mu.Unlock()

	t := time.NewTimer(a.wait)
	defer t.Stop()
	var err error
	select {
	case <-w.ready:
		return g, nil
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w.admitted { // room came as the wait ended
		return g, nil
	}
	if i := slices.Index(a.queue, w); i >= 0 {
		a.queue = slices.Delete(a.queue, i, i+1)
	}
	ld.waiting--
	if err == nil {
		err = a.busy(ld, limit)
	}
	a.forget(comp, ld)
	return grant{}, err
}

// done ends an admitted call and lets in whoever now fits.
func (a *admission) done(g grant) {
	a.mu.Lock()
	a.inflight--
	a.reserved -= g.cost
	g.ld.active--
	g.ld.reserved -= g.cost
	a.wake()
	a.forget(g.comp, g.ld)
	a.mu.Unlock()
}

// fits reports whether a call may start now; a.mu must be held.
func (a *admission) fits(ld *load, cost int64, limit int) bool {
	if a.inflight >= a.maxInflight || ld.active >= limit || a.reserved+cost > a.budget {
		return false
	}
	if ld.active > 0 && (ld.reserved+cost > a.budget/2 || ld.active >= a.maxInflight/2) {
		return false
	}
	return true
}

func (a *admission) take(ld *load, cost int64) {
	a.inflight++
	a.reserved += cost
	ld.active++
	ld.reserved += cost
	a.releaseIdle()
}

// releaseIdle has the runtimes free the memory they hold between calls
// beyond what the calls' reservations leave of the budget, so that
// reservations and idle memory together stay within it; a.mu must be
// held. It costs an atomic load per runtime while there is room.
func (a *admission) releaseIdle() {
	for _, m := range a.idle {
		over := a.reserved - a.budget
		for _, o := range a.idle {
			over += o.IdleMemory()
		}
		if over <= 0 {
			return
		}
		m.ReleaseIdle(over)
	}
}

// wake admits waiters while any fits, the least busy component's first;
// a.mu must be held.
func (a *admission) wake() {
	for {
		best := -1
		for i, w := range a.queue {
			if a.fits(w.ld, w.cost, w.limit) && (best < 0 || w.ld.active < a.queue[best].ld.active) {
				best = i
			}
		}
		if best < 0 {
			return
		}
		w := a.queue[best]
		a.queue = slices.Delete(a.queue, best, best+1)
		w.ld.waiting--
		a.take(w.ld, w.cost)
		w.admitted = true
		close(w.ready)
	}
}

// busy says whose limit turned a call away; a.mu must be held.
func (a *admission) busy(ld *load, limit int) error {
	if ld.active >= limit {
		return errComponentBusy
	}
	return errWorkerBusy
}

// forget drops a component's entry once nothing of it is left; a.mu must
// be held.
func (a *admission) forget(comp string, ld *load) {
	if ld.active == 0 && ld.waiting == 0 && a.comps[comp] == ld {
		delete(a.comps, comp)
	}
}

// limited is an Instance whose calls pass through the worker's admission.
// The worker serves every prepared instance wrapped in one.
type limited struct {
	Instance
	adm       *admission
	component string
	cost      int64 // memory reserved per call
	limit     int   // calls of the component at once
}

// Serve admits the call, then hands it to the instance; a call that finds
// no room in time gets 503 with Retry-After, its body unread.
func (l *limited) Serve(w http.ResponseWriter, r *http.Request, mount string) {
	g, err := l.adm.admit(r.Context(), l.component, l.cost, l.limit)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away while it waited
		}
		h := w.Header()
		h.Set("Retry-After", RetryAfter)
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("503 Service Unavailable: " + err.Error() + "; retry shortly\n"))
		return
	}
	defer l.adm.done(g)
	l.Instance.Serve(w, r, mount)
}
