package wasm

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/tetratelabs/wazero"
)

// Why two tiers (Config.BackgroundCompile): wazero's compiler takes tens of
// milliseconds of CPU for even a small C module (about 30 ms for a 29 KiB
// one here), so a worker that compiles every new binary before its
// deployment is ready can take in only a few dozen new components per
// second per core, and a burst of deploys queues behind the compiler.
// wazero's interpreter builds the same module tens of times faster and runs
// a small WAGI request in about three times the CPU of machine code. So a
// binary with no machine code in the disk cache is first built for the
// interpreter, which validates it exactly as the compiler would (the same
// decoder and validator), answers _routes and serves the deployment's first
// requests. Interpreter code is big (megabytes of Go heap for a 29 KiB C
// module, against tens of KiB of machine code), so Prepare unloads it
// again.
//
// Prepare also puts the module in line for its machine code, which one
// background goroutine compiles into the disk cache, so that the first
// call to a component deployed long ago and never called since is a read
// of the disk cache (decode, validate, map the code: about a millisecond
// for that C module), not an interpreter build under a request (the
// deadline that matters: ≤ 5 ms p99 for a first call). Two queues keep a
// burst of deploys from delaying what requests wait for: a module a
// request runs on the interpreter goes in the urgent queue, compiled next
// and swapped in; a module just prepared goes in the deployed queue,
// compiled only when the urgent one is empty, and after each such compile
// the goroutine rests as long as the compile took, so that deploy-time
// compiling uses at most half of one core and the deploys' own work keeps
// the rest. A module no one holds any more when its turn comes (a version
// superseded and retired meanwhile) is skipped. From then on, and after
// any unload or restart, the module loads from the disk cache. Calls
// already running on the interpreter's code finish there (pins), and the
// last of them closes it.

// nativeJob is a module waiting for its machine code, and where its binary
// is.
type nativeJob struct {
	m    *module
	path string
}

// tierFor returns the runtime to build m's code in: m's own (machine code,
// from the disk cache when it is there) or, with BackgroundCompile and no
// machine code on disk yet, the interpreter's for m's memory limit.
func (rt *Runtime) tierFor(ctx context.Context, m *module) (wazero.Runtime, bool, error) {
	if !rt.cfg.BackgroundCompile || m.file == "" {
		return m.rt, false, nil
	}
	rt.mu.Lock()
	native := m.native
	rt.mu.Unlock()
	if native {
		return m.rt, false, nil
	}
	if _, err := os.Stat(m.file); err == nil {
		rt.mu.Lock()
		m.native = true
		rt.mu.Unlock()
		return m.rt, false, nil
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return nil, false, errors.New("wasm runtime closed")
	}
	if r, ok := rt.interps[m.key.pages]; ok {
		return r, true, nil
	}
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter().
		WithMemoryLimitPages(m.key.pages).
		WithCloseOnContextDone(true))
	if err := instantiateWASI(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, false, err
	}
	if err := rt.out.instantiate(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, false, err
	}
	rt.interps[m.key.pages] = r
	return r, true, nil
}

// Where a module waits for its machine code (module.queued).
const (
	notQueued = iota
	queuedDeployed
	queuedUrgent
)

// queueNative puts m in line for its machine code, unless it is already:
// urgent (the first request that runs on its interpreter's code) or not
// (Prepare, see above). An urgent call moves one waiting in the deployed
// queue ahead; the entry it leaves there is skipped.
func (rt *Runtime) queueNative(m *module, path string, urgent bool) {
	rt.mu.Lock()
	// One whose machine code is already on disk (compiled while this
	// load ran) is queued too when urgent: the job then swaps it in.
	if rt.closed || m.queued == queuedUrgent || (m.queued == queuedDeployed && !urgent) || (!urgent && m.native) {
		rt.mu.Unlock()
		return
	}
	if urgent {
		m.queued = queuedUrgent
		rt.natives = append(rt.natives, nativeJob{m, path})
	} else {
		m.queued = queuedDeployed
		rt.deployed = append(rt.deployed, nativeJob{m, path})
	}
	rt.mu.Unlock()
	select {
	case rt.wake <- struct{}{}:
	default:
	}
}

// compileNatives compiles the queued modules' machine code, one at a time,
// urgent ones first, until Close; after each compile from the deployed
// queue it rests as long as that compile took, unless an urgent one comes.
func (rt *Runtime) compileNatives() {
	defer close(rt.bgDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-rt.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	var restUntil time.Time // no deployed-queue compile before it
	for {
		job, urgent, ok := rt.nextNative(time.Now().Before(restUntil))
		if !ok {
			var rest <-chan time.Time
			var t *time.Timer
			if d := time.Until(restUntil); d > 0 {
				t = time.NewTimer(d)
				rest = t.C
			}
			select {
			case <-rt.stop:
				return
			case <-rt.wake:
			case <-rest:
			}
			if t != nil {
				t.Stop()
			}
			continue
		}
		start := time.Now()
		compiled := rt.compileNative(ctx, job)
		if ctx.Err() != nil {
			return
		}
		if compiled && !urgent {
			restUntil = time.Now().Add(time.Since(start))
		}
	}
}

// nextNative takes the next job: an urgent one, else (unless resting) one
// from the deployed queue whose module is still wanted and has no machine
// code yet.
func (rt *Runtime) nextNative(resting bool) (job nativeJob, urgent, ok bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.natives) > 0 {
		job = rt.natives[0]
		rt.natives[0] = nativeJob{}
		rt.natives = rt.natives[1:]
		job.m.queued = notQueued
		return job, true, true
	}
	for !resting && len(rt.deployed) > 0 {
		job = rt.deployed[0]
		rt.deployed[0] = nativeJob{}
		rt.deployed = rt.deployed[1:]
		if job.m.queued != queuedDeployed {
			continue // moved to the urgent queue, or compiled
		}
		job.m.queued = notQueued
		if job.m.native || rt.modules[job.m.key] != job.m {
			continue
		}
		return job, false, true
	}
	return nativeJob{}, false, false
}

// compileNative compiles job's machine code into the disk cache and puts
// it in place of the interpreter's code if that is what job's module holds
// loaded; a module no one holds any more is skipped, and a file written for
// a binary dropped meanwhile is removed again. It reports whether it ran
// the compiler.
func (rt *Runtime) compileNative(ctx context.Context, job nativeJob) bool {
	m := job.m
	rt.mu.Lock()
	held := !rt.closed && rt.modules[m.key] == m
	rt.mu.Unlock()
	if !held {
		return false
	}
	bin, err := m.read(job.path)
	if err != nil {
		rt.log.Warn("compile module in the background", attrModule, m.name, "err", err)
		return false
	}
	start := time.Now()
	mod, err := m.rt.CompileModule(ctx, bin)
	if err != nil {
		if ctx.Err() == nil {
			rt.log.Warn("compile module in the background; it stays on the interpreter", attrModule, m.name, "err", err)
		}
		return true
	}
	rt.nativeCompiles.Add(1)
	rt.log.Debug("compiled module in the background", attrModule, m.name, attrElapsed, time.Since(start))
	var old *code
	var removeErr error
	rt.mu.Lock()
	m.native = true
	cur := m.code.Load()
	if !rt.closed && rt.modules[m.key] == m && cur != nil && cur.interp {
		c := &code{mod: mod, rt: m.rt, stops: m.reuse.stop, running: &rt.stopping}
		c.used.Store(cur.used.Load())
		m.code.Store(c)
		old, mod = cur, nil
	}
	if _, held := rt.binaries[m.key.hash]; !held && m.file != "" {
		// Dropped (and perhaps retired) while it compiled: no one will
		// load this file, and retiring has come and gone.
		if err := os.Remove(m.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			removeErr = err
		}
	}
	rt.mu.Unlock()
	if mod != nil {
		_ = mod.Close(ctx)
	}
	if old != nil {
		old.replace()
	}
	if removeErr != nil {
		rt.log.Warn("remove compiled module", attrModule, m.name, "err", removeErr)
	}
	return true
}
