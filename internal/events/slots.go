package events

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// Why slots: River's open-source client bounds a queue's workers per
// process (QueueConfig.MaxWorkers), so with N executors a component would
// run N × [events] concurrency calls at once. On Postgres, where several
// executors share the queues, each executor leases some of a queue's
// slots in the store (store.ClaimSlots) and runs at most that many of its
// calls; the leases are renewed about once a second, never per call, and a
// dead process's lease expires, giving its slots to the others. On SQLite
// the database belongs to one process and River's bound is the bound.

// Slot timings. A call that finds no free slot waits up to slotWait, then
// goes back to the queue (a snooze, not an attempt) for another executor
// or a later turn.
const (
	slotTTL       = 6 * time.Second        // a lease not renewed within it is dead
	slotRenew     = time.Second            // lease renewal when nobody else wants the queue
	slotContended = 200 * time.Millisecond // renewal when others do, or calls wait
	slotLinger    = 2 * time.Second        // an idle queue keeps its lease this long
	slotWait      = 2 * time.Second        // the longest a call waits for a slot
	slotMinTick   = 20 * time.Millisecond  // claims at most this often
)

// slots is an executor's share of the queues' concurrency. Safe for
// concurrent use.
type slots struct {
	st     *store.Store
	holder string
	log    *slog.Logger
	poke   chan struct{} // a claim is wanted now (bounded: one pending)

	mu    sync.Mutex
	gates map[string]*gate
}

// gate is one queue's local bound: at most granted calls at once, granted
// being what this process's last claim got.
type gate struct {
	limit   int // the queue's [events] concurrency (the newest call's)
	granted int // calls this process may run at once
	busy    int // calls running
	waiting int // calls waiting for a slot
	// wake is closed (and replaced) when a slot may have come free.
	wake chan struct{}
	// claimed is when the grant was last confirmed (taken before the
	// claim began, so before the lease's own expiry): past slotTTL less a
	// margin the grant is void and no call starts.
	claimed time.Time
	active  time.Time // the last call's start, end or wait
	others  int       // other live leases at the last claim
}

func newSlots(st *store.Store, log *slog.Logger) *slots {
	host, _ := os.Hostname()
	return &slots{st: st, log: log, poke: make(chan struct{}, 1), gates: map[string]*gate{},
		holder: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), crand.Text()[:8])}
}

// acquire takes one of queue's slots, waiting up to slotWait for one. ok
// false: none came (or ctx ended); the call should go back to the queue.
// waited reports that it did not get one at once. release gives the slot
// back. hold, when not nil, runs once before the call starts waiting.
func (s *slots) acquire(ctx context.Context, queue string, limit int, hold func()) (release func(), waited, ok bool) {
	timer := time.NewTimer(slotWait)
	defer timer.Stop()
	s.mu.Lock()
	g := s.gates[queue]
	if g == nil {
		g = &gate{wake: make(chan struct{})}
		s.gates[queue] = g
	}
	g.limit = limit
	counted := false
	for {
		now := time.Now()
		g.active = now
		if g.busy < g.granted && now.Sub(g.claimed) < slotTTL-time.Second {
			if counted {
				g.waiting--
			}
			g.busy++
			s.mu.Unlock()
			return func() { s.release(g) }, counted, true
		}
		if !counted {
			if hold != nil {
				// Before the call counts as waiting: it shows queued
				// (see heldAttempt) from then on.
				s.mu.Unlock()
				hold()
				hold = nil
				s.mu.Lock()
				continue
			}
			g.waiting++
			counted = true
		}
		// Nothing granted yet (a queue new here, or a grant gone
		// stale): claim now rather than at the next renewal.
		urgent := g.granted == 0 || now.Sub(g.claimed) >= slotTTL-time.Second
		wake := g.wake
		s.mu.Unlock()
		if urgent {
			select {
			case s.poke <- struct{}{}:
			default:
			}
		}
		gaveUp := false
		select {
		case <-wake:
		case <-timer.C:
			gaveUp = true
		case <-ctx.Done():
			gaveUp = true
		}
		s.mu.Lock()
		if gaveUp {
			g.waiting--
			g.active = time.Now()
			s.mu.Unlock()
			return nil, true, false
		}
	}
}

// release ends a call that held one of g's slots.
func (s *slots) release(g *gate) {
	s.mu.Lock()
	g.busy--
	g.active = time.Now()
	if g.waiting > 0 {
		close(g.wake)
		g.wake = make(chan struct{})
	}
	s.mu.Unlock()
}

// run claims and renews the leases until ctx is done, then drops them.
func (s *slots) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	last := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.poke:
			if d := slotMinTick - time.Since(last); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
		}
		last = time.Now()
		next := s.claimAll(ctx)
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(next)
	}
}

// claimAll renews every queue's lease once and returns when to next.
func (s *slots) claimAll(ctx context.Context) time.Duration {
	type item struct {
		queue string
		g     *gate
		claim store.SlotClaim
	}
	var items []item
	s.mu.Lock()
	for q, g := range s.gates {
		want := min(g.limit, g.busy+g.waiting)
		if want == 0 && time.Since(g.active) < slotLinger {
			want = 1 // keep a slot for the next call of a busy queue
		}
		if want == 0 && g.busy == 0 {
			// Idle: nothing may start on the old grant while the lease
			// is dropped.
			g.granted = 0
		}
		items = append(items, item{q, g, store.SlotClaim{Queue: q, Holder: s.holder, Limit: max(g.limit, 1),
			Want: want, Keep: max(g.granted, g.busy), TTL: slotTTL}})
	}
	s.mu.Unlock()
	next := slotRenew
	for _, it := range items {
		start := time.Now()
		granted, others, err := s.st.ClaimSlots(ctx, it.claim)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("claim event slots", "queue", it.queue, "err", err)
			}
			next = slotContended
			continue
		}
		s.mu.Lock()
		g := it.g
		if granted > g.granted && g.waiting > 0 {
			close(g.wake)
			g.wake = make(chan struct{})
		}
		g.granted, g.claimed, g.others = granted, start, others
		if it.claim.Want == 0 && it.claim.Keep == 0 && g.busy == 0 && g.waiting == 0 && s.gates[it.queue] == g {
			delete(s.gates, it.queue)
		}
		if others > 0 || g.waiting > 0 {
			next = slotContended
		}
		s.mu.Unlock()
	}
	return next
}

// drop gives every lease back (at shutdown, once no call runs).
func (s *slots) drop(ctx context.Context) {
	s.mu.Lock()
	qs := make([]string, 0, len(s.gates))
	for q := range s.gates {
		qs = append(qs, q)
	}
	s.gates = map[string]*gate{}
	s.mu.Unlock()
	for _, q := range qs {
		if _, _, err := s.st.ClaimSlots(ctx, store.SlotClaim{Queue: q, Holder: s.holder, TTL: slotTTL}); err != nil {
			s.log.Warn("drop event slots", "queue", q, "err", err)
		}
	}
}

// snoozeJitter is how long a call that got no slot stays out of the
// queue: short, spread, so that calls given back together do not come
// back together.
func snoozeJitter() time.Duration {
	return 100*time.Millisecond + rand.N(200*time.Millisecond)
}
