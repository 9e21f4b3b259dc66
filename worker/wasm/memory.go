package wasm

import (
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// Why linear memories are pooled: every request instantiates the module
// afresh, and left to itself wazero allocates each instance's memory with
// make([]byte), so every request costs a large allocation that the garbage
// collector then frees and the runtime hands back to the OS, only to fault
// the pages in again on the next request. That was a third of the CPU time
// of a small module's request. Recycled buffers stay resident.
//
// A recycled buffer must never show one request's data to another: the
// invariant is that every byte between a buffer's length and its capacity is
// zero, and Free clears what the module used before the buffer goes back.

// maxPooledMemory is the largest linear memory kept for reuse; bigger ones
// are left to the garbage collector.
const maxPooledMemory = 8 << 20

// memoryPool is an experimental.MemoryAllocator that recycles linear
// memories.
type memoryPool struct {
	pool sync.Pool // of *linearMemory with len(buf) == 0
}

// Allocate implements experimental.MemoryAllocator.
func (p *memoryPool) Allocate(capacity, max uint64) experimental.LinearMemory {
	m, _ := p.pool.Get().(*linearMemory)
	if m == nil {
		m = &linearMemory{pool: p, buf: make([]byte, 0, capacity)}
	}
	m.max = max
	return m
}

// linearMemory is one instance's memory.
type linearMemory struct {
	pool *memoryPool
	buf  []byte // buf[len(buf):cap(buf)] is all zero
	max  uint64
}

// Reallocate implements experimental.LinearMemory: it grows the memory to
// size bytes, the new bytes zero.
func (m *linearMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size] // already zero beyond the old length
		return m.buf
	}
	newCap := min(max(size, 2*uint64(cap(m.buf))), m.max)
	buf := make([]byte, size, newCap)
	copy(buf, m.buf)
	m.buf = buf
	return buf
}

// Free implements experimental.LinearMemory: it zeroes what was used and
// returns the memory to the pool. wazero calls it once, when the instance
// has stopped running.
func (m *linearMemory) Free() {
	if cap(m.buf) > maxPooledMemory {
		m.buf = nil
		return
	}
	clear(m.buf)
	m.buf = m.buf[:0]
	m.pool.pool.Put(m)
}
