package worker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Limits bound the calls a worker runs at once, over every component and
// runtime. The zero value means every default.
type Limits struct {
	// MaxInflight caps calls running at once on the worker
	// (VELO_WORKER_MAX_INFLIGHT). Default DefaultMaxInflight.
	MaxInflight int
	// Memory is the worker's memory budget in bytes (VELO_WORKER_MEMORY).
	// Each running call reserves the most memory it may take in this
	// process (a WASM call: its module's memory cap, see Footprint);
	// calls are admitted while the reservations fit in Memory less a
	// reserve for the process itself (CallBudget). Default: half the
	// machine's memory or of the cgroup's limit, whichever is less.
	Memory int64
	// MaxQueue caps calls waiting for room at once. Default DefaultMaxQueue.
	MaxQueue int
	// QueueWait is the longest a call waits for room before it is turned
	// away with 503. Default DefaultQueueWait.
	QueueWait time.Duration
	// HeapFloor, when set, keeps the Go collector's goal at least that
	// many bytes above the live heap while the worker runs (heapfloor.go);
	// it sets the process's GOGC, so only a worker that owns its process
	// sets it (velo up, velo worker: DefaultHeapFloor unless GOGC is set).
	HeapFloor int64
}

// Defaults of Limits.
const (
	DefaultMaxInflight = 512
	DefaultMaxQueue    = 256
	DefaultQueueWait   = time.Second
	// RetryAfter is what a 503 for a full worker or component tells the
	// client to wait, in seconds: about one queue wait.
	RetryAfter = "1"
	// maxReserve caps what the budget keeps back for the process itself.
	maxReserve = 128 << 20
	// callFootprint is what a call of an instance without a Footprint is
	// reckoned to take in the worker: buffers and a goroutine (a Docker
	// call's memory is the container's, limited by its cgroup).
	callFootprint = 256 << 10
)

// Footprint is implemented by an Instance whose calls run in the worker's
// own process, as a WASM module does: CallMemory is the most memory one
// call may take there (its linear memory cap and buffers). Admission
// reserves it for the call's duration. It must not change over the
// instance's life.
type Footprint interface {
	CallMemory() int64
}

// IdleMemory is implemented by a Runtime that keeps memory between calls
// and can give it back on demand, as worker/wasm keeps idle instances for
// reuse. Admission counts IdleMemory (bytes held now) against the calls'
// budget beside their reservations, and when an admitted call leaves too
// little room calls ReleaseIdle to free at least n bytes, if it holds
// them; it returns what it freed. Both are safe for concurrent use and
// must not call back into the worker.
type IdleMemory interface {
	IdleMemory() int64
	ReleaseIdle(n int64) int64
}

// withDefaults fills in the zero fields; the machine's memory is read only
// when Memory is unset.
func (l Limits) withDefaults() (Limits, error) {
	if l.MaxInflight < 0 || l.MaxQueue < 0 || l.Memory < 0 || l.QueueWait < 0 {
		return l, fmt.Errorf("worker limits: MaxInflight %d, MaxQueue %d, Memory %d, QueueWait %s: none may be negative",
			l.MaxInflight, l.MaxQueue, l.Memory, l.QueueWait)
	}
	if l.MaxInflight == 0 {
		l.MaxInflight = DefaultMaxInflight
	}
	if l.MaxQueue == 0 {
		l.MaxQueue = DefaultMaxQueue
	}
	if l.QueueWait == 0 {
		l.QueueWait = DefaultQueueWait
	}
	if l.Memory == 0 {
		m, err := DefaultMemory()
		if err != nil {
			return l, fmt.Errorf("worker limits: %w", err)
		}
		l.Memory = m
	}
	return l, nil
}

// CallBudget is the memory calls may reserve together: Memory less what
// the process itself takes besides its calls (the Go runtime, compiled
// code, caches, the router in velo up), reckoned as a quarter of Memory and
// at most 128 MiB.
func (l Limits) CallBudget() int64 {
	return l.Memory - min(l.Memory/4, maxReserve)
}

// DefaultMemory is the default memory budget: half of the machine's memory
// or of the memory limit of the cgroup the process runs in, whichever is
// less.
func DefaultMemory() (int64, error) {
	total, err := memTotal("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("machine memory (set VELO_WORKER_MEMORY): %w", err)
	}
	for _, f := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if n, ok := cgroupLimit(f); ok {
			total = min(total, n)
		}
	}
	return total / 2, nil
}

// memTotal reads MemTotal from a /proc/meminfo file, in bytes.
func memTotal(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("MemTotal:"))
		if !ok {
			continue
		}
		kb, ok := bytes.CutSuffix(bytes.TrimSpace(rest), []byte(" kB"))
		n, err := strconv.ParseInt(string(bytes.TrimSpace(kb)), 10, 64)
		if !ok || err != nil || n <= 0 {
			return 0, fmt.Errorf("%s: bad MemTotal line %q", path, sc.Text())
		}
		return n << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return 0, errors.New(path + ": no MemTotal line")
}

// cgroupLimit reads a cgroup memory limit file: a number of bytes, or
// "max" (v2) or a huge number (v1) when there is no limit.
func cgroupLimit(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0, false
	}
	return n, true
}
