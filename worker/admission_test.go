package worker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
)

// gate is an Instance whose calls block until released, counting how many
// run at once.
type gate struct {
	release chan struct{}
	running atomic.Int64
	peak    atomic.Int64
	served  atomic.Int64
}

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) Serve(w http.ResponseWriter, r *http.Request, _ string) {
	n := g.running.Add(1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	select {
	case <-g.release:
	case <-r.Context().Done():
	}
	g.running.Add(-1)
	g.served.Add(1)
	w.WriteHeader(http.StatusOK)
}

func (g *gate) Close(context.Context) error { return nil }

// state is the admission's counts, for tests.
func (a *admission) state() (inflight, queued, comps int, reserved int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inflight, len(a.queue), len(a.comps), a.reserved
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// call serves one request through l on a goroutine; the recorder is sent
// on the returned channel when it is done.
func call(l *limited, ctx context.Context) <-chan *httptest.ResponseRecorder {
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		r := httptest.NewRequestWithContext(ctx, "POST", "/fn/x/", strings.NewReader("body"))
		w := httptest.NewRecorder()
		l.Serve(w, r, "/fn/x")
		done <- w
	}()
	return done
}

func limits(t *testing.T, l Limits) *admission {
	t.Helper()
	l, err := l.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return newAdmission(l)
}

func TestAdmissionComponentCap(t *testing.T) {
	a := limits(t, Limits{Memory: 1 << 30, QueueWait: time.Minute})
	g := newGate()
	l := &limited{Instance: g, adm: a, component: "x", cost: 1 << 20, limit: 2}
	ctx := context.Background()

	running := []<-chan *httptest.ResponseRecorder{call(l, ctx), call(l, ctx)}
	waitFor(t, "two calls running", func() bool { return g.running.Load() == 2 })
	// The next two wait: the component's queue holds as many as its limit.
	queued := []<-chan *httptest.ResponseRecorder{call(l, ctx), call(l, ctx)}
	waitFor(t, "two calls queued", func() bool { _, q, _, _ := a.state(); return q == 2 })

	// One more is turned away at once, its body unread.
	w := <-call(l, ctx)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", w.Code)
	}
	if ra := w.Header().Get("Retry-After"); ra != RetryAfter {
		t.Errorf("Retry-After %q, want %q", ra, RetryAfter)
	}
	if body := w.Body.String(); !strings.Contains(body, "component at its limit") {
		t.Errorf("503 body %q does not say the component is at its limit", body)
	}

	// Releasing calls lets the waiters in, never more than two at once.
	for range 4 {
		g.release <- struct{}{}
	}
	for _, c := range append(running, queued...) {
		if w := <-c; w.Code != http.StatusOK {
			t.Errorf("status %d, want 200", w.Code)
		}
	}
	if p := g.peak.Load(); p != 2 {
		t.Errorf("%d calls ran at once, limit 2", p)
	}
	if in, q, comps, res := a.state(); in != 0 || q != 0 || comps != 0 || res != 0 {
		t.Errorf("after the calls: inflight %d, queued %d, components %d, reserved %d; want all 0", in, q, comps, res)
	}
}

func TestAdmissionQueueDeadline(t *testing.T) {
	a := limits(t, Limits{Memory: 1 << 30, QueueWait: 50 * time.Millisecond})
	g := newGate()
	l := &limited{Instance: g, adm: a, component: "x", cost: 1, limit: 1}
	first := call(l, context.Background())
	waitFor(t, "the first call running", func() bool { return g.running.Load() == 1 })

	w := <-call(l, context.Background()) // waits 50ms, then gives up
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Errorf("queued past the deadline: status %d, Retry-After %q; want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
	if g.running.Load() != 1 || g.served.Load() != 0 {
		t.Error("the waiter ran")
	}
	if _, q, _, _ := a.state(); q != 0 {
		t.Errorf("%d left in the queue", q)
	}
	g.release <- struct{}{}
	<-first
}

func TestAdmissionWorkerQueueBound(t *testing.T) {
	a := limits(t, Limits{Memory: 1 << 30, MaxInflight: 1, MaxQueue: 2, QueueWait: time.Minute})
	g := newGate()
	mk := func(name string) *limited {
		return &limited{Instance: g, adm: a, component: name, cost: 1, limit: 10}
	}
	ctx := context.Background()
	first := call(mk("a"), ctx)
	waitFor(t, "a call running", func() bool { return g.running.Load() == 1 })
	waiting := []<-chan *httptest.ResponseRecorder{call(mk("b"), ctx), call(mk("c"), ctx)}
	waitFor(t, "two calls queued", func() bool { _, q, _, _ := a.state(); return q == 2 })
	w := <-call(mk("d"), ctx)
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "worker at its limit") {
		t.Errorf("past the worker's queue: %d %q, want 503 naming the worker", w.Code, w.Body.String())
	}
	for range 3 {
		g.release <- struct{}{}
	}
	for _, c := range append(waiting, first) {
		if w := <-c; w.Code != http.StatusOK {
			t.Errorf("status %d", w.Code)
		}
	}
}

// TestAdmissionMemoryBudget floods one component: it may take at most half
// the call budget, so another component's call is admitted at once.
func TestAdmissionMemoryBudget(t *testing.T) {
	// Memory 400 bytes: the call budget is 300 (a quarter kept back).
	a := limits(t, Limits{Memory: 400, QueueWait: time.Minute})
	flood, other := newGate(), newGate()
	lf := &limited{Instance: flood, adm: a, component: "flood", cost: 50, limit: 100}
	lo := &limited{Instance: other, adm: a, component: "other", cost: 50, limit: 100}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var floods []<-chan *httptest.ResponseRecorder
	for range 10 {
		floods = append(floods, call(lf, ctx))
	}
	waitFor(t, "the flood admitted up to half the budget", func() bool {
		_, q, _, _ := a.state()
		return flood.running.Load() == 3 && q == 7
	})
	if _, _, _, res := a.state(); res != 150 {
		t.Errorf("reserved %d, want 150", res)
	}
	o := call(lo, ctx)
	waitFor(t, "the other component running", func() bool { return other.running.Load() == 1 })
	other.release <- struct{}{}
	if w := <-o; w.Code != http.StatusOK {
		t.Errorf("other component: status %d", w.Code)
	}
	cancel() // the flood's clients go away: every waiter and call leaves
	for _, c := range floods {
		<-c
	}
	if in, q, comps, res := a.state(); in != 0 || q != 0 || comps != 0 || res != 0 {
		t.Errorf("after cancel: inflight %d, queued %d, components %d, reserved %d; want all 0", in, q, comps, res)
	}
}

// TestAdmissionFairWake checks that freed room goes to the waiter of the
// least busy component, not to the oldest waiter of a busy one.
func TestAdmissionFairWake(t *testing.T) {
	a := limits(t, Limits{Memory: 1 << 30, MaxInflight: 4, QueueWait: time.Minute})
	busy, quiet := newGate(), newGate()
	lb := &limited{Instance: busy, adm: a, component: "busy", cost: 1, limit: 10}
	lq := &limited{Instance: quiet, adm: a, component: "quiet", cost: 1, limit: 10}
	ctx := context.Background()
	var bs []<-chan *httptest.ResponseRecorder
	for range 2 { // half of MaxInflight: the most one component may hold
		bs = append(bs, call(lb, ctx))
	}
	waitFor(t, "busy running", func() bool { return busy.running.Load() == 2 })
	for range 3 {
		bs = append(bs, call(lb, ctx))
	}
	waitFor(t, "busy queued", func() bool { _, q, _, _ := a.state(); return q == 3 })
	// Fill the rest of the worker with a third component.
	third := newGate()
	lt := &limited{Instance: third, adm: a, component: "third", cost: 1, limit: 10}
	ts := []<-chan *httptest.ResponseRecorder{call(lt, ctx), call(lt, ctx)}
	waitFor(t, "third running", func() bool { return third.running.Load() == 2 })
	q := call(lq, ctx)
	waitFor(t, "quiet queued", func() bool { _, q, _, _ := a.state(); return q == 4 })

	third.release <- struct{}{} // one slot frees: quiet, with nothing running, goes first
	waitFor(t, "quiet running", func() bool { return quiet.running.Load() == 1 })
	if n := busy.running.Load(); n != 2 {
		t.Errorf("busy has %d running, want still 2", n)
	}
	quiet.release <- struct{}{}
	third.release <- struct{}{}
	for range 5 {
		busy.release <- struct{}{}
	}
	for _, c := range append(append(bs, ts...), q) {
		<-c
	}
}

// TestAdmissionHammer runs many calls of several components with random
// costs and checks that no limit is ever exceeded; run with -race.
func TestAdmissionHammer(t *testing.T) {
	const (
		maxInflight = 8
		limit       = 3
		memory      = 400 // call budget 300
	)
	a := limits(t, Limits{Memory: memory, MaxInflight: maxInflight, MaxQueue: 16, QueueWait: 20 * time.Millisecond})
	var inflight, reserved atomic.Int64
	var perComp [4]atomic.Int64
	var violations, ok, busy atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 200 {
				c := rng.IntN(len(perComp))
				cost := int64(10 + rng.IntN(60))
				gr, err := a.admit(context.Background(), fmt.Sprint("c", c), cost, limit)
				if err != nil {
					busy.Add(1)
					continue
				}
				ok.Add(1)
				n, r, pc := inflight.Add(1), reserved.Add(cost), perComp[c].Add(1)
				if n > maxInflight || r > 300 || pc > limit {
					violations.Add(1)
				}
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
				}
				inflight.Add(-1)
				reserved.Add(-cost)
				perComp[c].Add(-1)
				a.done(gr)
			}
		})
	}
	wg.Wait()
	if v := violations.Load(); v > 0 {
		t.Errorf("%d calls ran past a limit", v)
	}
	if in, q, comps, res := a.state(); in != 0 || q != 0 || comps != 0 || res != 0 {
		t.Errorf("afterwards: inflight %d, queued %d, components %d, reserved %d; want all 0", in, q, comps, res)
	}
	t.Logf("%d admitted, %d turned away", ok.Load(), busy.Load())
}

func TestLimitsDefaults(t *testing.T) {
	l, err := Limits{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if l.MaxInflight != DefaultMaxInflight || l.MaxQueue != DefaultMaxQueue || l.QueueWait != DefaultQueueWait {
		t.Errorf("defaults %+v", l)
	}
	total, err := memTotal("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	if l.Memory <= 0 || l.Memory > total/2 {
		t.Errorf("default memory %d, want in (0, %d]", l.Memory, total/2)
	}
	if got := (Limits{Memory: 2 << 30}).CallBudget(); got != 2<<30-128<<20 {
		t.Errorf("call budget of 2GiB = %d", got)
	}
	if got := (Limits{Memory: 400}).CallBudget(); got != 300 {
		t.Errorf("call budget of 400 = %d", got)
	}
	if _, err := (Limits{MaxInflight: -1}).withDefaults(); err == nil {
		t.Error("negative MaxInflight accepted")
	}
}

// footprinted is an Instance that says what its calls take.
type footprinted struct {
	gate
	mem int64
}

func (f *footprinted) CallMemory() int64 { return f.mem }

func TestLimitRefusesWhatCannotFit(t *testing.T) {
	w, err := New(Config{Name: "w1", DataDir: t.TempDir(), Limits: Limits{Memory: 512 << 20}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := manifest.Manifest{Memory: 1 << 30}
	if _, err := w.limit(&footprinted{mem: 1<<30 + 1<<20}, "big", m); err == nil ||
		!strings.Contains(err.Error(), "admits calls within 384 MiB") || !strings.Contains(err.Error(), "VELO_WORKER_MEMORY") {
		t.Errorf("a call larger than the budget: err %v, want one naming the budget and VELO_WORKER_MEMORY", err)
	}
	m = manifest.Manifest{Memory: 16 << 20, Concurrency: 3}
	l, err := w.limit(&footprinted{mem: 17 << 20}, "small", m)
	if err != nil {
		t.Fatal(err)
	}
	if l.cost != 17<<20 || l.limit != 3 {
		t.Errorf("cost %d, limit %d; want the footprint and the manifest's concurrency", l.cost, l.limit)
	}
	// An instance without a footprint (Docker) and a manifest stored
	// before concurrency existed.
	l, err = w.limit(newGate(), "docker", manifest.Manifest{})
	if err != nil {
		t.Fatal(err)
	}
	if l.cost != callFootprint || l.limit != manifest.DefaultConcurrency {
		t.Errorf("cost %d, limit %d; want %d and %d", l.cost, l.limit, callFootprint, manifest.DefaultConcurrency)
	}
}

// BenchmarkAdmission is what admission adds to a call: admit and done on
// one component from every core at once.
func BenchmarkAdmission(b *testing.B) {
	l, err := Limits{Memory: 8 << 30}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	a := newAdmission(l)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g, err := a.admit(ctx, "c", 129<<20, 32)
			if err != nil {
				b.Error(err)
				return
			}
			a.done(g)
		}
	})
}

// idleHeld holds memory between calls, as worker/wasm's idle instances do,
// and frees it 64 bytes at a time when asked.
type idleHeld struct {
	held     atomic.Int64
	released atomic.Int64
}

func (h *idleHeld) IdleMemory() int64 { return h.held.Load() }

func (h *idleHeld) ReleaseIdle(n int64) int64 {
	var freed int64
	for freed < n && h.held.Load() > 0 {
		d := min(64, h.held.Load())
		h.held.Add(-d)
		freed += d
	}
	h.released.Add(freed)
	return freed
}

// TestAdmissionCountsIdleMemory: memory a runtime holds between calls
// counts against the budget beside the calls' reservations: it is left
// alone while both fit, and freed (only as much as needed) when an
// admitted call would make them exceed it; it never turns a call away.
func TestAdmissionCountsIdleMemory(t *testing.T) {
	// Memory 400 bytes: the call budget is 300 (a quarter kept back).
	a := limits(t, Limits{Memory: 400, QueueWait: time.Minute})
	idle := &idleHeld{}
	idle.held.Store(200)
	a.idle = []IdleMemory{idle}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var gates []*gate
	var calls []<-chan *httptest.ResponseRecorder
	for i := range 4 {
		g := newGate()
		gates = append(gates, g)
		calls = append(calls, call(&limited{Instance: g, adm: a, component: fmt.Sprint("c", i), cost: 50, limit: 10}, ctx))
		waitFor(t, fmt.Sprintf("call %d running", i), func() bool { return g.running.Load() == 1 })
		_, _, _, reserved := a.state()
		if got := reserved + idle.IdleMemory(); got > 300 {
			t.Errorf("with %d calls running: %d reserved + %d idle = %d, over the budget of 300", i+1, reserved, idle.IdleMemory(), got)
		}
		if i < 2 && idle.released.Load() != 0 {
			t.Errorf("with %d calls running (room left): %d bytes of idle memory released, want none", i+1, idle.released.Load())
		}
	}
	if r := idle.released.Load(); r == 0 || r > 128 {
		t.Errorf("%d bytes of idle memory released, want some, at most 128 (two calls of 50 past the room, freed 64 at a time)", r)
	}
	for i, g := range gates {
		g.release <- struct{}{}
		if w := <-calls[i]; w.Code != http.StatusOK {
			t.Errorf("call %d: status %d", i, w.Code)
		}
	}
}
