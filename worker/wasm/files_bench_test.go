package wasm

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
)

// BenchmarkFileServer measures a 4 KiB file served by fileserver.c from a
// `files` mount, the per-request cost behind bench's files section.
func BenchmarkFileServer(b *testing.B) {
	dir := b.TempDir()
	copyModuleTB(b, dir, "fileserver.wasm")
	if err := writeTestFile(dir, "static/page.html", strings.Repeat("x", 4096)); err != nil {
		b.Fatal(err)
	}
	spec := moduleSpec("echo", dir, "fileserver.wasm", &sink{})
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}}
	benchServe(b, spec, "/fn/echo/static/page.html")
}

// BenchmarkFileServerHeld alternates, in small blocks on one goroutine so
// that both see the same machine load, the file server with its page held
// in memory and with every open going to the disk (a Runtime whose budget
// holds nothing), and reports each one's time per request and their ratio.
func BenchmarkFileServerHeld(b *testing.B) {
	dir := b.TempDir()
	copyModuleTB(b, dir, "fileserver.wasm")
	if err := writeTestFile(dir, "static/page.html", strings.Repeat("x", 4096)); err != nil {
		b.Fatal(err)
	}
	spec := moduleSpec("echo", dir, "fileserver.wasm", &sink{})
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}}
	held := prepare(b, newRuntime(b, Config{}), spec)
	rtDisk := newRuntime(b, Config{})
	rtDisk.heldFiles.max = 0
	disk := prepare(b, rtDisk, spec)
	r := httptest.NewRequest("GET", "/fn/echo/static/page.html", nil)
	w := &discardWriter{h: http.Header{}}

	const block = 50
	var heldTime, diskTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i += block {
		n := min(block, b.N-i)
		start := time.Now()
		for range n {
			clear(w.h)
			held.Serve(w, r, "/fn/echo")
		}
		mid := time.Now()
		for range n {
			clear(w.h)
			disk.Serve(w, r, "/fn/echo")
		}
		heldTime += mid.Sub(start)
		diskTime += time.Since(mid)
	}
	b.ReportMetric(float64(heldTime.Nanoseconds())/float64(b.N), "held-ns/op")
	b.ReportMetric(float64(diskTime.Nanoseconds())/float64(b.N), "disk-ns/op")
	b.ReportMetric(float64(heldTime)/float64(diskTime), "held/disk")
}
