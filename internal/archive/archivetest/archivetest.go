// Package archivetest builds component archives for tests: a .tar.gz of
// the given files, names taken as they are (so tests can also build
// hostile archives with "../" or absolute names).
package archivetest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"testing"
)

// TarGz packs files (name → content) into a .tar.gz. Files whose content
// starts like an ELF binary are executable, as `velo deploy` would pack
// a program.
func TarGz[T string | []byte](t testing.TB, files map[string]T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		mode := int64(0o644)
		if bytes.HasPrefix([]byte(content), []byte("\x7fELF")) {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
