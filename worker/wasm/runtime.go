package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
}

// Runtime runs WAGI modules on wazero. It is safe for concurrent use.
//
// It keeps one wazero runtime per distinct memory limit (wazero's limit is
// per runtime), all sharing one compilation cache, and one compiled module
// per (memory limit, artifact digest, module path), shared by every Instance
// that needs it and released when the last of them closes.
type Runtime struct {
	cfg   Config
	log   *slog.Logger
	cache wazero.CompilationCache
	pools pools
	mem   memoryPool
	// headerNames maps common canonical header keys to their CGI names (""
	// for those never passed); read-only after New.
	headerNames map[string]string

	mu       sync.Mutex
	closed   bool
	runtimes map[uint32]wazero.Runtime // by memory limit in pages
	modules  map[moduleKey]*compiled

	compiles atomic.Int64 // modules compiled (cache misses of this process), for tests
}

var (
	_ worker.Runtime   = (*Runtime)(nil)
	_ worker.Footprint = (*instance)(nil)
)

// moduleKey names one compiled module.
type moduleKey struct {
	pages  uint32
	digest string
	module string
}

// compiled is a module compiled once and shared by reference count.
type compiled struct {
	ready chan struct{} // closed when mod or err is set
	mod   wazero.CompiledModule
	rt    wazero.Runtime
	err   error
	refs  int // guarded by Runtime.mu
}

// New returns a Runtime configured by cfg.
func New(cfg Config) (*Runtime, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxResponse < 0 || cfg.MaxRequest < 0 {
		return nil, errors.New("wasm config: MaxResponse and MaxRequest must not be negative")
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
	var cache wazero.CompilationCache
	if cfg.CacheDir != "" {
		if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
			return nil, fmt.Errorf("wasm cache dir: %w", err)
		}
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm cache dir %s: %w", cfg.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	return &Runtime{
		cfg:         cfg,
		log:         cfg.Logger,
		cache:       cache,
		headerNames: commonHeaders(),
		runtimes:    make(map[uint32]wazero.Runtime),
		modules:     make(map[moduleKey]*compiled),
	}, nil
}

// Name returns "wasm", the manifest runtime this implements.
func (rt *Runtime) Name() string { return manifest.WASM }

// Prepare compiles spec's module (or reuses it when the same artifact was
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
	pages := memoryPages(memory)
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = manifest.DefaultTimeout
	}
	buildLog := spec.BuildLog
	if buildLog == nil {
		buildLog = io.Discard
	}

	path := filepath.Join(spec.Dir, m.Module)
	key := moduleKey{pages: pages, digest: spec.Digest, module: m.Module}
	var bin []byte
	if key.digest == "" {
		// Without an artifact digest the module's own bytes name it.
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Module, err)
		}
		sum := sha256.Sum256(b)
		key.digest, bin = "module:"+hex.EncodeToString(sum[:]), b
	}

	c, err := rt.compile(ctx, key, path, bin, buildLog, spec.Component)
	if err != nil {
		return nil, err
	}
	w, err := prepareWAGI(ctx, c, spec, timeout, buildLog)
	if err != nil {
		rt.release(key, c)
		return nil, err
	}
	in, err := newInstance(rt, c, key, spec, timeout)
	if err != nil {
		w.close()
		rt.release(key, c)
		return nil, err
	}
	in.attach(w)
	return in, nil
}

// compile returns the compiled module for key, compiling it if no one has,
// and takes a reference on it. Concurrent calls for one key compile once.
func (rt *Runtime) compile(ctx context.Context, key moduleKey, path string, bin []byte, buildLog io.Writer, component string) (*compiled, error) {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil, errors.New("wasm runtime closed")
	}
	if c, ok := rt.modules[key]; ok {
		c.refs++
		rt.mu.Unlock()
		select {
		case <-c.ready:
		case <-ctx.Done():
			rt.release(key, c)
			return nil, ctx.Err()
		}
		if c.err != nil {
			return nil, c.err
		}
		fmt.Fprintf(buildLog, "module %s: already compiled\n", key.module)
		return c, nil
	}
	c := &compiled{ready: make(chan struct{}), refs: 1}
	rt.modules[key] = c
	wrt, err := rt.runtimeLocked(ctx, key.pages)
	rt.mu.Unlock()

	if err == nil {
		c.rt = wrt
		c.mod, err = rt.compileModule(ctx, wrt, key, path, bin, buildLog, component)
	}
	if err != nil {
		c.err = err
		rt.mu.Lock()
		delete(rt.modules, key) // a later Prepare may try again
		rt.mu.Unlock()
	}
	close(c.ready)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// compileModule reads, compiles and checks one module.
func (rt *Runtime) compileModule(ctx context.Context, wrt wazero.Runtime, key moduleKey, path string, bin []byte, buildLog io.Writer, component string) (wazero.CompiledModule, error) {
	if bin == nil {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", key.module, err)
		}
		bin = b
	}
	fmt.Fprintf(buildLog, "module %s: compiling %d bytes, memory limit %d MiB\n",
		key.module, len(bin), int64(key.pages)*pageSize>>20)
	start := time.Now()
	rt.compiles.Add(1)
	mod, err := wrt.CompileModule(ctx, bin)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", key.module, err)
	}
	if err := checkWAGI(mod); err != nil {
		_ = mod.Close(ctx)
		return nil, fmt.Errorf("module %s: %w", key.module, err)
	}
	elapsed := time.Since(start)
	fmt.Fprintf(buildLog, "module %s: compiled in %s\n", key.module, elapsed.Round(time.Microsecond))
	rt.log.Debug("compiled module", attrComponent, component, attrModule, key.module,
		attrElapsed, elapsed, attrMemory, int64(key.pages)*pageSize)
	return mod, nil
}

// checkWAGI reports why mod cannot run as a WAGI module, if it cannot. Its
// entry point is checked by Prepare, which knows the manifest's.
func checkWAGI(mod wazero.CompiledModule) error {
	for _, f := range mod.ImportedFunctions() {
		if m, name, _ := f.Import(); m != wasi_snapshot_preview1.ModuleName {
			return fmt.Errorf("imports %s.%s: only %s is provided", m, name, wasi_snapshot_preview1.ModuleName)
		}
	}
	for _, mem := range mod.ImportedMemories() {
		m, name, _ := mem.Import()
		return fmt.Errorf("imports memory %s.%s: a WAGI module defines its own memory", m, name)
	}
	return nil
}

// runtimeLocked returns the wazero runtime for a memory limit, creating it
// with WASI on first use. rt.mu must be held.
func (rt *Runtime) runtimeLocked(ctx context.Context, pages uint32) (wazero.Runtime, error) {
	if r, ok := rt.runtimes[pages]; ok {
		return r, nil
	}
	cfg := wazero.NewRuntimeConfig().
		WithCompilationCache(rt.cache).
		WithMemoryLimitPages(pages).
		WithCloseOnContextDone(true)
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	if err := instantiateWASI(ctx, r); err != nil {
		_ = r.Close(ctx)
		return nil, fmt.Errorf("instantiate wasi: %w", err)
	}
	rt.runtimes[pages] = r
	return r, nil
}

// release drops a reference on c, closing its compiled code after the last.
func (rt *Runtime) release(key moduleKey, c *compiled) {
	rt.mu.Lock()
	c.refs--
	last := c.refs == 0 && rt.modules[key] == c
	if last {
		delete(rt.modules, key)
	}
	rt.mu.Unlock()
	if last {
		<-c.ready
		if c.mod != nil {
			_ = c.mod.Close(context.Background())
		}
	}
}

// Close closes every wazero runtime, which stops any module still running,
// and the compilation cache. The disk cache stays on disk.
func (rt *Runtime) Close(ctx context.Context) error {
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil
	}
	rt.closed = true
	runtimes := rt.runtimes
	rt.runtimes = nil
	rt.modules = nil
	rt.mu.Unlock()

	var errs []error
	for _, r := range runtimes {
		if err := r.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close wazero runtime: %w", err))
		}
	}
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
