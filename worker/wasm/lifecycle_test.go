package wasm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/worker"
)

// variantSpec is echoSpec for a copy of echo.wasm made distinct by a
// custom section holding n (its own binary, so its own compiled module and
// cache file), in a directory of its own as an unpacked artifact would be.
func variantSpec(t testing.TB, n int, digest string) worker.Spec {
	t.Helper()
	bin, err := os.ReadFile(filepath.Join("testdata", "echo.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "echo.wasm"), withCustomSection(bin, fmt.Sprint(n)), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := echoSpec(&sink{})
	spec.Dir, spec.Digest = dir, digest
	return spec
}

// withCustomSection appends a custom section named "velo-test" holding
// payload; custom sections may come anywhere and change nothing the module
// does.
func withCustomSection(bin []byte, payload string) []byte {
	const name = "velo-test"
	body := append([]byte{byte(len(name))}, name...)
	body = append(body, payload...)
	out := append([]byte(nil), bin...)
	out = append(out, 0) // custom section id
	for n := len(body); ; n >>= 7 {
		b := byte(n & 0x7f)
		if n>>7 == 0 {
			out = append(out, b)
			break
		}
		out = append(out, b|0x80)
	}
	return append(out, body...)
}

func cacheFile(t *testing.T, rt *Runtime, spec worker.Spec) string {
	t.Helper()
	if rt.disk == nil {
		t.Fatal("the runtime could not learn wazero's cache layout (see diskcache.go)")
	}
	bin, err := os.ReadFile(filepath.Join(spec.Dir, spec.Manifest.Module))
	if err != nil {
		t.Fatal(err)
	}
	s := scanModule(bin)
	return rt.disk.path(s.bin, !s.stop) // the binary as compiled
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestDiskCacheLayout pins the probe of wazero's cache file names to the
// wazero in go.mod: after a Prepare, the file the runtime computes is the
// one wazero wrote, and nothing else is in the cache.
func TestDiskCacheLayout(t *testing.T) {
	dir := t.TempDir()
	// A leftover of another wazero version is swept at start.
	stale := filepath.Join(dir, "wazero-v0.0.1-amd64-linux")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, Config{CacheDir: dir})
	if exists(stale) {
		t.Error("another wazero version's cache directory was left")
	}
	spec := variantSpec(t, 1, "d1")
	prepare(t, rt, spec)
	want := cacheFile(t, rt, spec)
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 1 || files[0] != want {
		t.Errorf("cache holds %q, want just %s", files, want)
	}
}

// TestRetireRemovesCacheFiles checks that retiring an artifact removes the
// compiled code of its binary from disk, except while another artifact
// still runs the same binary, and that the binary can be prepared again.
func TestRetireRemovesCacheFiles(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t, Config{CacheDir: t.TempDir()})
	a := variantSpec(t, 1, "a")       // binary 1
	same := variantSpec(t, 1, "same") // binary 1 in another artifact
	b := variantSpec(t, 2, "b")       // binary 2
	inA, inSame, inB := prepare(t, rt, a), prepare(t, rt, same), prepare(t, rt, b)
	fileA, fileB := cacheFile(t, rt, a), cacheFile(t, rt, b)
	if !exists(fileA) || !exists(fileB) {
		t.Fatal("compiled modules not on disk")
	}

	// Retired while still running: nothing goes yet.
	if err := rt.Retire(ctx, "echo", "a"); err != nil {
		t.Fatal(err)
	}
	if !exists(fileA) {
		t.Fatal("retire removed the code of an artifact still running")
	}
	inA.Close(ctx) // the last instance of a retired artifact retires it
	if !exists(fileA) {
		t.Fatal("artifact a's binary is removed while artifact same runs it")
	}
	inSame.Close(ctx)
	if err := rt.Retire(ctx, "echo", "same"); err != nil {
		t.Fatal(err)
	}
	if exists(fileA) {
		t.Error("binary 1's compiled code stayed after every artifact running it was retired")
	}
	if !exists(fileB) {
		t.Error("binary 2's compiled code went with binary 1's")
	}
	if res := serve(inB, "GET", "/fn/echo", nil); res.StatusCode != 200 {
		t.Errorf("b after retiring a: status %d", res.StatusCode)
	}

	// Rolling back to a: prepared again, compiled again, on disk again.
	again := prepare(t, rt, a)
	if res := serve(again, "GET", "/fn/echo", nil); res.StatusCode != 200 {
		t.Errorf("a prepared again: status %d", res.StatusCode)
	}
	if !exists(fileA) {
		t.Error("a prepared again is not on disk")
	}
}

// TestUnloadReload checks that compiled code beyond MaxLoaded is unloaded
// and loaded again from the disk cache by the next request (the cache file
// is read, not rewritten).
func TestUnloadReload(t *testing.T) {
	rt := newRuntime(t, Config{CacheDir: t.TempDir(), MaxLoaded: 1})
	specs := []worker.Spec{variantSpec(t, 1, "d1"), variantSpec(t, 2, "d2"), variantSpec(t, 3, "d3")}
	var ins []worker.Instance
	for _, s := range specs {
		ins = append(ins, prepare(t, rt, s))
	}
	file := cacheFile(t, rt, specs[0])
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		for i, in := range ins {
			if res := serve(in, "GET", "/fn/echo", nil); res.StatusCode != 200 {
				t.Fatalf("round %d, module %d: status %d", round, i, res.StatusCode)
			}
			if n := loadedCount(rt); n > 1 {
				t.Fatalf("%d modules loaded, MaxLoaded is 1", n)
			}
		}
	}
	if n := rt.compiles.Load(); n < 9 {
		t.Errorf("%d loads for 3 modules served in turn 3 times with room for 1: nothing was unloaded", n)
	}
	after, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(fi.ModTime()) {
		t.Error("the cache file was rewritten: reloads compiled instead of reading it")
	}
}

func loadedCount(rt *Runtime) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return len(rt.loaded)
}

// TestIdleUnload checks that code no request uses is unloaded after
// IdleUnload and that the next request loads it again.
func TestIdleUnload(t *testing.T) {
	rt := newRuntime(t, Config{CacheDir: t.TempDir(), IdleUnload: 20 * time.Millisecond})
	in := prepare(t, rt, variantSpec(t, 1, "d1"))
	deadline := time.Now().Add(5 * time.Second)
	for loadedCount(rt) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle code still loaded after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if res := serve(in, "GET", "/fn/echo", nil); res.StatusCode != 200 {
		t.Fatalf("after unload: status %d", res.StatusCode)
	}
}

// TestUnloadHammer serves several modules concurrently with room for one
// loaded at a time and a fast idle sweep, closing and preparing instances
// meanwhile; run with -race.
func TestUnloadHammer(t *testing.T) {
	rt := newRuntime(t, Config{CacheDir: t.TempDir(), MaxLoaded: 1, IdleUnload: time.Millisecond})
	var specs []worker.Spec
	for i := range 4 {
		specs = append(specs, variantSpec(t, i, fmt.Sprint("d", i)))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 15 {
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
				if i%5 == 4 {
					_ = rt.Retire(context.Background(), "echo", spec.Digest)
				}
			}
		})
	}
	wg.Wait()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if len(rt.modules) != 0 || len(rt.binaries) != 0 || len(rt.loaded) != 0 {
		t.Errorf("after every instance closed: %d modules, %d binaries, %d loaded", len(rt.modules), len(rt.binaries), len(rt.loaded))
	}
}
