package wasm

import (
	"strings"
	"testing"

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
