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
	rt := newRuntime(t, Config{CacheDir: t.TempDir(), BackgroundCompile: true, MaxLoaded: 1})
	if rt.disk == nil {
		t.Fatal("the runtime could not learn wazero's cache layout (see diskcache.go)")
	}
	spec := variantSpec(t, 1, "d1")
	in := prepare(t, rt, spec)
	if n := rt.interpreted.Load(); n != 1 {
		t.Fatalf("built for the interpreter %d times, want 1", n)
	}
	// Nothing is compiled for a component no one calls.
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
		idle := len(rt.modules) == 0 && len(rt.binaries) == 0 && len(rt.loaded) == 0 && len(rt.natives) == 0
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
		return fmt.Sprintf("%d modules, %d binaries, %d loaded, %d queued, %d cache files", len(rt.modules), len(rt.binaries), len(rt.loaded), len(rt.natives), n)
	})
	_ = os.RemoveAll(dir)
}
