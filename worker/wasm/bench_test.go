package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/velo-run/velo/worker"
)

// discardWriter is a ResponseWriter that keeps nothing, so that benchmarks
// measure Serve rather than a recorder.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

func benchServe(b *testing.B, spec worker.Spec, target string) {
	rt := newRuntime(b, Config{})
	in := prepare(b, rt, spec)
	r := httptest.NewRequest("GET", target, nil)
	r.Header.Set("User-Agent", "bench")
	r.Header.Set("Accept", "*/*")

	// Check once that the request succeeds.
	w := httptest.NewRecorder()
	in.Serve(w, r, "/fn/echo")
	if w.Code != 200 {
		b.Fatalf("status %d: %s", w.Code, w.Body)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			in.Serve(w, r, "/fn/echo")
		}
	})
}

// BenchmarkServe measures one request through Instance.Serve, in parallel
// over GOMAXPROCS goroutines.
func BenchmarkServe(b *testing.B) {
	b.Run("c", func(b *testing.B) {
		benchServe(b, echoSpec(&sink{}), "/fn/echo/hello?a=1")
	})
	b.Run("go", func(b *testing.B) {
		if helloWasm == "" {
			b.Skip(buildErr)
		}
		benchServe(b, goSpec(b, &sink{}), "/fn/echo/hello?a=1")
	})
}

// raw is the floor Serve is compared with: what a minimal Go server does per
// request to run a fresh wazero instance of the same module, with a minimal
// WAGI environment and nothing else.
type raw struct {
	r    wazero.Runtime
	mod  wazero.CompiledModule
	base wazero.ModuleConfig
}

func newRaw(b *testing.B) *raw {
	ctx := context.Background()
	bin, err := os.ReadFile(filepath.Join("testdata", "echo.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true))
	b.Cleanup(func() { r.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	mod, err := r.CompileModule(ctx, bin)
	if err != nil {
		b.Fatal(err)
	}
	base := wazero.NewModuleConfig().WithName("").WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader)
	return &raw{r: r, mod: mod, base: base}
}

func (x *raw) run(b *testing.B, out *bytes.Buffer) {
	out.Reset()
	cfg := x.base.WithStdout(out).WithStdin(bytes.NewReader(nil)).
		WithArgs("/hello").
		WithEnv("REQUEST_METHOD", "GET").
		WithEnv("PATH_INFO", "/hello").
		WithEnv("QUERY_STRING", "a=1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := x.r.InstantiateModule(ctx, x.mod, cfg)
	if err != nil {
		b.Error(err)
	}
	if m != nil {
		m.Close(ctx)
	}
}

// BenchmarkRawWazero measures the floor alone, in parallel like
// BenchmarkServe.
func BenchmarkRawWazero(b *testing.B) {
	x := newRaw(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var out bytes.Buffer
		for pb.Next() {
			x.run(b, &out)
		}
	})
}

// BenchmarkServeVsRaw alternates Serve and the raw floor in small blocks on
// one goroutine, so that both see the same machine load, and reports each
// one's time per request and their ratio (serve/raw; 1.25 is the 0.8x
// throughput bound).
func BenchmarkServeVsRaw(b *testing.B) {
	x := newRaw(b)
	rt := newRuntime(b, Config{})
	in := prepare(b, rt, echoSpec(&sink{}))
	r := httptest.NewRequest("GET", "/fn/echo/hello?a=1", nil)
	r.Header.Set("User-Agent", "bench")
	r.Header.Set("Accept", "*/*")
	w := &discardWriter{h: http.Header{}}
	var out bytes.Buffer
	alternate(b, "serve", func() {
		clear(w.h)
		in.Serve(w, r, "/fn/echo")
	}, "raw", func() { x.run(b, &out) })
}

// alternate runs first and second b.N times each, in alternating blocks of
// 50 on one goroutine so that both see the same machine load, and reports
// each one's time per run and their ratio (NAME-ns/op, first/second), and
// the process's CPU time per run (NAME-cpu-ns/op: this goroutine's, and
// what the runtime and any goroutine a run starts spent meanwhile), which
// other processes on a busy machine disturb far less than the time.
func alternate(b *testing.B, firstName string, first func(), secondName string, second func()) {
	const block = 50
	var firstTime, secondTime, firstCPU, secondCPU time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i += block {
		n := min(block, b.N-i)
		start, cpu0 := time.Now(), processCPU()
		for range n {
			first()
		}
		mid, cpu1 := time.Now(), processCPU()
		for range n {
			second()
		}
		firstTime += mid.Sub(start)
		secondTime += time.Since(mid)
		firstCPU += cpu1 - cpu0
		secondCPU += processCPU() - cpu1
	}
	b.ReportMetric(float64(firstTime.Nanoseconds())/float64(b.N), firstName+"-ns/op")
	b.ReportMetric(float64(secondTime.Nanoseconds())/float64(b.N), secondName+"-ns/op")
	b.ReportMetric(float64(firstTime)/float64(secondTime), firstName+"/"+secondName)
	b.ReportMetric(float64(firstCPU.Nanoseconds())/float64(b.N), firstName+"-cpu-ns/op")
	b.ReportMetric(float64(secondCPU.Nanoseconds())/float64(b.N), secondName+"-cpu-ns/op")
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkStopChecks alternates the file server of BenchmarkFileServer
// stopped by its own checks (stop.go) and by wazero's (a Runtime that
// compiles every module with WithCloseOnContextDone), and reports each
// one's time and CPU time per request.
func BenchmarkStopChecks(b *testing.B) {
	alternateFileServer(b, "own", "wazero", func(rt *Runtime) { rt.noStops = true })
}
