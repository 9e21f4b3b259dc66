package wasm

import (
	"context"
	"fmt"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// HitsStore is where RunStats writes the outbound call counts: beside the
// routers' hits, in the per-minute statistics the API serves.
type HitsStore interface {
	AddHits(ctx context.Context, batch []store.Hits) error
}

// DefaultStatsFlush is how often RunStats writes by default.
const DefaultStatsFlush = 2 * time.Second

// RunStats writes, every `every` until ctx ends (and once more then), the
// outbound HTTP calls each component made since the last write into st's
// per-minute statistics, counted in the minute of the write. A failed
// write is retried with the next: nothing counted is lost while the store
// is down.
func (rt *Runtime) RunStats(ctx context.Context, st HitsStore, every time.Duration) error {
	if every <= 0 {
		every = DefaultStatsFlush
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := rt.FlushStats(fctx, st); err != nil {
				rt.log.Warn("final outbound stats flush failed", "err", err)
			}
			return nil
		case <-t.C:
			if err := rt.FlushStats(ctx, st); err != nil && ctx.Err() == nil {
				rt.log.Warn("flush outbound stats failed; kept for the next try", "err", err)
			}
		}
	}
}

// FlushStats writes the outbound calls counted since the last successful
// flush (see RunStats), then forgets the counters of components no longer
// served here whose calls are all written. Flushes are serialized.
func (rt *Runtime) FlushStats(ctx context.Context, st HitsStore) error {
	o := rt.out
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	now := time.Now().UTC()
	totals := rt.OutboundTotals()
	var batch []store.Hits
	for name, t := range totals {
		calls, errs := t.OK+t.Refused+t.Failed, t.Refused+t.Failed
		prev := o.flushed[name]
		if calls == prev.calls {
			continue
		}
		batch = append(batch, store.Hits{Component: name, Minute: now,
			Outbound: calls - prev.calls, OutboundErrors: errs - prev.errs})
	}
	if len(batch) > 0 {
		if err := st.AddHits(ctx, batch); err != nil {
			return fmt.Errorf("outbound stats: %w", err)
		}
	}
	for _, h := range batch {
		p := o.flushed[h.Component]
		o.flushed[h.Component] = flushedCount{calls: p.calls + h.Outbound, errs: p.errs + h.OutboundErrors}
	}
	o.pruneFlushed(totals)
	return nil
}

// flushedCount is what FlushStats has written of one component's calls.
type flushedCount struct{ calls, errs int64 }
