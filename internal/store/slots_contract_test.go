package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testEventSlots(t *testing.T, s *Store) {
	ctx := context.Background()
	claim := func(holder string, want, keep int, ttl time.Duration) (int, int) {
		t.Helper()
		g, o, err := s.ClaimSlots(ctx, SlotClaim{Queue: "q", Holder: holder, Limit: 4, Want: want, Keep: keep, TTL: ttl})
		must(t, err)
		return g, o
	}
	want := func(what string, gotG, gotO, g, o int) {
		t.Helper()
		if gotG != g || gotO != o {
			t.Errorf("%s: granted %d, others %d; want %d, %d", what, gotG, gotO, g, o)
		}
	}
	const ttl = time.Minute
	g, o := claim("a", 1, 0, ttl)
	want("a alone", g, o, 4, 0)
	g, o = claim("b", 4, 0, ttl)
	want("b while a holds all", g, o, 0, 1)
	g, o = claim("a", 4, 4, ttl)
	want("a shrinking to its share, still running 4", g, o, 2, 1)
	g, o = claim("b", 4, 0, ttl)
	want("b while a keeps 4", g, o, 0, 1)
	g, o = claim("a", 4, 2, ttl)
	want("a down to 2", g, o, 2, 1)
	g, o = claim("b", 4, 0, ttl)
	want("b once a gave 2 back", g, o, 2, 1)
	// A lease that wants less than an even share leaves the rest.
	g, o = claim("b", 1, 2, ttl)
	want("b wanting 1 (two of its calls still running)", g, o, 1, 1)
	g, o = claim("a", 4, 2, ttl)
	want("a beside b wanting 1", g, o, 2, 1)
	g, o = claim("b", 1, 1, ttl)
	want("b down to 1", g, o, 1, 1)
	g, o = claim("a", 4, 2, ttl)
	want("a taking what b left", g, o, 3, 1)
	// Want 0 is granted nothing but keeps what it keeps; with Keep 0 too
	// the lease goes.
	g, o = claim("b", 0, 1, ttl)
	want("b idle, one call running", g, o, 0, 1)
	g, o = claim("b", 0, 0, ttl)
	want("b done", g, o, 0, 1)
	g, o = claim("a", 4, 3, ttl)
	want("a alone again", g, o, 4, 0)
	// A lease not renewed in time is dead: its slots come back.
	g, o = claim("c", 4, 0, ttl)
	want("c while a holds all", g, o, 0, 1)
	g, o = claim("a", 4, 4, -time.Second) // its last claim: gone at once
	want("a with c wanting", g, o, 2, 1)
	g, o = claim("c", 4, 0, ttl)
	want("c after a's lease expired", g, o, 4, 0)
	// Queues are separate.
	if g, o, err := s.ClaimSlots(ctx, SlotClaim{Queue: "other", Holder: "a", Limit: 2, Want: 2, TTL: ttl}); err != nil || g != 2 || o != 0 {
		t.Errorf("another queue: %d %d %v", g, o, err)
	}

	// Hammer: holders claim at once, each running what it was granted
	// (more only after its claim committed, less only after too): the
	// slots in use never exceed the limit.
	const limit, holders, rounds = 3, 8, 100
	var running, peak atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, holders)
	for h := range holders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur := 0
			for r := range rounds {
				w := limit
				if (h+r)%3 == 0 {
					w = 1
				}
				g, _, err := s.ClaimSlots(ctx, SlotClaim{Queue: "hammer", Holder: fmt.Sprint("h", h), Limit: limit, Want: w, Keep: cur, TTL: ttl})
				if err != nil {
					errs <- err
					return
				}
				n := running.Add(int64(g - cur))
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				cur = g
			}
			running.Add(int64(-cur))
			_, _, err := s.ClaimSlots(ctx, SlotClaim{Queue: "hammer", Holder: fmt.Sprint("h", h), Limit: limit, TTL: ttl})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if p := peak.Load(); p > limit || p == 0 {
		t.Errorf("slots in use at most %d at once, limit %d", p, limit)
	}
}
