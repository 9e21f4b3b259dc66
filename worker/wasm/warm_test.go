package wasm

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// pristineInstance prepares testdata/pristine.wasm with a file to open.
func pristineInstance(t *testing.T, rt *Runtime) worker.Instance {
	t.Helper()
	dir := t.TempDir()
	copyModuleTB(t, dir, "pristine.wasm")
	if err := writeTestFile(dir, "static/a.txt", "a"); err != nil {
		t.Fatal(err)
	}
	spec := moduleSpec("echo", dir, "pristine.wasm", &sink{})
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}}
	return prepare(t, rt, spec)
}

// probe asks the module what it sees; q varies the request's own input
// (always 5 bytes: the heap address depends on the environment's size).
func probe(t *testing.T, in worker.Instance, q string) string {
	t.Helper()
	res := serve(in, "GET", "/fn/echo/probe?"+q, nil)
	body := readAll(t, res)
	if res.StatusCode != 200 {
		t.Fatalf("probe: status %d: %s", res.StatusCode, body)
	}
	return body
}

// pristineProbe is what a fresh instance answers to probe(q).
func pristineProbe(t *testing.T, first, q string) string {
	t.Helper()
	if !strings.HasPrefix(first, "count=1 ") || !strings.Contains(first, "scratch=[] ") || !strings.Contains(first, "fd=4 ") {
		t.Fatalf("the first request saw a used instance: %q", first)
	}
	before, _, _ := strings.Cut(first, " argc=")
	return before + fmt.Sprintf(" argc=2 arg1=%s query=%s\n", q, q)
}

// TestReusedInstanceIsPristine runs, in one deployment, requests that
// leave state behind in each way a C module can — a static counter and
// buffer, leaked malloc, exit codes, exit from deep in the stack (its
// stack pointer global not restored), a trap, stdout closed, a file left
// open, memory grown — each followed by a probe, which must see exactly
// what the first request of a fresh instance saw, with its own arguments
// and environment. Instances must have been reused for it to mean
// anything.
func TestReusedInstanceIsPristine(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := pristineInstance(t, rt)
	want := pristineProbe(t, probe(t, in, "q0000"), "q0000")

	steps := []struct {
		path   string
		status int
	}{
		{"/probe", 200}, {"/exit0", 200}, {"/exit3", 502}, {"/deep", 200}, {"/trap", 502},
		{"/closeout", 200}, {"/open", 200}, {"/grow", 200}, {"/nothing", 200},
	}
	for round := range 3 {
		for i, s := range steps {
			res := serve(in, "GET", "/fn/echo"+s.path, nil)
			if body := readAll(t, res); res.StatusCode != s.status {
				t.Errorf("%s: status %d, want %d: %s", s.path, res.StatusCode, s.status, body)
			}
			q := fmt.Sprintf("r%dq%02d", round, i)
			if got := probe(t, in, q); got != pristineProbe(t, want, q) {
				t.Errorf("after %s: probe saw %q, want %q", s.path, got, pristineProbe(t, want, q))
			}
		}
	}
	requests := int64(1 + 3*2*len(steps))
	if n := rt.warmNew.Load(); n*2 > requests {
		t.Errorf("%d instances made for %d requests: reuse did not happen", n, requests)
	}
	if d := rt.warmDiscards.Load(); d < 3*4 {
		t.Errorf("%d instances discarded, want at least one per trap, closeout, open and grow", d)
	}
}

// TestReusedInstanceHammer runs probes and state-leaving requests from many
// goroutines at once (under -race in CI): every probe sees a pristine
// instance.
func TestReusedInstanceHammer(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := pristineInstance(t, rt)
	want := probe(t, in, "first")
	paths := []string{"/exit0", "/exit3", "/deep", "/trap", "/open", "/closeout", "/nothing"}
	var wg sync.WaitGroup
	errs := make(chan string, 8*40)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				if i%2 == 0 {
					serve(in, "GET", "/fn/echo"+paths[(g+i)%len(paths)], nil).Body.Close()
					continue
				}
				q := fmt.Sprintf("g%di%02d", g, i)
				res := serve(in, "GET", "/fn/echo/probe?"+q, nil)
				if got, w := readAll(t, res), pristineProbe(t, want, q); got != w {
					errs <- fmt.Sprintf("probe saw %q, want %q", got, w)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestWarmPoolSwept checks that a deployment no request used for a sweep
// holds no idle instance, and gives its budget back.
func TestWarmPoolSwept(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := pristineInstance(t, rt)
	probe(t, in, "xxxxx")
	p := in.(*instance).warm
	idle := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.idle)
	}
	if idle() != 1 || rt.warmBudget.used.Load() == 0 {
		t.Fatalf("after a request: %d idle, %d bytes charged; want 1 and some", idle(), rt.warmBudget.used.Load())
	}
	rt.sweepWarm() // used since the last sweep: kept
	if idle() != 1 {
		t.Fatalf("a pool used since the last sweep was emptied")
	}
	rt.sweepWarm()
	if idle() != 0 || rt.warmBudget.used.Load() != 0 || len(rt.warmPools) != 0 {
		t.Fatalf("after an idle sweep: %d idle, %d bytes charged, %d pools listed; want none", idle(), rt.warmBudget.used.Load(), len(rt.warmPools))
	}
	want := pristineProbe(t, probe(t, in, "yyyyy"), "yyyyy")
	if got := probe(t, in, "yyyyy"); got != want {
		t.Fatalf("after the sweep: probe saw %q, want %q", got, want)
	}
}

// TestReleaseIdle: the memory idle instances hold shows in IdleMemory, and
// ReleaseIdle (admission needing the room) closes them and gives it all
// back; the deployment goes on serving pristine instances, reused again.
func TestReleaseIdle(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := pristineInstance(t, rt)
	want := pristineProbe(t, probe(t, in, "aaaaa"), "aaaaa")
	probe(t, in, "aaaaa")
	held := rt.IdleMemory()
	if held <= 0 || held != rt.warmBudget.used.Load() {
		t.Fatalf("after two requests: IdleMemory %d, budget used %d; want the same, above 0", held, rt.warmBudget.used.Load())
	}
	if freed := rt.ReleaseIdle(1); freed != held {
		t.Errorf("ReleaseIdle freed %d, want all %d (the one pool)", freed, held)
	}
	p := in.(*instance).warm
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	if idle != 0 || rt.IdleMemory() != 0 {
		t.Fatalf("after ReleaseIdle: %d idle instances, IdleMemory %d; want none", idle, rt.IdleMemory())
	}
	made := rt.warmNew.Load()
	if got := probe(t, in, "aaaaa"); got != want {
		t.Fatalf("after ReleaseIdle: probe saw %q, want %q", got, want)
	}
	if got := probe(t, in, "aaaaa"); got != want {
		t.Fatalf("after ReleaseIdle, reused: probe saw %q, want %q", got, want)
	}
	if n := rt.warmNew.Load() - made; n != 1 || rt.IdleMemory() == 0 {
		t.Errorf("after ReleaseIdle: %d instances made for two requests, IdleMemory %d; want 1 made, reused again", n, rt.IdleMemory())
	}
}

// BenchmarkWarmVsFresh alternates, in small blocks on one goroutine so that
// both see the same machine load, a deployment that reuses its instances
// and the same deployment made to instantiate afresh for every request,
// for the file server (a 4 KiB file from `files`) and the echo module, and
// reports each one's time per request and their ratio.
func BenchmarkWarmVsFresh(b *testing.B) {
	for _, module := range []string{"fileserver.wasm", "echo.wasm"} {
		b.Run(module, func(b *testing.B) {
			dir := b.TempDir()
			copyModuleTB(b, dir, module)
			if err := writeTestFile(dir, "static/page.html", strings.Repeat("x", 4096)); err != nil {
				b.Fatal(err)
			}
			spec := moduleSpec("echo", dir, module, &sink{})
			spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}}
			rt := newRuntime(b, Config{})
			warm, fresh := prepare(b, rt, spec), prepare(b, rt, spec).(*instance)
			fresh.warm = nil
			target := "/fn/echo/static/page.html"
			if module == "echo.wasm" {
				target = "/fn/echo/env"
			}
			r := httptest.NewRequest("GET", target, nil)
			w := &discardWriter{h: http.Header{}}
			serve := func(in worker.Instance) func() {
				return func() {
					clear(w.h)
					in.Serve(w, r, "/fn/echo")
				}
			}
			alternate(b, "warm", serve(warm), "fresh", serve(fresh))
		})
	}
}

// TestReusedInstanceIsPristineRust is TestReusedInstanceIsPristine for a
// Rust module (testdata/pristine.rs): its statics, heap and stack after an
// exit code, a panic and a normal end.
func TestReusedInstanceIsPristineRust(t *testing.T) {
	rt := newRuntime(t, Config{})
	dir := t.TempDir()
	copyModuleTB(t, dir, "pristine_rs.wasm")
	in := prepare(t, rt, moduleSpec("echo", dir, "pristine_rs.wasm", &sink{}))
	want := func(q string) string {
		res := serve(in, "GET", "/fn/echo/probe?"+q, nil)
		body := readAll(t, res)
		if res.StatusCode != 200 {
			t.Fatalf("probe: status %d: %s", res.StatusCode, body)
		}
		return body
	}
	first := want("q0000")
	if !strings.HasPrefix(first, "count=1 ") || !strings.Contains(first, "scratch=- ") || !strings.Contains(first, `"q0000"`) {
		t.Fatalf("the first request saw a used instance: %q", first)
	}
	steps := []struct {
		path   string
		status int
	}{{"/probe", 200}, {"/exit3", 502}, {"/panic", 502}, {"/other", 200}}
	for round := range 3 {
		for i, s := range steps {
			res := serve(in, "GET", "/fn/echo"+s.path, nil)
			if body := readAll(t, res); res.StatusCode != s.status {
				t.Errorf("%s: status %d, want %d: %s", s.path, res.StatusCode, s.status, body)
			}
			q := fmt.Sprintf("r%dq%02d", round, i)
			if got, w := want(q), strings.ReplaceAll(first, "q0000", q); got != w {
				t.Errorf("after %s: probe saw %q, want %q", s.path, got, w)
			}
		}
	}
	if n, requests := rt.warmNew.Load(), int64(1+3*2*len(steps)); n*2 > requests {
		t.Errorf("%d instances made for %d requests: reuse did not happen", n, requests)
	}
}

// TestGrowingModuleStopsReuse: a deployment whose instances grow their
// memory on every request (Go's runtime does at start) cannot be reused;
// after maxGrown such requests in a row it takes fresh instances and no
// longer makes one for reuse per request, and still answers correctly.
func TestGrowingModuleStopsReuse(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := pristineInstance(t, rt)
	for range maxGrown {
		res := serve(in, "GET", "/fn/echo/grow", nil)
		if body := readAll(t, res); res.StatusCode != 200 {
			t.Fatalf("/grow: status %d: %s", res.StatusCode, body)
		}
	}
	made := rt.warmNew.Load()
	for range 20 {
		res := serve(in, "GET", "/fn/echo/grow", nil)
		if body := readAll(t, res); res.StatusCode != 200 {
			t.Fatalf("/grow: status %d: %s", res.StatusCode, body)
		}
	}
	if n := rt.warmNew.Load() - made; n != 0 {
		t.Errorf("%d instances made for reuse after %d requests that all grew", n, maxGrown)
	}
	want := pristineProbe(t, probe(t, in, "q0000"), "q0000")
	if got := probe(t, in, "q0001"); got != pristineProbe(t, want, "q0001") {
		t.Errorf("probe on the fresh path saw %q, want %q", got, pristineProbe(t, want, "q0001"))
	}
}
