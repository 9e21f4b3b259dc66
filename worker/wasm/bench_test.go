package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

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

// BenchmarkRawWazero is the floor BenchmarkServe/c is compared with: a
// fresh wazero instance of the same module per iteration, with a minimal
// WAGI environment and nothing else.
func BenchmarkRawWazero(b *testing.B) {
	ctx := context.Background()
	bin, err := os.ReadFile(filepath.Join("testdata", "echo.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true))
	defer r.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	mod, err := r.CompileModule(ctx, bin)
	if err != nil {
		b.Fatal(err)
	}
	base := wazero.NewModuleConfig().WithName("").WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var out bytes.Buffer
		for pb.Next() {
			out.Reset()
			cfg := base.WithStdout(&out).WithStdin(bytes.NewReader(nil)).
				WithArgs("/hello").
				WithEnv("REQUEST_METHOD", "GET").
				WithEnv("PATH_INFO", "/hello").
				WithEnv("QUERY_STRING", "a=1")
			ctx, cancel := context.WithTimeout(ctx, 10e9)
			m, err := r.InstantiateModule(ctx, mod, cfg)
			if err != nil {
				b.Error(err)
			}
			if m != nil {
				m.Close(ctx)
			}
			cancel()
		}
	})
}
