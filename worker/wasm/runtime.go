package wasm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxResponse = 32 << 20
	DefaultMaxRequest  = 32 << 20
	DefaultMaxLoaded   = 256
	DefaultIdleUnload  = time.Minute
)

// pageSize is the size of a WebAssembly memory page.
const pageSize = 65536

// Attribute keys of the runtime's log records.
const (
	attrComponent = "component"
	attrModule    = "module"
	attrElapsed   = "elapsed"
	attrMemory    = "memory"
)

// Config configures a Runtime. The zero value is usable: no disk cache,
// slog.Default, 32 MiB caps.
type Config struct {
	// CacheDir holds compiled modules across restarts. Empty means compiled
	// code is cached in memory only.
	CacheDir string
	// Logger receives the runtime's own events (not the components' output,
	// which goes to each deployment's LogSink).
	Logger *slog.Logger
	// MaxResponse caps what a module may write to stdout, in bytes; a module
	// that writes more gets a 502, or its answer is cut off when it is
	// already under way. Default DefaultMaxResponse.
	MaxResponse int64
	// MaxRequest caps a request body, in bytes; a larger one gets a 413.
	// Default DefaultMaxRequest.
	MaxRequest int64
	// SpoolDir holds request bodies of unknown length (chunked) larger than
	// 64 KiB while their call runs, as unlinked temporary files. Default
	// os.TempDir().
	SpoolDir string
	// MaxLoaded bounds the modules whose compiled code is kept in memory;
	// beyond it the least recently used are unloaded, to be loaded again
	// from the disk cache by their next request. Default DefaultMaxLoaded.
	MaxLoaded int
	// IdleUnload is how long compiled code no request uses stays loaded
	// (between one and two of it). Default DefaultIdleUnload.
	IdleUnload time.Duration
	// OutboundMaxResponse caps the bytes of answers to outbound HTTP calls
	// one request may hold at once. Default DefaultOutboundMaxResponse.
	OutboundMaxResponse int64
	// OutboundForbidden are addresses of the cluster (the router's,
	// deploymgr's, the database's) that no outbound call may reach through
	// a host name, besides the special ranges and this machine's own
	// addresses, which are always refused.
	OutboundForbidden []netip.Prefix
	// BackgroundCompile makes preparing a binary whose machine code is not
	// in the disk cache cheap: Prepare builds it for wazero's interpreter
	// (tens of times faster to build than machine code, slower to run),
	// which serves until the machine code, compiled by one background
	// goroutine in arrival order, replaces it. Needs CacheDir; ignored
	// without it. See tier.go.
	BackgroundCompile bool
	// LazyCompile, with BackgroundCompile, compiles a module's machine
	// code only once a request runs it, not soon after Prepare: no CPU
	// spent on components never called, but the first call to one builds
	// interpreter code (milliseconds) instead of reading the disk cache.
	LazyCompile bool
}

// Runtime runs WAGI modules on wazero. It is safe for concurrent use.
//
// It keeps one wazero runtime per distinct memory limit (wazero's limit is
// per runtime), all sharing one compilation cache, and one module per
// (memory limit, module binary), shared by every Instance that runs that
// binary and dropped when the last of them closes.
//
// A module's compiled code is loaded only while it is used: at most
// MaxLoaded modules keep theirs in memory, and code no request used for
// IdleUnload is closed; the next request loads it again from the disk
// cache (compiling it afresh without one). So ten thousand idle components
// cost their bookkeeping, not their machine code.
//
// Retire removes the disk cache files of an artifact no instance runs any
// more, unless another artifact still runs the same binary.
type Runtime struct {
	cfg   Config
	log   *slog.Logger
	cache wazero.CompilationCache
	disk  *diskCache // nil: cache files are not collected
	pools pools
	mem   memoryPool
	// heldFiles bounds what the small files of `files` mounts held in
	// memory take (files_held.go).
	heldFiles fileBudget
	out       *outbound // wasi_experimental_http's client and counters
	// warmBudget bounds what idle reusable instances hold; warmPools are
	// the deployments' pools that hold some, for the idle sweep (warm.go).
	warmBudget fileBudget
	warmMu     sync.Mutex
	warmPools  map[*warmPool]struct{}
	// headerNames maps common canonical header keys to their CGI names (""
	// for those never passed); read-only after New.
	headerNames map[string]string

	stop chan struct{} // closed by Close: ends the idle sweep
	done chan struct{} // closed when the idle sweep has ended

	mu        sync.Mutex
	closed    bool
	runtimes  map[runtimeKey]wazero.Runtime
	modules   map[moduleKey]*module
	binaries  map[[32]byte]*binaryUse // by sha256 of the module binary
	artifacts map[string]*artifactUse // by artifact digest
	// loaded holds the modules whose code is in memory, in no particular
	// order; hand is where the next eviction sweep looks first.
	loaded []*module
	hand   int

	// interps are the interpreter runtimes, by memory limit, of
	// BackgroundCompile; natives and deployed are its queues of modules
	// waiting for their machine code, urgent (a request ran on the
	// interpreter) and not (just prepared), each module at most once in
	// each, so bounded by the modules prepared; wake nudges its goroutine,
	// which closes bgDone when it has ended. See tier.go.
	interps  map[uint32]wazero.Runtime
	natives  []nativeJob
	deployed []nativeJob
	wake     chan struct{}
	bgDone   chan struct{}

	compiles       atomic.Int64 // modules compiled or loaded (this process), for tests
	interpreted    atomic.Int64 // of which built for the interpreter, for tests
	nativeCompiles atomic.Int64 // machine code compiled in the background, for tests
	warmNew        atomic.Int64 // instances made for reuse, for tests
	warmDiscards   atomic.Int64 // of which discarded after a request, for tests
	// noStops makes every module stopped by wazero's checks rather than
	// its own (stop.go), for a benchmark to compare.
	noStops bool
	// stopping counts the calls running on their own stop checks, which
	// closing a wazero runtime does not stop: Close waits for them.
	stopping atomic.Int64
}

var (
	_ worker.Runtime   = (*Runtime)(nil)
	_ worker.Retirer   = (*Runtime)(nil)
	_ worker.Footprint = (*instance)(nil)
)

// moduleKey names one module: its binary at one memory limit.
type moduleKey struct {
	pages uint32
	hash  [32]byte // sha256 of the binary
}

// module is one binary compiled for one memory limit, shared by every
// instance that runs it. refs and slot are guarded by Runtime.mu.
type module struct {
	key  moduleKey
	name string // the manifest's module path, for messages
	rt   wazero.Runtime
	refs int // instances and Prepares holding it
	slot int // index in Runtime.loaded, -1 when not loaded

	loadMu sync.Mutex           // one load at a time
	code   atomic.Pointer[code] // nil while not loaded; stored under Runtime.mu
	file   string               // its disk cache file, "" when unknown

	// reuse says whether its instances may serve more than one request
	// (pristine.go, warm.go).
	reuse scan

	// native says its machine code is in the disk cache (compiled by this
	// process); queued in which of Runtime's queues it waits (notQueued,
	// queuedDeployed, queuedUrgent). Both guarded by Runtime.mu.
	native bool
	queued int
}

// code is a module's compiled code while it is loaded. pins counts the
// calls using it; an eviction swaps 0 for -1, after which no one may pin it.
type code struct {
	mod  wazero.CompiledModule
	rt   wazero.Runtime // the runtime mod was compiled in and runs in
	pins atomic.Int64
	used atomic.Bool // set by each use, cleared by each sweep
	// interp marks code built for the interpreter (BackgroundCompile);
	// replaced says its machine code took its place, and the last unpin
	// closes it.
	interp   bool
	replaced atomic.Bool
	called   atomic.Bool // a request ran on it (interp): machine code was asked for
	// stops says calls are stopped by the module's own checks, armed per
	// call (stop.go): machine code of a binary that has them. Interpreter
	// code is stopped by wazero. running counts such calls (Runtime's).
	stops   bool
	running *atomic.Int64
}

func (c *code) pin() bool {
	for {
		n := c.pins.Load()
		if n < 0 {
			return false
		}
		if c.pins.CompareAndSwap(n, n+1) {
			c.used.Store(true)
			return true
		}
	}
}

func (c *code) unpin() {
	if c.pins.Add(-1) == 0 && c.replaced.Load() && c.pins.CompareAndSwap(0, -1) {
		_ = c.mod.Close(context.Background())
	}
}

// replace retires code that other code took the place of in its module:
// closed now if no call uses it, else by the last unpin. The flag is set
// before the attempt, so that one of the two always closes it.
func (c *code) replace() {
	c.replaced.Store(true)
	if c.pins.CompareAndSwap(0, -1) {
		_ = c.mod.Close(context.Background())
	}
}

// binaryUse counts the modules of one binary, across memory limits.
type binaryUse struct {
	refs int    // instances and Prepares, summed over its modules
	file string // its disk cache file, "" when unknown
}

// artifactUse says what binaries one artifact's instances run.
type artifactUse struct {
	instances int
	binaries  map[[32]byte]string // hash → disk cache file
	// retired is set when Retire came while instances still ran (one
	// outlived its close deadline): the last of them retires it.
	retired bool
}

// New returns a Runtime configured by cfg.
func New(cfg Config) (*Runtime, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxResponse < 0 || cfg.MaxRequest < 0 || cfg.MaxLoaded < 0 || cfg.IdleUnload < 0 || cfg.OutboundMaxResponse < 0 {
		return nil, errors.New("wasm config: MaxResponse, MaxRequest, MaxLoaded, IdleUnload and OutboundMaxResponse must not be negative")
	}
	if cfg.OutboundMaxResponse == 0 {
		cfg.OutboundMaxResponse = DefaultOutboundMaxResponse
	}
	if cfg.MaxResponse == 0 {
		cfg.MaxResponse = DefaultMaxResponse
	}
	if cfg.MaxRequest == 0 {
		cfg.MaxRequest = DefaultMaxRequest
	}
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.MaxLoaded == 0 {
		cfg.MaxLoaded = DefaultMaxLoaded
	}
	if cfg.IdleUnload == 0 {
		cfg.IdleUnload = DefaultIdleUnload
	}
	var cache wazero.CompilationCache
	var disk *diskCache
	if cfg.CacheDir != "" {
		if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("wasm cache dir: %w", err)
		}
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm cache dir %s: %w", cfg.CacheDir, err)
		}
		cache = c
		if disk, err = probeDiskCache(context.Background(), cfg.CacheDir); err != nil {
			cfg.Logger.Warn("compiled modules of retired deployments will stay on disk", "err", err)
		} else if err := disk.sweepVersions(cfg.CacheDir); err != nil {
			cfg.Logger.Warn("remove stale wasm cache", "err", err)
		}
	} else {
		cache = wazero.NewCompilationCache()
	}
	rt := &Runtime{
		cfg:         cfg,
		log:         cfg.Logger,
		cache:       cache,
		disk:        disk,
		headerNames: commonHeaders(),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		out:         newOutbound(cfg),
		runtimes:    make(map[runtimeKey]wazero.Runtime),
		modules:     make(map[moduleKey]*module),
		binaries:    make(map[[32]byte]*binaryUse),
		artifacts:   make(map[string]*artifactUse),
		interps:     make(map[uint32]wazero.Runtime),
		wake:        make(chan struct{}, 1),
		bgDone:      make(chan struct{}),
	}
	rt.heldFiles.max = heldFilesBudget
	rt.warmBudget.max = warmBudget
	rt.warmPools = make(map[*warmPool]struct{})
	go rt.sweepIdle()
	if cfg.BackgroundCompile && disk != nil {
		go rt.compileNatives()
	} else {
		rt.cfg.BackgroundCompile = false
		close(rt.bgDone)
	}
	return rt, nil
}

// Name returns "wasm", the manifest runtime this implements.
func (rt *Runtime) Name() string { return manifest.WASM }

// Prepare compiles spec's module (or reuses it when the same binary was
// prepared before) and returns an Instance that serves it.
func (rt *Runtime) Prepare(ctx context.Context, spec worker.Spec) (worker.Instance, error) {
	m := spec.Manifest
	if m.Module == "" {
		return nil, errors.New("manifest names no module")
	}
	if !filepath.IsLocal(m.Module) {
		return nil, fmt.Errorf("module %s: path leaves the component's directory", m.Module)
	}
	memory := m.Memory
	if memory <= 0 {
		memory = manifest.DefaultMemory
	}
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = manifest.DefaultTimeout
	}
	buildLog := spec.BuildLog
	if buildLog == nil {
		buildLog = io.Discard
	}

	path := filepath.Join(spec.Dir, m.Module)
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", m.Module, err)
	}
	key := moduleKey{pages: memoryPages(memory), hash: sha256.Sum256(bin)}
	sc := scanModule(bin)
	if rt.noStops {
		sc.stop = false
	}
	bin = sc.bin
	mod, err := rt.hold(ctx, key, m.Module, sc, spec.Digest)
	if err != nil {
		return nil, err
	}
	c, loaded, err := mod.acquire(ctx, rt, path, bin)
	if err != nil {
		rt.drop(mod, spec.Digest)
		return nil, err
	}
	switch {
	case loaded && c.interp:
		fmt.Fprintf(buildLog, "module %s: validated %d bytes, memory limit %d MiB; machine code is compiled once it is called\n",
			m.Module, len(bin), int64(key.pages)*pageSize>>20)
	case loaded:
		fmt.Fprintf(buildLog, "module %s: compiled %d bytes, memory limit %d MiB\n",
			m.Module, len(bin), int64(key.pages)*pageSize>>20)
	default:
		fmt.Fprintf(buildLog, "module %s: already compiled\n", m.Module)
	}
	w, err := prepareWAGI(ctx, c, spec, timeout, buildLog, &rt.heldFiles)
	var httpPolicy *outboundPolicy
	if err == nil {
		httpPolicy, err = newOutboundPolicy(rt, c.mod, spec, timeout)
		if err != nil {
			w.close()
		}
	}
	c.unpin()
	if c.interp {
		// Interpreter code takes far more memory than machine code (a
		// 29 KiB C module: megabytes of Go heap) and Prepare needed it
		// only to validate the module and ask for its routes: a component
		// that is deployed but not called keeps none of it loaded. Its
		// first call builds it again (about a millisecond), see tier.go.
		rt.mu.Lock()
		closing := rt.unloadLocked(mod)
		rt.mu.Unlock()
		if closing != nil {
			_ = closing.mod.Close(ctx)
		}
		if err == nil && !rt.cfg.LazyCompile {
			// Its machine code, compiled in the background before
			// anyone calls it (see tier.go).
			rt.queueNative(mod, path, false)
		}
	}
	if err != nil {
		rt.drop(mod, spec.Digest)
		return nil, err
	}
	in, err := newInstance(rt, mod, path, spec, timeout)
	if err != nil {
		w.close()
		httpPolicy.release()
		rt.drop(mod, spec.Digest)
		return nil, err
	}
	in.attach(w)
	in.http = httpPolicy
	return in, nil
}

// hold takes a reference on the module for key, creating it (not yet
// loaded) if no one holds it, and counts it as used by artifact digest.
func (rt *Runtime) hold(ctx context.Context, key moduleKey, name string, sc scan, digest string) (*module, error) {
	bin := sc.bin
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return nil, errors.New("wasm runtime closed")
	}
	m, ok := rt.modules[key]
	if !ok {
		wrt, err := rt.runtimeLocked(ctx, runtimeKey{pages: key.pages, stops: sc.stop})
		if err != nil {
			return nil, err
		}
		m = &module{key: key, name: name, rt: wrt, slot: -1, reuse: sc}
		m.reuse.bin = nil // the binary is read again to load it
		if rt.disk != nil {
			m.file = rt.disk.path(bin, !sc.stop)
		}
		rt.modules[key] = m
	}
	m.refs++
	b := rt.binaries[key.hash]
	if b == nil {
		b = &binaryUse{}
		if rt.disk != nil {
			b.file = rt.disk.path(bin, !sc.stop)
		}
		rt.binaries[key.hash] = b
	}
	b.refs++
	if digest != "" {
		a := rt.artifacts[digest]
		if a == nil {
			a = &artifactUse{binaries: map[[32]byte]string{}}
			rt.artifacts[digest] = a
		}
		a.instances++
		a.retired = false
		a.binaries[key.hash] = b.file
	}
	return m, nil
}

// drop gives back a reference hold took. The last one closes the module's
// code; if the artifact was retired meanwhile, the last of its instances
// removes its cache files.
func (rt *Runtime) drop(m *module, digest string) {
	var closing *code
	var err error
	rt.mu.Lock()
	m.refs--
	if m.refs == 0 && rt.modules[m.key] == m {
		delete(rt.modules, m.key)
		closing = rt.unloadLocked(m)
	}
	if b := rt.binaries[m.key.hash]; b != nil {
		if b.refs--; b.refs == 0 {
			delete(rt.binaries, m.key.hash)
		}
	}
	if a := rt.artifacts[digest]; a != nil && digest != "" {
		if a.instances--; a.instances == 0 && a.retired {
			delete(rt.artifacts, digest)
			err = rt.removeUnusedLocked(a)
		}
	}
	rt.mu.Unlock()
	if closing != nil {
		_ = closing.mod.Close(context.Background())
	}
	if err != nil {
		rt.log.Warn("retire wasm artifact", "digest", digest, "err", err)
	}
}

// Retire implements worker.Retirer: once no instance runs artifact digest,
// the disk cache files of its binaries that no other instance runs are
// removed. A Prepare of the same binary meanwhile holds it (see hold) and
// keeps its file; one after the removal compiles it again.
func (rt *Runtime) Retire(_ context.Context, _, digest string) error {
	rt.mu.Lock()
	a := rt.artifacts[digest]
	if a == nil {
		rt.mu.Unlock()
		return nil
	}
	if a.instances > 0 {
		a.retired = true
		rt.mu.Unlock()
		return nil
	}
	delete(rt.artifacts, digest)
	err := rt.removeUnusedLocked(a)
	rt.mu.Unlock()
	return err
}

// removeUnusedLocked removes the disk cache files of a's binaries that no
// one holds. It runs under rt.mu so that it cannot race a Prepare of the
// same binary: one that held it first keeps its file, one after compiles
// and writes it again.
func (rt *Runtime) removeUnusedLocked(a *artifactUse) error {
	var errs []error
	for h, f := range a.binaries {
		if _, held := rt.binaries[h]; held || f == "" {
			continue
		}
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove compiled module: %w", err))
		}
	}
	return errors.Join(errs...)
}

// acquire returns m's code pinned for one use, loading it first when it
// is not in memory (bin, when given, is the binary; else it is read from
// path and must still hash to m's key). loaded reports whether this call
// loaded it.
func (m *module) acquire(ctx context.Context, rt *Runtime, path string, bin []byte) (c *code, loaded bool, err error) {
	if c := m.code.Load(); c != nil && c.pin() {
		return c, false, nil
	}
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	if c := m.code.Load(); c != nil && c.pin() {
		return c, false, nil
	}
	if bin == nil {
		if bin, err = m.read(path); err != nil {
			return nil, false, err
		}
	}
	start := time.Now()
	rt.compiles.Add(1)
	crt, interp, err := rt.tierFor(ctx, m)
	if err != nil {
		return nil, false, fmt.Errorf("module %s: %w", m.name, err)
	}
	mod, err := crt.CompileModule(ctx, bin)
	if err != nil {
		return nil, false, fmt.Errorf("module %s: %w", m.name, err)
	}
	if err := checkWAGI(mod); err != nil {
		_ = mod.Close(ctx)
		return nil, false, fmt.Errorf("module %s: %w", m.name, err)
	}
	if interp {
		rt.interpreted.Add(1)
	}
	rt.log.Debug("loaded module", attrModule, m.name, attrElapsed, time.Since(start),
		attrMemory, int64(m.key.pages)*pageSize, "interpreter", interp)
	c = &code{mod: mod, rt: crt, interp: interp, stops: m.reuse.stop && !interp, running: &rt.stopping}
	c.pins.Store(1)
	c.used.Store(true)
	evicted := rt.loadedLocked(m, c)
	for _, e := range evicted {
		_ = e.mod.Close(context.Background())
	}
	return c, true, nil
}

// loadedLocked makes c m's code and unloads the least recently used
// others beyond MaxLoaded, returning the code to close.
func (rt *Runtime) loadedLocked(m *module, c *code) []*code {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	m.code.Store(c)
	if m.slot < 0 {
		m.slot = len(rt.loaded)
		rt.loaded = append(rt.loaded, m)
	}
	var out []*code
	// A clock sweep: a module used since the hand last passed gets a
	// second chance, a pinned one is skipped; two turns at most.
	for tries := 2 * len(rt.loaded); len(rt.loaded) > rt.cfg.MaxLoaded && tries > 0; tries-- {
		if rt.hand >= len(rt.loaded) {
			rt.hand = 0
		}
		v := rt.loaded[rt.hand]
		if vc := v.code.Load(); v != m && vc != nil && !vc.used.Swap(false) {
			if e := rt.unloadLocked(v); e != nil {
				out = append(out, e)
				continue // the slot now holds another module
			}
		}
		rt.hand++
	}
	return out
}

// unloadLocked takes m's code out of memory unless a call is using it, and
// returns the code to close (nil if none). rt.mu must be held.
func (rt *Runtime) unloadLocked(m *module) *code {
	c := m.code.Load()
	if c == nil || !c.pins.CompareAndSwap(0, -1) {
		return nil
	}
	m.code.Store(nil)
	if i := m.slot; i >= 0 {
		last := len(rt.loaded) - 1
		rt.loaded[i] = rt.loaded[last]
		rt.loaded[i].slot = i
		rt.loaded[last] = nil
		rt.loaded = rt.loaded[:last]
		m.slot = -1
	}
	return c
}

// sweepIdle unloads, every IdleUnload, the code no call used since the
// previous sweep.
func (rt *Runtime) sweepIdle() {
	defer close(rt.done)
	t := time.NewTicker(rt.cfg.IdleUnload)
	defer t.Stop()
	for {
		select {
		case <-rt.stop:
			return
		case <-t.C:
		}
		var out []*code
		rt.mu.Lock()
		for i := 0; i < len(rt.loaded); {
			m := rt.loaded[i]
			if c := m.code.Load(); c != nil && !c.used.Swap(false) {
				if e := rt.unloadLocked(m); e != nil {
					out = append(out, e)
					continue // slot i now holds another module
				}
			}
			i++
		}
		rt.mu.Unlock()
		for _, c := range out {
			_ = c.mod.Close(context.Background())
		}
		if len(out) > 0 {
			rt.log.Debug("unloaded idle modules", "count", len(out))
		}
		rt.sweepWarm()
	}
}

// checkWAGI reports why mod cannot run as a WAGI module, if it cannot. Its
// entry point is checked by Prepare, which knows the manifest's.
func checkWAGI(mod wazero.CompiledModule) error {
	for _, f := range mod.ImportedFunctions() {
		switch m, name, _ := f.Import(); m {
		case wasi_snapshot_preview1.ModuleName:
		case outboundModule:
			if err := checkOutboundImport(f); err != nil {
				return err
			}
		default:
			return fmt.Errorf("imports %s.%s: only %s and %s are provided", m, name, wasi_snapshot_preview1.ModuleName, outboundModule)
		}
	}
	for _, mem := range mod.ImportedMemories() {
		m, name, _ := mem.Import()
		return fmt.Errorf("imports memory %s.%s: a WAGI module defines its own memory", m, name)
	}
	return nil
}

// read reads m's binary from path, which must still be the one m was
// prepared with, and returns it as it is compiled (see scanModule).
func (m *module) read(path string) ([]byte, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", m.name, err)
	}
	if sha256.Sum256(bin) != m.key.hash {
		return nil, fmt.Errorf("module %s: changed on disk since it was prepared", m.name)
	}
	return scanModule(bin).bin, nil
}

// runtimeKey names a runtime: its memory limit, and whether its modules
// carry their own stop checks (stop.go) or are closed by wazero when their
// context is done.
type runtimeKey struct {
	pages uint32
	stops bool
}

// runtimeConfig is the wazero configuration of every runtime: the shared
// cache, the memory limit, and modules closed when their context is done
// unless they carry stop checks.
func runtimeConfig(cache wazero.CompilationCache, key runtimeKey) wazero.RuntimeConfig {
	return wazero.NewRuntimeConfig().
		WithCompilationCache(cache).
		WithMemoryLimitPages(key.pages).
		WithCloseOnContextDone(!key.stops)
}

// runtimeLocked returns the wazero runtime for key, creating it with WASI
// on first use. rt.mu must be held.
func (rt *Runtime) runtimeLocked(ctx context.Context, key runtimeKey) (wazero.Runtime, error) {
	if r, ok := rt.runtimes[key]; ok {
		return r, nil
	}
	r := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(rt.cache, key))
	if err := instantiateWASI(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("instantiate wasi: %w", err)
	}
	if err := rt.out.instantiate(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("instantiate %s: %w", outboundModule, err)
	}
	rt.runtimes[key] = r
	return r, nil
}

// Close stops the idle sweep, waits (until ctx is done) for the calls that
// only their own stop checks stop (closing their runtime would free their
// memory under them; they end at their deadline at the latest), closes
// every wazero runtime, which stops any other module still running, and
// the compilation cache. The disk cache stays on
// disk.
func (rt *Runtime) Close(ctx context.Context) error {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil
	}
	rt.closed = true
	var runtimes []wazero.Runtime
	for _, r := range rt.runtimes {
		runtimes = append(runtimes, r)
	}
	for _, r := range rt.interps {
		runtimes = append(runtimes, r)
	}
	rt.runtimes, rt.interps = nil, nil
	rt.natives, rt.deployed = nil, nil
	rt.modules = map[moduleKey]*module{}
	rt.mu.Unlock()
	close(rt.stop)
	<-rt.done
	<-rt.bgDone
	for rt.stopping.Load() > 0 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}

	var errs []error
	for _, r := range runtimes {
		if err := r.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close wazero runtime: %w", err))
		}
	}
	rt.out.close()
	if err := rt.cache.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("close compilation cache: %w", err))
	}
	return errors.Join(errs...)
}

// memoryPages converts a memory cap in bytes to whole wasm pages, at least
// one and at most 4 GiB worth.
func memoryPages(bytes int64) uint32 {
	p := bytes / pageSize
	switch {
	case p < 1:
		return 1
	case p > 65536:
		return 65536
	}
	return uint32(p)
}
