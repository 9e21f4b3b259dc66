package wasm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
)

// codeOf is what in's module holds loaded: nil, or its code.
func codeOf(in worker.Instance) *code { return in.(*instance).mod.code.Load() }

// TestBackgroundCompile checks the two tiers: a binary with no machine code
// on disk is prepared for the interpreter and serves from it, its first
// request has its machine code compiled in the background into the disk
// cache, which takes over,
// and a later load of it reads the disk cache instead of interpreting.
func TestBackgroundCompile(t *testing.T) {
	rt := newRuntime(t, Config{CacheDir: t.TempDir(), BackgroundCompile: true, LazyCompile: true, MaxLoaded: 1})
	if rt.disk == nil {
		t.Fatal("the runtime could not learn wazero's cache layout (see diskcache.go)")
	}
	spec := variantSpec(t, 1, "d1")
	in := prepare(t, rt, spec)
	if n := rt.interpreted.Load(); n != 1 {
		t.Fatalf("built for the interpreter %d times, want 1", n)
	}
	// With LazyCompile nothing is compiled for a component no one calls.
	file := cacheFile(t, rt, spec)
	rt.mu.Lock()
	queued := len(rt.natives)
	rt.mu.Unlock()
	if queued != 0 || exists(file) {
		t.Fatalf("before any request: %d modules queued for machine code, cache file there: %v", queued, exists(file))
	}
	// Whichever tier serves it, the answer is the same.
	if res := serve(in, "GET", "/fn/echo/env/x", nil); res.StatusCode != 200 || !strings.Contains(readAll(t, res), "PATH_INFO=/env/x") {
		t.Fatalf("first request: status %d", res.StatusCode)
	}
	testsupport.Eventually(t, 60*time.Second, "the machine code to replace the interpreter's", func() bool {
		c := codeOf(in)
		return exists(file) && c != nil && !c.interp
	})
	if res := serve(in, "GET", "/fn/echo/env/y", nil); res.StatusCode != 200 || !strings.Contains(readAll(t, res), "PATH_INFO=/env/y") {
		t.Fatalf("on machine code: status %d", res.StatusCode)
	}
	// Loading another module unloads this one (MaxLoaded 1); its next
	// request loads the machine code from disk, not the interpreter.
	other := prepare(t, rt, variantSpec(t, 2, "d2"))
	if res := serve(other, "GET", "/fn/echo", nil); res.StatusCode != 200 {
		t.Fatalf("other: status %d", res.StatusCode)
	}
	testsupport.Eventually(t, 60*time.Second, "the first module to be unloaded", func() bool { return codeOf(in) == nil })
	before := rt.interpreted.Load()
	if res := serve(in, "GET", "/fn/echo", nil); res.StatusCode != 200 {
		t.Fatalf("after unload: status %d", res.StatusCode)
	}
	if rt.interpreted.Load() != before {
		t.Error("a module whose machine code is on disk was loaded for the interpreter again")
	}
	if c := codeOf(in); c == nil || c.interp {
		t.Error("reloaded module is not on machine code")
	}
}

// TestFirstCallFromDiskCache checks that a module prepared and never called
// has its machine code compiled into the disk cache in the background, so
// that its first call, long after its code was unloaded, reads the disk
// cache instead of building interpreter code; and that a module a request
// is waiting for is compiled ahead of those only deployed.
func TestFirstCallFromDiskCache(t *testing.T) {
	rt := newRuntime(t, Config{CacheDir: t.TempDir(), BackgroundCompile: true, MaxLoaded: 1})
	if rt.disk == nil {
		t.Fatal("the runtime could not learn wazero's cache layout (see diskcache.go)")
	}
	var specs []worker.Spec
	var ins []worker.Instance
	for i := range 3 {
		spec := variantSpec(t, 10+i, fmt.Sprint("d", i))
		specs = append(specs, spec)
		ins = append(ins, prepare(t, rt, spec))
	}
	if n := rt.interpreted.Load(); n != 3 {
		t.Fatalf("built for the interpreter %d times, want 3 (one per Prepare)", n)
	}
	testsupport.EventuallyShow(t, 60*time.Second, "every prepared module's machine code in the disk cache, no request made", func() bool {
		for _, s := range specs {
			if !exists(cacheFile(t, rt, s)) {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("%d compiled in the background", rt.nativeCompiles.Load()) })
	for i, in := range ins {
		if c := codeOf(in); c != nil {
			t.Fatalf("module %d: code loaded while no request ran (interp %v)", i, c.interp)
		}
	}
	before := rt.interpreted.Load()
	for i, in := range ins {
		if res := serve(in, "GET", "/fn/echo/env/x", nil); res.StatusCode != 200 || !strings.Contains(readAll(t, res), "PATH_INFO=/env/x") {
			t.Fatalf("module %d: first call: status %d", i, res.StatusCode)
		}
	}
	if n := rt.interpreted.Load() - before; n != 0 {
		t.Errorf("first calls built interpreter code %d times; want machine code read from the disk cache", n)
	}
	if n := rt.nativeCompiles.Load(); n != 3 {
		t.Errorf("compiled machine code %d times, want 3 (once per module)", n)
	}
}

// TestNativeQueueOrder checks the compiler's queues on a runtime without
// its goroutine: urgent jobs first, a deployed job moved ahead by a request
// is not compiled twice, and deployed jobs wait while the compiler rests
// or when their module is gone or already compiled.
func TestNativeQueueOrder(t *testing.T) {
	rt := &Runtime{modules: map[moduleKey]*module{}}
	mods := make([]*module, 4)
	for i := range mods {
		mods[i] = &module{key: moduleKey{pages: 1, hash: [32]byte{byte(i)}}, slot: -1}
		rt.modules[mods[i].key] = mods[i]
	}
	for _, m := range mods {
		rt.queueNative(m, "", false)
	}
	rt.queueNative(mods[2], "", true) // a request runs it on the interpreter
	rt.queueNative(mods[2], "", false)
	mods[1].native = true           // compiled meanwhile
	delete(rt.modules, mods[3].key) // dropped meanwhile
	if _, _, ok := rt.nextNative(true); !ok {
		t.Fatal("resting: the urgent job was not handed out")
	}
	if _, _, ok := rt.nextNative(true); ok {
		t.Fatal("resting: a deployed job was handed out")
	}
	var got []int
	for {
		job, urgent, ok := rt.nextNative(false)
		if !ok {
			break
		}
		if urgent {
			t.Errorf("module %d: urgent twice", job.m.key.hash[0])
		}
		got = append(got, int(job.m.key.hash[0]))
	}
	if fmt.Sprint(got) != "[0]" {
		t.Errorf("deployed jobs handed out %v, want [0] (1 compiled, 2 moved ahead, 3 dropped)", got)
	}
}

// TestBackgroundCompileRoutes checks that _routes is answered by the
// interpreter at Prepare and that the routes keep working on machine code.
func TestBackgroundCompileRoutes(t *testing.T) {
	rt := newRuntime(t, Config{CacheDir: t.TempDir(), BackgroundCompile: true})
	var buildLog bytes.Buffer
	spec := moduleSpec("r", "testdata", "routes.wasm", &sink{})
	spec.BuildLog = &buildLog
	in := prepare(t, rt, spec)
	if !strings.Contains(buildLog.String(), "route /hello → hello") {
		t.Fatalf("build log lacks the routes:\n%s", buildLog.String())
	}
	check := func(tier string) {
		t.Helper()
		code, body := get(t, in, "/fn/r", "/fn/r/hello")
		if handler, _ := answerOf(body); code != 200 || handler != "hello" {
			t.Errorf("%s: status %d, body %q", tier, code, body)
		}
	}
	check("interpreter")
	testsupport.Eventually(t, 60*time.Second, "machine code", func() bool {
		c := codeOf(in)
		return c != nil && !c.interp
	})
	check("machine code")
}

// TestBackgroundCompileHammer serves, prepares, closes and retires several
// modules concurrently while their machine code is compiled and swapped in,
// with room for one loaded module and a fast idle sweep; run with -race.
// Every request must be answered, and once every instance is closed and
// retired nothing may stay held, loaded or on disk.
func TestBackgroundCompileHammer(t *testing.T) {
	dir := t.TempDir()
	rt := newRuntime(t, Config{CacheDir: dir, BackgroundCompile: true, MaxLoaded: 1, IdleUnload: time.Millisecond})
	var specs []worker.Spec
	for i := range 4 {
		specs = append(specs, variantSpec(t, 100+i, fmt.Sprint("d", i)))
	}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := range 12 {
				spec := specs[(g+i)%len(specs)]
				in, err := rt.Prepare(context.Background(), spec)
				if err != nil {
					t.Error(err)
					return
				}
				for range 3 {
					if res := serve(in, "GET", "/fn/echo/echo", nil); res.StatusCode != 200 {
						t.Errorf("status %d", res.StatusCode)
					}
				}
				in.Close(context.Background())
			}
		})
	}
	wg.Wait()
	for _, s := range specs {
		if err := rt.Retire(context.Background(), "echo", s.Digest); err != nil {
			t.Error(err)
		}
	}
	testsupport.EventuallyShow(t, 60*time.Second, "nothing held, queued or on disk", func() bool {
		rt.mu.Lock()
		idle := len(rt.modules) == 0 && len(rt.binaries) == 0 && len(rt.loaded) == 0 && len(rt.natives) == 0 && len(rt.deployed) == 0
		rt.mu.Unlock()
		for _, s := range specs {
			if exists(cacheFile(t, rt, s)) {
				return false
			}
		}
		return idle
	}, func() string {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		n := 0
		for _, s := range specs {
			if exists(cacheFile(t, rt, s)) {
				n++
			}
		}
		return fmt.Sprintf("%d modules, %d binaries, %d loaded, %d+%d queued, %d cache files", len(rt.modules), len(rt.binaries), len(rt.loaded), len(rt.natives), len(rt.deployed), n)
	})
	_ = os.RemoveAll(dir)
}
