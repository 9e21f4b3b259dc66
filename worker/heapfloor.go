package worker

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Why a heap floor: every WASM call allocates some tens of KiB that die
// with it (wazero's instance, its call stack, the request), while a small
// worker's live heap is a few MiB. The collector's goal is twice the live
// heap, never under 4 MiB, so such a worker collected every few hundred
// calls: about an eighth of its CPU time under load went to the collector
// (runtime/metrics, files bench page at 32 connections). Holding the goal
// at least HeapFloor above the live heap collects several times less often
// and costs at most HeapFloor of memory; a large live heap (thousands of
// components) is left to GOGC's own goal, which is then the larger, and
// the memory limit still bounds the whole.

// DefaultHeapFloor is Limits.HeapFloor where the worker's process sets it
// (velo up, velo worker), unless GOGC is set.
const DefaultHeapFloor = 16 << 20

// heapFloorEvery is how often the goal is set again from the live heap.
const heapFloorEvery = time.Second

// gcPercentFor is the GOGC that puts the collector's goal at least floor
// above a live heap of live bytes, and never under base.
func gcPercentFor(live, floor int64, base int) int {
	if live <= 0 {
		live = 1 << 20
	}
	p := int((floor*100 + live - 1) / live)
	return max(p, base)
}

// holdHeapFloor keeps the collector's goal at least floor above the live
// heap until ctx is done, then gives the process back the percent it had.
func holdHeapFloor(ctx context.Context, floor int64) {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		return // GOGC=off: the memory limit alone rules
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	set := base
	t := time.NewTicker(heapFloorEvery)
	defer t.Stop()
	defer func() { debug.SetGCPercent(base) }()
	for {
		metrics.Read(sample)
		live := int64(0)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			live = int64(sample[0].Value.Uint64())
		}
		// Set again only on a change of a tenth or more: SetGCPercent
		// briefly stops the world.
		if p := gcPercentFor(live, floor, base); p*10 < set*9 || p*10 > set*11 {
			debug.SetGCPercent(p)
			set = p
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
