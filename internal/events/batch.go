package events

import (
	"context"
	"errors"
	"sync"
	"time"
)

// groupCommit hands the items many goroutines submit at once to one
// transaction (group commit): the enqueues of concurrent async requests
// become one River InsertManyTx, the attempts concurrent workers finish one
// multi-row insert. A commit costs about the same for one row as for a
// hundred, so under load this is what lets the queue keep up, and when idle
// it adds no wait: an item submitted with no batch in flight is flushed at
// once, alone. Items submitted while flushes are in flight wait for a free
// slot and go together, at most max of them; so a batch is whatever
// arrived during the previous commit, and no timer is needed.
//
// Submit returns only once the batch holding the item has committed, with
// the item's own result, or with the batch's error for every item in it.
// No goroutine outlives its batch: the submitter that finds a free slot
// flushes, and a flusher that leaves items waiting starts the next flush
// before it returns.
type groupCommit[T, R any] struct {
	// flush commits items in one transaction and returns a result per
	// item, or one error for all.
	flush   func(ctx context.Context, items []T) ([]R, error)
	max     int           // items per batch
	slots   int           // flushes in flight at once
	bound   int           // items waiting at most (errBacklog beyond)
	timeout time.Duration // a flush's deadline

	mu       sync.Mutex
	waiting  []*pendingItem[T, R]
	inFlight int
}

type pendingItem[T, R any] struct {
	ctx  context.Context
	item T
	done chan struct{}
	res  R
	err  error
}

// errBacklog is Submit's error when more items wait than the bound.
var errBacklog = errors.New("too many writes are waiting for the store")

// Submit adds item to the next batch and waits for that batch's commit or
// for ctx. An item whose ctx ends before its batch is taken is not
// written; one taken already may commit after Submit returned ctx's error.
func (g *groupCommit[T, R]) Submit(ctx context.Context, item T) (R, error) {
	p := &pendingItem[T, R]{ctx: ctx, item: item, done: make(chan struct{})}
	g.mu.Lock()
	if len(g.waiting) >= g.bound {
		g.mu.Unlock()
		var zero R
		return zero, errBacklog
	}
	g.waiting = append(g.waiting, p)
	var batch []*pendingItem[T, R]
	if g.inFlight < g.slots {
		g.inFlight++
		batch = g.takeLocked()
	}
	g.mu.Unlock()
	if batch != nil {
		g.run(ctx, batch)
	}
	select {
	case <-p.done:
		return p.res, p.err
	case <-ctx.Done():
		var zero R
		return zero, ctx.Err()
	}
}

// takeLocked takes the next batch off the waiting list.
func (g *groupCommit[T, R]) takeLocked() []*pendingItem[T, R] {
	n := min(len(g.waiting), g.max)
	batch := make([]*pendingItem[T, R], n)
	copy(batch, g.waiting[:n])
	rest := copy(g.waiting, g.waiting[n:])
	clear(g.waiting[rest:])
	g.waiting = g.waiting[:rest]
	return batch
}

// run flushes batch and then, while items wait, starts the next flush in a
// goroutine of its own (this one's submitter has its answer and goes).
func (g *groupCommit[T, R]) run(ctx context.Context, batch []*pendingItem[T, R]) {
	g.flushOne(ctx, batch)
	g.mu.Lock()
	if len(g.waiting) == 0 {
		g.inFlight--
		g.mu.Unlock()
		return
	}
	next := g.takeLocked()
	g.mu.Unlock()
	go g.run(context.WithoutCancel(ctx), next)
}

// flushOne commits the live items of batch and answers each.
func (g *groupCommit[T, R]) flushOne(ctx context.Context, batch []*pendingItem[T, R]) {
	live := batch[:0:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.err = err
			close(p.done)
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	items := make([]T, len(live))
	for i, p := range live {
		items[i] = p.item
	}
	// The batch is everyone's: no one submitter's cancel ends it.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
	res, err := g.flush(fctx, items)
	cancel()
	if err == nil && len(res) != len(items) {
		err = errors.New("group commit: a result per item was not returned")
	}
	for i, p := range live {
		if err != nil {
			p.err = err
		} else {
			p.res = res[i]
		}
		close(p.done)
	}
}
