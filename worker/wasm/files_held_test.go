package wasm

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/manifest"
)

// TestFilesHeld checks that a small mounted file is read from the disk once
// and then served from memory, that a large one and one past the Runtime's
// budget are read from the disk on every open, and that a deployment gives
// its held bytes back when it is closed.
func TestFilesHeld(t *testing.T) {
	rt := newRuntime(t, Config{})
	dir := filesTree(t, "fileserver.wasm")
	large := strings.Repeat("L", maxHeldFile+1)
	if err := writeTestFile(dir, "static/large.txt", large); err != nil {
		t.Fatal(err)
	}
	spec := moduleSpec("fs", dir, "fileserver.wasm", &sink{})
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}}
	in, err := rt.Prepare(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close(context.Background())

	for _, p := range []string{"/fn/fs/static/app.css", "/fn/fs/static/large.txt"} {
		if code, _ := get(t, in, "/fn/fs", p); code != 200 {
			t.Fatalf("%s: status %d", p, code)
		}
	}
	if got, want := rt.heldFiles.used.Load(), int64(len("body { color: red }\n")); got != want {
		t.Errorf("held %d bytes, want %d (app.css only)", got, want)
	}
	// Gone from the disk (an artifact's tree never changes; this only
	// shows where each answer comes from): the held file is still served,
	// the large one is not.
	for _, name := range []string{"static/app.css", "static/large.txt"} {
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(name))); err != nil {
			t.Fatal(err)
		}
	}
	if code, body := get(t, in, "/fn/fs", "/fn/fs/static/app.css"); code != 200 || body != "body { color: red }\n" {
		t.Errorf("held app.css: %d %q", code, body)
	}
	if code, _ := get(t, in, "/fn/fs", "/fn/fs/static/large.txt"); code != 404 {
		t.Errorf("large.txt, removed: status %d, want 404 (read from the disk)", code)
	}
	if err := in.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := rt.heldFiles.used.Load(); got != 0 {
		t.Errorf("after Close %d bytes still held", got)
	}

	// A Runtime whose budget is spent holds nothing more.
	rt2 := newRuntime(t, Config{})
	rt2.heldFiles.max = 4
	dir2 := filesTree(t, "fileserver.wasm")
	spec.Dir = dir2
	in2 := prepare(t, rt2, spec)
	if code, _ := get(t, in2, "/fn/fs", "/fn/fs/static/app.css"); code != 200 {
		t.Fatalf("status %d", code)
	}
	if err := os.Remove(filepath.Join(dir2, "static", "app.css")); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, in2, "/fn/fs", "/fn/fs/static/app.css"); code != 404 {
		t.Errorf("over budget, removed: status %d, want 404 (read from the disk)", code)
	}
	if got := rt2.heldFiles.used.Load(); got != 0 {
		t.Errorf("over budget: %d bytes held", got)
	}
}

// TestMemFile checks a held file's reads and seeks against bytes.Reader's.
func TestMemFile(t *testing.T) {
	data := []byte("0123456789")
	info, err := os.Stat(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := &memFile{data: data, info: info}
	ref := bytes.NewReader(data)
	buf, want := make([]byte, 4), make([]byte, 4)
	for _, step := range []struct {
		off    int64
		whence int
	}{{0, io.SeekStart}, {3, io.SeekCurrent}, {-2, io.SeekEnd}, {20, io.SeekStart}, {-1, io.SeekStart}, {0, 7}} {
		got, gerr := m.Seek(step.off, step.whence)
		exp, eerr := ref.Seek(step.off, step.whence)
		if (gerr != nil) != (eerr != nil) || gerr == nil && got != exp {
			t.Errorf("Seek(%d, %d) = %d, %v; want %d, %v", step.off, step.whence, got, gerr, exp, eerr)
		}
		n, gerr := m.Read(buf)
		k, eerr := ref.Read(want)
		if n != k || gerr != eerr || !bytes.Equal(buf[:n], want[:k]) {
			t.Errorf("after Seek(%d, %d): Read %q, %v; want %q, %v", step.off, step.whence, buf[:n], gerr, want[:k], eerr)
		}
	}
	for _, off := range []int64{0, 6, 8, 10, 11, -1} {
		n, gerr := m.ReadAt(buf, off)
		k, eerr := ref.ReadAt(want, off)
		if n != k || (gerr != nil) != (eerr != nil) || gerr == io.EOF != (eerr == io.EOF) || !bytes.Equal(buf[:n], want[:k]) {
			t.Errorf("ReadAt(%d) = %q, %v; want %q, %v", off, buf[:n], gerr, want[:k], eerr)
		}
	}
}

// TestFilesHeldHammer has many requests open the same files at once, the
// first of them racing to read them (run with -race).
func TestFilesHeldHammer(t *testing.T) {
	rt := newRuntime(t, Config{})
	dir := filesTree(t, "fileserver.wasm")
	spec := moduleSpec("fs", dir, "fileserver.wasm", &sink{})
	spec.Manifest.Files = []manifest.FileMount{{Pattern: "static/**"}}
	in := prepare(t, rt, spec)
	want := map[string]string{"/fn/fs/static/app.css": "body { color: red }\n", "/fn/fs/static/sub/deep.txt": "deep\n"}
	errs := make(chan string, 64)
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 8 {
				p := "/fn/fs/static/app.css"
				if (g+i)%2 == 1 {
					p = "/fn/fs/static/sub/deep.txt"
				}
				if code, body := get(t, in, "/fn/fs", p); code != 200 || body != want[p] {
					select {
					case errs <- p + ": " + body:
					default:
					}
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := rt.heldFiles.used.Load(); got != int64(len(want["/fn/fs/static/app.css"])+len(want["/fn/fs/static/sub/deep.txt"])) {
		t.Errorf("held %d bytes", got)
	}
}

// TestFilesRootStatAllocs: the stat of an open mounted directory, which
// wazero makes of the preopened root on every call, allocates nothing; its
// info is still the directory's.
func TestFilesRootStatAllocs(t *testing.T) {
	dir := filesTree(t, "fileserver.wasm")
	f, err := newFilesFS(dir, []manifest.FileMount{{Pattern: "static/**"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	d, err := f.Open("static")
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := d.Stat(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations for a directory's stat", allocs)
	}
	info, _ := d.Stat()
	if info.Name() != "static" || !info.IsDir() || info.Mode() != fs.ModeDir|0o555 || info.Size() != 0 {
		t.Errorf("info %q dir=%v mode %v size %d", info.Name(), info.IsDir(), info.Mode(), info.Size())
	}
}
