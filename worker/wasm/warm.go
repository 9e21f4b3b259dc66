package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/velo-run/velo/worker"
)

// Why instances are reused: WAGI promises every request a fresh instance,
// and instantiating one (allocating its functions, globals, tables and
// call stacks, applying its segments, and the garbage all that leaves) was
// most of the CPU a small module's request took. A reused instance keeps
// that promise if, before it serves again, everything a request can change
// in it is put back as it was right after instantiation:
//
//   - linear memory: copied back from an image taken after instantiation;
//     an instance whose memory grew is discarded (wazero cannot shrink it);
//   - mutable globals: set back (scanModule exports them for this);
//   - tables and passive segments: unchangeable, or the module is not
//     reused (scanModule refuses every instruction that changes them);
//   - WASI: the environment, arguments and stdio are the request's own
//     (they are read through the context and per-request streams), and an
//     instance whose descriptor table the request changed — a file left
//     open, stdout or a preopen closed, flags changed — is discarded
//     (wasiState); clocks and the random source have no state to leak;
//   - proc_exit ends the call without closing the instance (instantiateWASI),
//     so exit codes work as before.
//
// Anything else — a trap, a timeout, a client gone, an answer refused, a
// module closed — discards the instance, as does any doubt: what is reused
// is only what was shown to be restorable. The idle instances of a
// deployment are few (maxWarmIdle), count against a Runtime-wide budget
// (warmBudget) and, through IdleMemory, against the worker's memory
// budget (admission closes them with ReleaseIdle when a call needs the
// room), and are closed once the deployment goes a sweep without
// requests, so idle components hold none.

const (
	// maxWarmIdle is the most idle instances a deployment keeps: about
	// the calls a busy worker runs at once (a call waits on its client
	// only for an answer over 64 KiB).
	maxWarmIdle = 16
	// warmBudget bounds the bytes idle instances and their memory images
	// hold, across a Runtime.
	warmBudget = 32 << 20
	// warmOverhead is what wazero's side of an instance is reckoned at
	// (functions, call stack), besides its linear memory.
	warmOverhead = 16 << 10
)

// warmPool holds one deployment's idle instances, all pristine. It is safe
// for concurrent use.
type warmPool struct {
	rt *Runtime

	mu      sync.Mutex
	idle    []*warm
	image   *memImage // pristine linear memory, nil until the first instance
	globals []uint64  // pristine values of the mutable globals, in scan order
	charged int64     // what idle and image hold of rt.warmBudget
	used    bool      // taken since the last sweep
	listed  bool      // in rt.warmPools
	closed  bool

	// grown counts the instances discarded in a row because their memory
	// grew; at maxGrown the deployment stops reusing (off): a module that
	// grows on every request (Go's runtime does at start) would only pay
	// for the attempt.
	grown atomic.Int32
	off   atomic.Bool
}

// maxGrown is how many instances in a row may grow before a deployment's
// instances are no longer reused.
const maxGrown = 8

// warm is one instance that may serve many requests, one at a time.
type warm struct {
	code    *code
	mod     api.Module
	fns     map[string]api.Function // entry points, looked up once
	globals []api.MutableGlobal
	// stop is the global its stop checks test, nil when wazero stops its
	// calls (stop.go); stopped says a call's context set it.
	stop    api.MutableGlobal
	stopped bool
	c       *call // the request it serves, nil between requests
	charged int64 // what it holds of the budget while idle
}

// warmStdin, warmStdout and warmStderr are an instance's stdio: they pass
// on to the streams of the request it serves.
type (
	warmStdin  struct{ w *warm }
	warmStdout struct{ w *warm }
	warmStderr struct{ w *warm }
)

func (s warmStdin) Read(p []byte) (int, error) {
	if s.w.c == nil {
		return 0, io.EOF
	}
	return s.w.c.stdin.Read(p)
}

func (s warmStdout) Write(p []byte) (int, error) {
	if s.w.c == nil {
		return 0, io.ErrClosedPipe
	}
	return s.w.c.stdout.Write(p)
}

func (s warmStderr) Write(p []byte) (int, error) {
	if s.w.c == nil {
		return 0, io.ErrClosedPipe
	}
	return s.w.c.stderr.Write(p)
}

// newWarmPool returns the pool of a new deployment of mod, nil when mod's
// instances may not be reused.
func (rt *Runtime) newWarmPool(mod *module) *warmPool {
	if !mod.reuse.reusable {
		return nil
	}
	return &warmPool{rt: rt}
}

// runWarm runs entry for c in an idle instance of code, or a new one, and
// keeps the instance for the next request when it can be restored.
func (in *instance) runWarm(ctx context.Context, code *code, entry string, c *call) error {
	p := in.warm
	w := p.take(code)
	if w == nil {
		var err error
		if w, err = in.newWarm(ctx, code); err != nil {
			return err
		}
	}
	c.wasi.reset()
	w.c = c
	err := w.call(ctx, entry)
	w.c = nil
	var exit *sys.ExitError
	if (err == nil || errors.As(err, &exit)) && !w.stopped && ctx.Err() == nil && c.wasi.clean() && c.stdout.err == nil && p.restore(w) {
		p.grown.Store(0)
		p.put(w)
	} else {
		in.rt.warmDiscards.Add(1)
		w.close()
	}
	return err
}

// newWarm instantiates code for reuse, without running its start
// functions, and takes the pool's image of its pristine state if there is
// none yet.
func (in *instance) newWarm(ctx context.Context, code *code) (*warm, error) {
	w := &warm{code: code, fns: make(map[string]api.Function, 2)}
	cfg := in.base.
		WithStdin(warmStdin{w}).
		WithStdout(warmStdout{w}).
		WithStderr(warmStderr{w}).
		WithStartFunctions()
	mod, err := code.rt.InstantiateModule(ctx, code.mod, cfg)
	if err != nil {
		if mod != nil {
			_ = mod.Close(ctx)
		}
		return nil, err
	}
	w.mod = mod
	if code.stops {
		if w.stop, err = stopGlobal(mod); err != nil {
			_ = mod.Close(ctx)
			return nil, fmt.Errorf("module %s: %w", in.mod.name, err)
		}
	}
	for _, g := range in.mod.reuse.globals {
		mg, ok := mod.ExportedGlobal(globalExport(g)).(api.MutableGlobal)
		if !ok {
			_ = mod.Close(ctx)
			return nil, fmt.Errorf("module %s: global %d is not exported mutable", in.mod.name, g)
		}
		w.globals = append(w.globals, mg)
	}
	in.rt.warmNew.Add(1)
	in.warm.pristine(w)
	return w, nil
}

// call runs entry as a fresh instance would: _start, or _initialize then
// entry, armed to stop when ctx is done when w has a stop global. Errors
// read as InstantiateModule's.
func (w *warm) call(ctx context.Context, entry string) error {
	if w.stop != nil {
		w.code.running.Add(1)
		disarm := arm(ctx, w.stop)
		defer func() {
			if !disarm() {
				w.stopped = true // set, or being set: not to run again
			}
			w.code.running.Add(-1)
		}()
	}
	if entry != startEntry {
		if err := w.callExport(ctx, "_initialize", false); err != nil {
			return err
		}
	}
	return w.callExport(ctx, entry, entry != startEntry)
}

func (w *warm) callExport(ctx context.Context, name string, required bool) error {
	fn, ok := w.fns[name]
	if !ok {
		fn = w.mod.ExportedFunction(name)
		if w.fns != nil {
			w.fns[name] = fn
		}
	}
	if fn == nil {
		if required {
			return fmt.Errorf("module exports no function %q", name) // checked at Prepare
		}
		return nil
	}
	_, err := fn.Call(ctx)
	var exit *sys.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		if exit.ExitCode() == 0 && (name == startEntry || required) {
			return nil
		}
		return err
	case required:
		return err
	}
	return fmt.Errorf("module[] function[%s] failed: %w", name, err)
}

func (w *warm) close() {
	_ = w.mod.Close(context.Background())
}

// pristine takes the image of w's state, unless the pool has one.
func (p *warmPool) pristine(w *warm) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.image != nil || p.closed {
		return
	}
	image := &memImage{}
	if mem := w.mod.Memory(); mem != nil {
		buf, _ := mem.Read(0, mem.Size())
		if len(buf) > maxPooledMemory {
			return // too large to keep: every instance is discarded
		}
		image = newMemImage(buf)
		if !p.rt.warmBudget.take(int64(len(image.data))) {
			return
		}
		p.charged += int64(len(image.data))
	}
	p.image = image
	p.globals = make([]uint64, len(w.globals))
	for i, g := range w.globals {
		p.globals[i] = g.Get()
	}
}

// restore puts w back in its pristine state, or reports that it cannot.
func (p *warmPool) restore(w *warm) bool {
	p.mu.Lock()
	image, globals := p.image, p.globals
	p.mu.Unlock()
	if image == nil || w.mod.IsClosed() {
		return false
	}
	if mem := w.mod.Memory(); mem != nil {
		buf, ok := mem.Read(0, mem.Size())
		if !ok || len(buf) != image.size {
			if p.grown.Add(1) >= maxGrown {
				p.off.Store(true)
			}
			return false // it grew
		}
		image.restore(buf)
	} else if image.size != 0 {
		return false
	}
	for i, g := range w.globals {
		g.Set(globals[i])
	}
	return true
}

// take returns an idle instance of code, closing those of other code (one
// unloaded or replaced meanwhile), or nil.
func (p *warmPool) take(code *code) *warm {
	p.mu.Lock()
	p.used = true
	var stale []*warm
	var w *warm
	for len(p.idle) > 0 && w == nil {
		last := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		p.uncharge(last.charged)
		if last.code == code {
			w = last
		} else {
			stale = append(stale, last)
		}
	}
	p.mu.Unlock()
	for _, s := range stale {
		s.close()
	}
	return w
}

// put keeps w for the next request, or closes it when the pool is full,
// closed or over budget.
func (p *warmPool) put(w *warm) {
	p.mu.Lock()
	n := int64(warmOverhead)
	if p.image != nil {
		n += int64(p.image.size) // its linear memory
	}
	if p.closed || len(p.idle) >= maxWarmIdle || !p.rt.warmBudget.take(n) {
		p.mu.Unlock()
		w.close()
		return
	}
	p.charged += n
	w.charged = n
	p.idle = append(p.idle, w)
	list := !p.listed
	p.listed = true
	p.mu.Unlock()
	if list {
		p.rt.listWarm(p)
	}
}

// uncharge gives n bytes back to the budget. p.mu must be held.
func (p *warmPool) uncharge(n int64) {
	p.charged -= n
	p.rt.warmBudget.used.Add(-n)
}

// sweep empties the pool unless it was used since the last sweep, and
// reports whether it is empty (and no longer listed).
func (p *warmPool) sweep() bool {
	p.mu.Lock()
	if p.used && !p.closed {
		p.used = false
		p.mu.Unlock()
		return false
	}
	idle := p.emptyLocked()
	p.listed = false
	p.mu.Unlock()
	for _, w := range idle {
		w.close()
	}
	return true
}

// close empties the pool for good: the deployment has drained.
func (p *warmPool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.emptyLocked()
	p.mu.Unlock()
	for _, w := range idle {
		w.close()
	}
}

func (p *warmPool) emptyLocked() []*warm {
	idle := p.idle
	p.idle = nil
	p.image, p.globals = nil, nil
	p.uncharge(p.charged)
	return idle
}

// IdleMemory is what idle reusable instances and their memory images hold
// now, in bytes (worker.IdleMemory: admission counts it against the
// worker's memory budget).
func (rt *Runtime) IdleMemory() int64 { return rt.warmBudget.used.Load() }

// ReleaseIdle closes idle instances, a deployment's pool at a time (its
// image with them), until at least n bytes are freed or none is left, and
// returns what it freed (worker.IdleMemory: admission needs the room for
// a call). A pool emptied so keeps serving: its next request makes a
// fresh instance, and the image is taken again.
func (rt *Runtime) ReleaseIdle(n int64) int64 {
	rt.warmMu.Lock()
	pools := make([]*warmPool, 0, len(rt.warmPools))
	for p := range rt.warmPools {
		pools = append(pools, p)
	}
	rt.warmMu.Unlock()
	var freed int64
	for _, p := range pools {
		if freed >= n {
			break
		}
		p.mu.Lock()
		freed += p.charged
		idle := p.emptyLocked()
		p.mu.Unlock()
		for _, w := range idle {
			w.close()
		}
	}
	return freed
}

var _ worker.IdleMemory = (*Runtime)(nil)

// listWarm adds p to the pools the idle sweep looks at.
func (rt *Runtime) listWarm(p *warmPool) {
	rt.warmMu.Lock()
	rt.warmPools[p] = struct{}{}
	rt.warmMu.Unlock()
}

// sweepWarm empties the pools no request used since the previous sweep.
func (rt *Runtime) sweepWarm() {
	rt.warmMu.Lock()
	pools := make([]*warmPool, 0, len(rt.warmPools))
	for p := range rt.warmPools {
		pools = append(pools, p)
	}
	rt.warmMu.Unlock()
	for _, p := range pools {
		if p.sweep() {
			rt.warmMu.Lock()
			// Listed again meanwhile by a put: it stays.
			p.mu.Lock()
			if !p.listed {
				delete(rt.warmPools, p)
			}
			p.mu.Unlock()
			rt.warmMu.Unlock()
		}
	}
}

// Why an image holds only the pages that are not zero: a module's pristine
// memory is mostly zero (the stack and the heap; a C module's 128 KiB has
// one or two pages of data), and copying all of it back after each request
// was as much CPU as the request's own code. A page that is zero in the
// image is only read, and cleared if the request wrote to it; a page with
// data is copied back.

// imagePage is the granule of a memory image.
const imagePage = 4096

// zeroPage is imagePage zero bytes, to compare with.
var zeroPage [imagePage]byte

// memImage is a pristine linear memory: its size, and the contents of its
// pages that are not all zero.
type memImage struct {
	size  int
	pages []int32 // indices of the pages with data, ascending
	data  []byte  // their contents, back to back
}

func newMemImage(buf []byte) *memImage {
	m := &memImage{size: len(buf)}
	for off := 0; off < len(buf); off += imagePage {
		page := buf[off:min(off+imagePage, len(buf))]
		if !bytes.Equal(page, zeroPage[:len(page)]) {
			m.pages = append(m.pages, int32(off/imagePage))
			m.data = append(m.data, page...)
		}
	}
	return m
}

// restore makes buf, of m.size bytes, equal to the image.
func (m *memImage) restore(buf []byte) {
	next, data := 0, m.data
	for i, off := 0, 0; off < len(buf); i, off = i+1, off+imagePage {
		page := buf[off:min(off+imagePage, len(buf))]
		if next < len(m.pages) && int(m.pages[next]) == i {
			copy(page, data)
			data = data[len(page):]
			next++
		} else if !bytes.Equal(page, zeroPage[:len(page)]) {
			clear(page)
		}
	}
}
