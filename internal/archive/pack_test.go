package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeDir creates files under dir; a value starting with "->" makes a
// symlink, a name ending in "/" a directory.
func writeDir(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(body, "->"):
			err = os.Symlink(strings.TrimPrefix(body, "->"), p)
		default:
			err = os.WriteFile(p, []byte(body), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func pack(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(&buf, dir); err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes()
}

var sampleDir = map[string]string{
	"velo.toml":           "name = \"hello\"\n",
	"main.go":             "package main\n",
	"bin/hello.wasm":      "\x00asm\x01\x00\x00\x00",
	"static/index.html":   "<h1>hi</h1>\n",
	"static/empty/":       "",
	"link":                "->static/index.html",
	".git/HEAD":           "ref: refs/heads/main\n",
	"sub/.git":            "gitdir: ../.git/modules/sub\n",
	".velo/admin.token":   "secret",
	"node_modules/x.js":   "junk",
	"debug.log":           "junk",
	"keep.log":            "kept",
	"deep/a/b/trace.log":  "junk",
	"build/out.bin":       "junk",
	"docs/build/notes.md": "kept: build/ is anchored",
	".gitignore":          "# deps\nnode_modules/\n\n*.log\n!keep.log\n/build\n",
}

func TestPack(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, sampleDir)
	if err := os.Chmod(filepath.Join(dir, "bin/hello.wasm"), 0o700); err != nil {
		t.Fatal(err)
	}
	tree, err := Read(bytes.NewReader(pack(t, dir)), Limits{}, false)
	if err != nil {
		t.Fatalf("Read(Pack): %v", err)
	}
	want := []string{".gitignore", "bin/hello.wasm", "docs/build/notes.md", "keep.log", "link", "main.go", "static/index.html", "velo.toml"}
	if got := tree.Files(); !slices.Equal(got, want) {
		t.Errorf("packed files\n got %q\nwant %q", got, want)
	}
	if fi, err := tree.Stat("static/empty"); err != nil || !fi.IsDir() {
		t.Errorf("empty directory not packed: %v", err)
	}
	if fi, _ := tree.Stat("bin/hello.wasm"); fi.Mode() != 0o755 {
		t.Errorf("executable packed as %v, want 0755", fi.Mode())
	}
	if target, err := tree.ReadLink("link"); err != nil || target != "static/index.html" {
		t.Errorf("link packed as %q, %v", target, err)
	}
}

func TestPackCanonical(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeDir(t, a, sampleDir)
	writeDir(t, b, sampleDir)
	// Different times, owners' umask choices and creation order must not
	// change a byte.
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	filepath.Walk(b, func(p string, _ os.FileInfo, _ error) error {
		os.Chtimes(p, old, old)
		return nil
	})
	if err := os.Chmod(filepath.Join(b, "main.go"), 0o600); err != nil {
		t.Fatal(err)
	}
	first, second, other := pack(t, a), pack(t, a), pack(t, b)
	if !bytes.Equal(first, second) {
		t.Fatal("two Packs of the same directory differ")
	}
	if !bytes.Equal(first, other) {
		t.Fatal("Packs of identical contents with different times and modes differ")
	}

	// Read then WriteTo gives the same bytes back: WriteTo is canonical.
	tree, err := Read(bytes.NewReader(first), Limits{}, false)
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	n, err := tree.WriteTo(&again)
	if err != nil || n != int64(again.Len()) {
		t.Fatalf("WriteTo = %d, %v (wrote %d)", n, err, again.Len())
	}
	if !bytes.Equal(first, again.Bytes()) {
		t.Fatal("Read(Pack(dir)).WriteTo differs from Pack(dir)")
	}

	// A changed byte changes the archive.
	if err := os.WriteFile(filepath.Join(b, "main.go"), []byte("package mainx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, pack(t, b)) {
		t.Fatal("different contents packed to the same bytes")
	}
}

func TestWriteToHeaders(t *testing.T) {
	tree, err := Read(bytes.NewReader(githubTarball(t)), Limits{}, true)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("gzip header has time %v, name %q", zr.ModTime, zr.Name)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			t.Errorf("canonical archive carries a global header")
		}
		if hdr.ModTime.Unix() != 0 || hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: time %v uid %d gid %d owner %q:%q", hdr.Name, hdr.ModTime, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname)
		}
		want := map[byte]int64{tar.TypeDir: 0o755, tar.TypeSymlink: 0o777}[hdr.Typeflag]
		if hdr.Typeflag == tar.TypeReg {
			want = 0o644
			if hdr.Name == "src/build.sh" {
				want = 0o755
			}
		}
		if hdr.Mode != want {
			t.Errorf("%s: mode %o, want %o", hdr.Name, hdr.Mode, want)
		}
	}
	want := []string{".gitignore", "code", "docs/", "docs/deep/", "docs/deep/x.md", "main.go", "src/", "src/build.sh", "src/main.go", "velo.toml"}
	if !slices.Equal(names, want) {
		t.Errorf("entries\n got %q\nwant %q", names, want)
	}
}

func TestPackSymlinkOutside(t *testing.T) {
	for _, target := range []string{"../../outside", "/etc/passwd", "../sub/../../x"} {
		dir := t.TempDir()
		writeDir(t, dir, map[string]string{"ok": "x", "sub/escape": "->" + target})
		err := Pack(io.Discard, dir)
		if err == nil || !strings.Contains(err.Error(), `"sub/escape"`) {
			t.Errorf("Pack with a link to %q = %v, want an error naming sub/escape", target, err)
		}
	}
}

func TestPackIgnoredLinkOutside(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, map[string]string{"ok": "x", "escape": "->/etc", ".veloignore": "escape\n", ".gitignore": "ok\n"})
	tree, err := FromDir(dir, Limits{})
	if err != nil {
		t.Fatalf("FromDir: %v", err)
	}
	// .veloignore wins over .gitignore, which is not read at all.
	if got, want := tree.Files(), []string{".gitignore", ".veloignore", "ok"}; !slices.Equal(got, want) {
		t.Errorf("Files = %q, want %q", got, want)
	}
}

func TestPackLimits(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, map[string]string{"a": strings.Repeat("x", 2000), "b": "y", "c": "z"})
	if _, err := FromDir(dir, Limits{Unpacked: 1000}); err == nil || !strings.Contains(err.Error(), "contents exceed 1000 bytes") {
		t.Errorf("FromDir over the size cap = %v", err)
	}
	if _, err := FromDir(dir, Limits{Files: 2}); err == nil || !strings.Contains(err.Error(), "more than 2 files") {
		t.Errorf("FromDir over the file cap = %v", err)
	}
}

func TestPackSymlinkedRoot(t *testing.T) {
	real := t.TempDir()
	writeDir(t, real, map[string]string{"a": "x"})
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	tree, err := FromDir(link, Limits{})
	if err != nil || !slices.Equal(tree.Files(), []string{"a"}) {
		t.Fatalf("FromDir(symlink to dir) = %v, %v", tree, err)
	}
}

func TestUnpack(t *testing.T) {
	parent := t.TempDir()
	dst := filepath.Join(parent, "out")
	if err := Unpack(bytes.NewReader(githubTarball(t)), dst, Limits{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	top := filepath.Join(dst, "velo-run-hello-7d5c6f0")
	if b, err := os.ReadFile(filepath.Join(top, "code", "main.go")); err != nil || string(b) != "package main\n" {
		t.Errorf("read through unpacked dir link: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(top, "src", "build.sh")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("build.sh not executable: %v, %v", fi, err)
	}
	if target, err := os.Readlink(filepath.Join(top, "main.go")); err != nil || target != "src/main.go" {
		t.Errorf("Readlink = %q, %v", target, err)
	}
	if fi, err := os.Stat(dst); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("unpacked dir mode: %v, %v", fi, err)
	}
	assertOnly(t, parent, "out")

	// A second Unpack into the same place is refused and changes nothing.
	err := Unpack(bytes.NewReader(tgz(t, file("new", "x"))), dst, Limits{})
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Unpack over an existing dir = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Error("Unpack wrote into an existing directory")
	}
	assertOnly(t, parent, "out")
}

func TestUnpackLeavesNothingOnFailure(t *testing.T) {
	hostile := [][]byte{
		tgz(t, file("a", "x"), file("../../escape", "x")),
		tgz(t, file("a", "x"), symlink("l", "../../..")),
		tgz(t, file("a", "x"), file("a", "y")),
		tgz(t, file("a", strings.Repeat("x", 10000)))[:40],
	}
	for i, data := range hostile {
		parent := t.TempDir()
		if err := Unpack(bytes.NewReader(data), filepath.Join(parent, "out"), Limits{}); err == nil {
			t.Errorf("archive %d: Unpack succeeded", i)
		}
		assertOnly(t, parent)
	}
}

func TestExtractCleansUpAfterWriteError(t *testing.T) {
	// A tree Read could never produce: "a" is both a file and a parent. The
	// write fails half-way; the temporary directory must go.
	tree := newTree()
	tree.nodes["a"] = &node{kind: kindFile, name: "a", data: []byte("x")}
	tree.nodes["a/b"] = &node{kind: kindFile, name: "b", data: []byte("y")}
	parent := t.TempDir()
	if err := tree.Extract(filepath.Join(parent, "out")); err == nil {
		t.Fatal("Extract succeeded")
	}
	assertOnly(t, parent)
}

// assertOnly fails unless dir holds exactly the names given.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, names) {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

// TestPackKeepsIgnoredBuildOutput: the module a build writes is usually in
// .gitignore, yet it is what must be uploaded.
func TestPackKeepsIgnoredBuildOutput(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		".gitignore":     "*.wasm\nbuild/\n",
		"main.go":        "package main",
		"hello.wasm":     "module",
		"other.wasm":     "left out",
		"build/app.wasm": "kept",
		"build/junk":     "left out",
	} {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tree, err := FromDir(dir, Limits{}, "hello.wasm", "./build/app.wasm", "../outside")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(tree.Files(), " ")
	if want := ".gitignore build/app.wasm hello.wasm main.go"; got != want {
		t.Fatalf("files = %q, want %q", got, want)
	}
}
