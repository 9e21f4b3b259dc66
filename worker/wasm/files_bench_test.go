package wasm

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
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
	alternateFileServer(b, "held", "disk", func(rt *Runtime) { rt.heldFiles.max = 0 })
}

// alternateFileServer prepares the file server of BenchmarkFileServer, its
// 4 KiB page under static/, in a default Runtime (named first) and in one
// changed by alter (named second), and alternates them (alternate).
func alternateFileServer(b *testing.B, first, second string, alter func(*Runtime)) {
	dir := b.TempDir()
	copyModuleTB(b, dir, "fileserver.wasm")
	if err := writeTestFile(dir, "static/page.html", strings.Repeat("x", 4096)); err != nil {
		b.Fatal(err)
	}
	spec := moduleSpec("echo", dir, "fileserver.wasm", &sink{})
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}}
	a := prepare(b, newRuntime(b, Config{}), spec)
	rt := newRuntime(b, Config{})
	alter(rt)
	c := prepare(b, rt, spec)
	r := httptest.NewRequest("GET", "/fn/echo/static/page.html", nil)
	w := &discardWriter{h: http.Header{}}
	serve := func(in worker.Instance) func() {
		return func() {
			clear(w.h)
			in.Serve(w, r, "/fn/echo")
		}
	}
	alternate(b, first, serve(a), second, serve(c))
}
