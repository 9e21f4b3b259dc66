package archive

import (
	"archive/tar"
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// fuzzLimits keep each run small.
var fuzzLimits = Limits{Compressed: 1 << 20, Unpacked: 1 << 20, Files: 200}

// addSeeds seeds a fuzz target with uncompressed tar streams (the target
// compresses them, so mutations reach the tar parser and not just the gzip
// checksum), good and hostile.
func addSeeds(f *testing.F) {
	seeds := [][]ent{
		{file("a", "x"), dir("d/"), file("d/b", "y"), symlink("l", "d/b")},
		{ent{name: "pax_global_header", typ: tar.TypeXGlobalHeader, pax: map[string]string{"comment": githubSHA}},
			dir("o-r-1/"), file("o-r-1/velo.toml", "name = \"x\""), symlink("o-r-1/up", "..")},
		{file("/etc/passwd", "x")},
		{file("../x", "x")},
		{file(`..\x`, "x")},
		{symlink("l", "/etc/passwd")},
		{symlink("l", "../../x")},
		{symlink("sub/up", ".."), symlink("l", "sub/up/..")},
		{symlink("a", "b"), symlink("b", "a")},
		{dir("d/"), symlink("l", "d"), file("l/x", "x")},
		{file("a", "x"), ent{name: "b", typ: tar.TypeLink, link: "a"}},
		{ent{name: "c", typ: tar.TypeChar}, ent{name: "p", typ: tar.TypeFifo}},
		{file("a", "x"), file("a", "y")},
		{file("a", "x"), file("a/b", "y")},
		{file("a/x", "1"), file("b/y", "2")},
	}
	for _, s := range seeds {
		f.Add(tarBytes(f, s...), false)
		f.Add(tarBytes(f, s...), true)
	}
}

func FuzzRead(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, strip bool) {
		// The raw bytes as a .tar.gz, for the gzip layer; never panics.
		Read(bytes.NewReader(data), fuzzLimits, strip)

		tree, err := Read(bytes.NewReader(gz(t, data)), fuzzLimits, strip)
		if err != nil {
			return
		}
		for _, p := range tree.paths() {
			if !fs.ValidPath(p) {
				t.Fatalf("accepted invalid path %q", p)
			}
			if n := tree.nodes[p]; n.kind == kindSymlink {
				if _, err := tree.walk(n.parent, n.target, true, nil); err != nil {
					t.Fatalf("accepted symlink %q -> %q: %v", p, n.target, err)
				}
			}
		}
		var regular []string
		for _, p := range tree.Files() {
			if tree.nodes[p].kind == kindFile {
				regular = append(regular, p)
			}
		}
		if len(regular) > 0 {
			if err := fstest.TestFS(tree, regular...); err != nil {
				t.Fatalf("TestFS: %v", err)
			}
		}
		// The canonical form reads back to the same tree and is a fixed
		// point.
		var first bytes.Buffer
		if _, err := tree.WriteTo(&first); err != nil {
			t.Fatalf("WriteTo: %v", err)
		}
		again, err := Read(bytes.NewReader(first.Bytes()), fuzzLimits, false)
		if err != nil {
			t.Fatalf("Read of the canonical form: %v", err)
		}
		if !slices.Equal(tree.Files(), again.Files()) || tree.Size() != again.Size() {
			t.Fatalf("canonical form holds %q, want %q", again.Files(), tree.Files())
		}
		var second bytes.Buffer
		again.WriteTo(&second)
		if !bytes.Equal(first.Bytes(), second.Bytes()) {
			t.Fatal("WriteTo is not a fixed point")
		}
	})
}

// FuzzUnpack checks that whatever the archive, Unpack creates nothing
// outside its target and no link in the result leads out of it.
func FuzzUnpack(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte, _ bool) {
		parent := t.TempDir()
		dst := filepath.Join(parent, "out")
		err := Unpack(bytes.NewReader(gz(t, data)), dst, fuzzLimits)
		ents, _ := os.ReadDir(parent)
		if err != nil {
			if len(ents) != 0 {
				t.Fatalf("failed Unpack (%v) left %v behind", err, ents)
			}
			return
		}
		if len(ents) != 1 || ents[0].Name() != "out" {
			t.Fatalf("Unpack left %v beside out", ents)
		}
		realDst, _ := filepath.EvalSymlinks(dst)
		filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			if d.Type()&fs.ModeSymlink == 0 {
				return nil
			}
			r, err := filepath.EvalSymlinks(p)
			if err != nil {
				return nil // dangling, or a loop: it leads nowhere
			}
			if r != realDst && !strings.HasPrefix(r, realDst+string(filepath.Separator)) {
				t.Fatalf("link %s leads out to %s", p, r)
			}
			return nil
		})
	})
}
