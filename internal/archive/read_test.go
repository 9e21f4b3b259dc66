package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

func TestReadHostile(t *testing.T) {
	small := Limits{Compressed: 1 << 10, Unpacked: 1 << 20, Files: 3}
	random := make([]byte, 4<<10)
	rand.Read(random)
	zeros := make([]byte, 2<<20)
	withTrailing := gz(t, append(tarBytes(t, file("a", "x")), zeros...))

	tests := []struct {
		name    string
		data    []byte
		lim     Limits
		strip   bool
		want    string
		wantErr error
	}{
		{"absolute path", tgz(t, file("/etc/passwd", "x")), Limits{}, false,
			`archive: entry "/etc/passwd": absolute path`, ErrInvalid},
		{"dotdot", tgz(t, file("../x", "x")), Limits{}, false,
			`archive: entry "../x": path leaves the tree`, ErrInvalid},
		{"dotdot deeper", tgz(t, file("a/../../x", "x")), Limits{}, false,
			`archive: entry "a/../../x": path leaves the tree`, ErrInvalid},
		{"dotdot inside", tgz(t, file("a/../b", "x")), Limits{}, false,
			`archive: entry "a/../b": path contains ".."`, ErrInvalid},
		{"backslash traversal", tgz(t, file(`..\..\evil`, "x")), Limits{}, false,
			`archive: entry "..\\..\\evil": name contains a backslash`, ErrInvalid},
		{"long element", tgz(t, file(strings.Repeat("a", 256), "x")), Limits{}, false,
			`archive: entry "` + strings.Repeat("a", 256) + `": path element longer than 255 bytes`, ErrInvalid},
		{"symlink absolute", tgz(t, symlink("l", "/etc/passwd")), Limits{}, false,
			`archive: entry "l": symlink target "/etc/passwd" is absolute`, ErrInvalid},
		{"symlink up", tgz(t, symlink("a/l", "../../etc/passwd")), Limits{}, false,
			`archive: entry "a/l": symlink target "../../etc/passwd" leaves the tree`, ErrInvalid},
		{"symlink chain", tgz(t, symlink("sub/up", ".."), symlink("l", "sub/up/..")), Limits{}, false,
			`archive: entry "l": symlink target "sub/up/.." leaves the tree`, ErrInvalid},
		{"symlink chain through dir link", tgz(t, dir("a/b/"), symlink("d", "a/b"), symlink("a/x", "../d/../../..")), Limits{}, false,
			`archive: entry "a/x": symlink target "../d/../../.." leaves the tree`, ErrInvalid},
		{"symlink loop", tgz(t, symlink("a", "b"), symlink("b", "a")), Limits{}, false,
			`archive: entry "a": symlink target "b" is a symlink loop`, ErrInvalid},
		{"symlink empty", tgz(t, symlink("a", "")), Limits{}, false,
			`archive: entry "a": symlink with an empty target`, ErrInvalid},
		{"path through symlink", tgz(t, dir("d/"), symlink("l", "d"), file("l/x", "x")), Limits{}, false,
			`archive: entry "l/x": path goes through the symlink "l"`, ErrInvalid},
		{"path through symlink, link last", tgz(t, file("l/x", "x"), symlink("l", "/")), Limits{}, false,
			`archive: entry "l": symlink target "/" is absolute`, ErrInvalid},
		{"file replaced by link", tgz(t, file("l/x", "x"), symlink("l", "d")), Limits{}, false,
			`archive: entry "l": is a directory in an earlier entry`, ErrInvalid},
		{"hard link", tgz(t, file("a", "x"), ent{name: "b", typ: tar.TypeLink, link: "a"}), Limits{}, false,
			`archive: entry "b": hard links are not allowed (link to "a")`, ErrInvalid},
		{"char device", tgz(t, ent{name: "null", typ: tar.TypeChar}), Limits{}, false,
			`archive: entry "null": character devices are not allowed`, ErrInvalid},
		{"block device", tgz(t, ent{name: "sda", typ: tar.TypeBlock}), Limits{}, false,
			`archive: entry "sda": block devices are not allowed`, ErrInvalid},
		{"fifo", tgz(t, ent{name: "p", typ: tar.TypeFifo}), Limits{}, false,
			`archive: entry "p": fifos are not allowed`, ErrInvalid},
		{"duplicate", tgz(t, file("a", "x"), file("./a", "y")), Limits{}, false,
			`archive: entry "./a": duplicate entry`, ErrInvalid},
		{"duplicate dir", tgz(t, dir("a/"), dir("a/")), Limits{}, false,
			`archive: entry "a/": duplicate entry`, ErrInvalid},
		{"file as parent", tgz(t, file("a", "x"), file("a/b", "y")), Limits{}, false,
			`archive: entry "a/b": parent "a" is not a directory`, ErrInvalid},
		{"file names root", tgz(t, file(".", "x")), Limits{}, false,
			`archive: entry ".": not a directory but names the root`, ErrInvalid},
		{"too many files", tgz(t, file("a", ""), file("b", ""), file("c", ""), file("d", "")), small, false,
			`archive: more than 3 entries`, ErrTooLarge},
		{"unpacked bomb", tgz(t, file("zeros", string(zeros))), small, false,
			`archive: unpacked size exceeds 1 MiB`, ErrTooLarge},
		{"unpacked bomb over several files", tgz(t, file("a", string(zeros[:600<<10])), file("b", string(zeros[:600<<10]))), small, false,
			`archive: unpacked size exceeds 1 MiB`, ErrTooLarge},
		{"compressed too large", tgz(t, file("random", string(random))), small, false,
			`archive: compressed size exceeds 1 KiB`, ErrTooLarge},
		{"trailing data", withTrailing, Limits{}, false,
			`archive: more than 1 MiB of data after the end of the tar stream`, ErrInvalid},
		{"not gzip", []byte("PK\x03\x04 a zip file"), Limits{}, false,
			`archive: not gzip: gzip: invalid header`, ErrInvalid},
		{"empty input", nil, Limits{}, false,
			`archive: not gzip: EOF`, ErrInvalid},
		{"truncated", tgz(t, file("a", strings.Repeat("abc", 1000)))[:100], Limits{}, false,
			`archive: truncated`, ErrInvalid},
		{"not tar", gz(t, []byte(strings.Repeat("not a tar header ", 100))), Limits{}, false,
			`archive: corrupt: archive/tar: invalid tar header`, ErrInvalid},
		{"strip two top dirs", tgz(t, file("a/x", "1"), file("b/y", "2")), Limits{}, true,
			`archive: entry "b/y": not under the top-level directory "a/" of entry "a/x"; expected a single top-level directory`, ErrInvalid},
		{"strip top-level file", tgz(t, dir("a/"), file("README", "1")), Limits{}, true,
			`archive: entry "README": not under a top-level directory`, ErrInvalid},
		{"strip then dotdot", tgz(t, file("a/../../x", "1")), Limits{}, true,
			`archive: entry "a/../../x": path leaves the tree`, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree, err := Read(bytes.NewReader(tt.data), tt.lim, tt.strip)
			if err == nil {
				t.Fatalf("Read succeeded with files %q, want %q", tree.Files(), tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Read error\n got %q\nwant %q", err, tt.want)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Read error %v is not %v", err, tt.wantErr)
			}
		})
	}
}

// failingReader gives n bytes of data, then fails.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestReadSourceError(t *testing.T) {
	boom := errors.New("connection reset")
	data := tgz(t, file("a", strings.Repeat("abc", 10000)))
	_, err := Read(&failingReader{r: bytes.NewReader(data[:len(data)/2]), err: boom}, Limits{}, false)
	if !errors.Is(err, boom) {
		t.Fatalf("Read = %v, want it to wrap %v", err, boom)
	}
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) {
		t.Errorf("a failing source is not the archive's fault, got %v", err)
	}
}

// zeroBomb streams a gzip'd tar whose one entry declares size bytes and
// then has that many zeros, compressing only as much as the reader asks for.
type zeroBomb struct {
	pr       *io.PipeReader
	consumed int64
}

func newZeroBomb(size int64) *zeroBomb {
	pr, pw := io.Pipe()
	go func() {
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestCompression)
		tw := tar.NewWriter(zw)
		err := tw.WriteHeader(&tar.Header{Name: "bomb", Typeflag: tar.TypeReg, Mode: 0o644, Size: size})
		chunk := make([]byte, 1<<20)
		for written := int64(0); err == nil && written < size; written += int64(len(chunk)) {
			_, err = tw.Write(chunk[:min(int64(len(chunk)), size-written)])
		}
		if err == nil {
			err = tw.Close()
		}
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	return &zeroBomb{pr: pr}
}

func (b *zeroBomb) Read(p []byte) (int, error) {
	n, err := b.pr.Read(p)
	b.consumed += int64(n)
	return n, err
}

func TestReadBombDefaultLimits(t *testing.T) {
	bomb := newZeroBomb(300 << 20)
	defer bomb.pr.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Read(bomb, Limits{}, false)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) || err.Error() != "archive: unpacked size exceeds 256 MiB" {
		t.Fatalf("Read = %v, want the unpacked cap", err)
	}
	if bomb.consumed > 1<<20 {
		t.Errorf("Read consumed %d compressed bytes before refusing; want it to stop at the header", bomb.consumed)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("Read allocated %d bytes for a bomb it refused", alloc)
	}
}

func TestReadBombUnderDeclaredSize(t *testing.T) {
	// Entries that stay under the per-entry check still hit the total cap
	// as soon as the sum crosses it, before the contents are read.
	var ents []ent
	for i := range 5 {
		ents = append(ents, file(strings.Repeat("f", i+1), strings.Repeat("\x00", 300<<10)))
	}
	_, err := Read(bytes.NewReader(tgz(t, ents...)), Limits{Unpacked: 1 << 20}, false)
	if err == nil || err.Error() != "archive: unpacked size exceeds 1 MiB" {
		t.Fatalf("Read = %v", err)
	}
}

const githubSHA = "7d5c6f04bbb8a1b2c3d4e5f60718293a4b5c6d7e"

func githubTarball(t testing.TB) []byte {
	top := "velo-run-hello-7d5c6f0/"
	return tgz(t,
		ent{name: "pax_global_header", typ: tar.TypeXGlobalHeader, pax: map[string]string{"comment": githubSHA}},
		dir(top),
		file(top+".gitignore", "target/\n"),
		file(top+"velo.toml", "name = \"hello\"\n"),
		dir(top+"src/"),
		ent{name: top + "src/build.sh", typ: tar.TypeReg, body: "#!/bin/sh\n", mode: 0o775},
		file(top+"src/main.go", "package main\n"),
		symlink(top+"main.go", "src/main.go"),
		symlink(top+"code", "src"),
		file(top+"docs/deep/x.md", "implicit parents\n"),
	)
}

func TestReadGitHubTarball(t *testing.T) {
	tree, err := Read(bytes.NewReader(githubTarball(t)), Limits{}, true)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if tree.Comment != githubSHA {
		t.Errorf("Comment = %q, want %q", tree.Comment, githubSHA)
	}
	wantFiles := []string{".gitignore", "code", "docs/deep/x.md", "main.go", "src/build.sh", "src/main.go", "velo.toml"}
	if got := tree.Files(); !slices.Equal(got, wantFiles) {
		t.Errorf("Files = %q, want %q", got, wantFiles)
	}
	if err := fstest.TestFS(tree, wantFiles...); err != nil {
		t.Errorf("TestFS: %v", err)
	}
	if b, err := fs.ReadFile(tree, "code/main.go"); err != nil || string(b) != "package main\n" {
		t.Errorf("ReadFile through a dir link = %q, %v", b, err)
	}
	if target, err := fs.ReadLink(tree, "main.go"); err != nil || target != "src/main.go" {
		t.Errorf("ReadLink = %q, %v", target, err)
	}
	if fi, err := fs.Stat(tree, "src/build.sh"); err != nil || fi.Mode() != 0o755 {
		t.Errorf("Stat(build.sh) mode = %v, %v; want 0755", fi.Mode(), err)
	}
	if fi, err := fs.Stat(tree, "velo.toml"); err != nil || fi.Mode() != 0o644 {
		t.Errorf("Stat(velo.toml) mode = %v, %v; want 0644", fi.Mode(), err)
	}
	if fi, err := fs.Stat(tree, "docs/deep"); err != nil || !fi.IsDir() {
		t.Errorf("implicit directory docs/deep: %v, %v", fi, err)
	}
	if want := int64(len("target/\n") + len("name = \"hello\"\n") + len("#!/bin/sh\n") + len("package main\n") + len("implicit parents\n")); tree.Size() != want {
		t.Errorf("Size = %d, want %d", tree.Size(), want)
	}

	// Without stripping, the top-level directory is part of every path.
	tree, err = Read(bytes.NewReader(githubTarball(t)), Limits{}, false)
	if err != nil {
		t.Fatalf("Read without strip: %v", err)
	}
	if _, err := fs.Stat(tree, "velo-run-hello-7d5c6f0/velo.toml"); err != nil {
		t.Errorf("without strip: %v", err)
	}
}

func TestReadNameForms(t *testing.T) {
	tree, err := Read(bytes.NewReader(tgz(t, dir("./"), file("./a//b/./c.txt", "c"), dir("a/"), file("d", ""))), Limits{}, false)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if got, want := tree.Files(), []string{"a/b/c.txt", "d"}; !slices.Equal(got, want) {
		t.Errorf("Files = %q, want %q", got, want)
	}
	if tree.Len() != 4 {
		t.Errorf("Len = %d, want 4 (a, a/b, a/b/c.txt, d)", tree.Len())
	}
}

func TestTreeFSErrors(t *testing.T) {
	tree, err := Read(bytes.NewReader(tgz(t, file("a", "x"), symlink("dangling", "nowhere"))), Limits{}, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"missing", "dangling", "a/b"} {
		if _, err := tree.Open(name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(%q) = %v, want ErrNotExist", name, err)
		}
	}
	for _, name := range []string{"../a", "/a", "a/", ""} {
		if _, err := tree.Open(name); !errors.Is(err, fs.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", name, err)
		}
	}
	if fi, err := tree.Lstat("dangling"); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat(dangling) = %v, %v", fi, err)
	}
	if _, err := tree.ReadLink("a"); err == nil {
		t.Error("ReadLink of a regular file succeeded")
	}
	if _, err := tree.ReadDir("a"); err == nil {
		t.Error("ReadDir of a regular file succeeded")
	}
	b, _ := tree.ReadFile("a")
	b[0] = 'y'
	if again, _ := tree.ReadFile("a"); string(again) != "x" {
		t.Error("ReadFile returned the tree's own bytes")
	}
}

func TestCleanName(t *testing.T) {
	tests := map[string]string{
		"a\x00b": `archive: entry "a\x00b": name contains a NUL byte`,
		"":       `archive: empty name`,
	}
	for in, want := range tests {
		if _, err := cleanName(in); err == nil || err.Error() != want {
			t.Errorf("cleanName(%q) = %v, want %q", in, err, want)
		}
	}
	long := strings.Repeat("a/", 2100)
	if _, err := cleanName(long); err == nil || !strings.Contains(err.Error(), "name longer than 4096 bytes") {
		t.Errorf("cleanName(long) = %v", err)
	}
}

func TestReadSymlinkWorkIsBounded(t *testing.T) {
	dots := strings.Repeat("./", 2000) // 2000 steps to walk, all in place

	// A chain of links, each of which walks its dots and then the next.
	var chain []ent
	for i := range 30 {
		chain = append(chain, symlink(fmt.Sprintf("l%d", i), dots+fmt.Sprintf("l%d", i+1)))
	}
	chain = append(chain, file("l30", "end"))
	_, err := Read(bytes.NewReader(tgz(t, chain...)), Limits{}, false)
	if err == nil || err.Error() != `archive: entry "l0": symlink target "`+dots+`l1" takes too many steps to resolve` {
		t.Errorf("long chain: %v", err)
	}

	// Many links, each cheap enough alone, too many together.
	var many []ent
	for i := range 2200 {
		many = append(many, symlink(fmt.Sprintf("m%04d", i), dots))
	}
	_, err = Read(bytes.NewReader(tgz(t, many...)), Limits{}, false)
	if err == nil || err.Error() != "archive: symlinks take too many steps to check" {
		t.Errorf("many links: %v", err)
	}
	// The same links, fewer of them, are fine.
	if _, err := Read(bytes.NewReader(tgz(t, many[:100]...)), Limits{}, false); err != nil {
		t.Errorf("100 links: %v", err)
	}
}
