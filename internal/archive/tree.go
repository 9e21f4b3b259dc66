package archive

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
)

// Tree is a validated component tree held in memory: what Read or FromDir
// returns. It is immutable and safe for concurrent use. It implements
// fs.FS, fs.ReadFileFS, fs.StatFS, fs.ReadDirFS and fs.ReadLinkFS; like
// os.DirFS, Open and Stat follow symlinks (which never lead out of the tree).
type Tree struct {
	// Comment is the comment of the archive's PAX global header, if any:
	// the commit id in a GitHub tarball. It is not part of WriteTo's output.
	Comment string

	nodes map[string]*node // by path; "." is the root
	size  int64
}

type kind uint8

const (
	kindFile kind = iota
	kindDir
	kindSymlink
)

type node struct {
	kind     kind
	name     string  // base name; "." for the root
	data     []byte  // kindFile
	exec     bool    // kindFile: any execute bit was set
	target   string  // kindSymlink
	explicit bool    // kindDir: had its own entry (else implied by a child)
	children []*node // kindDir: sorted by name once the tree is finished
	parent   *node   // nil for the root
}

func newTree() *Tree {
	return &Tree{nodes: map[string]*node{".": {kind: kindDir, name: ".", explicit: true}}}
}

// add puts n at name, creating missing parent directories. raw is the name
// for error messages.
func (t *Tree) add(raw, name string, n *node) error {
	parent := t.nodes["."]
	for i, c := range name {
		if c != '/' {
			continue
		}
		p := name[:i]
		switch q := t.nodes[p]; {
		case q == nil:
			q = &node{kind: kindDir, name: path.Base(p), parent: parent}
			t.nodes[p] = q
			parent.children = append(parent.children, q)
			parent = q
		case q.kind == kindSymlink:
			return invalid(raw, "path goes through the symlink %q", p)
		case q.kind != kindDir:
			return invalid(raw, "parent %q is not a directory", p)
		default:
			parent = q
		}
	}
	if old := t.nodes[name]; old != nil {
		if old.kind == kindDir && !old.explicit && n.kind == kindDir {
			old.explicit = true
			return nil
		}
		if old.kind == kindDir && !old.explicit {
			return invalid(raw, "is a directory in an earlier entry")
		}
		return invalid(raw, "duplicate entry")
	}
	n.name = path.Base(name)
	n.parent = parent
	t.nodes[name] = n
	parent.children = append(parent.children, n)
	return nil
}

// finish sorts the directories and checks every symlink against the
// complete tree, after which t never changes.
func (t *Tree) finish() error {
	for _, n := range t.nodes {
		if n.kind == kindDir {
			slices.SortFunc(n.children, func(a, b *node) int { return strings.Compare(a.name, b.name) })
		}
	}
	budget := maxCheckSteps
	for _, p := range t.paths() {
		n := t.nodes[p]
		if n.kind != kindSymlink {
			continue
		}
		steps, err := t.walk(n.parent, n.target, true, nil)
		if err != nil {
			return invalid(p, "symlink target %q %v", n.target, err)
		}
		if budget -= steps; budget < 0 {
			return invalid("", "symlinks take too many steps to check")
		}
	}
	return nil
}

// Bounds on symlink resolution: links followed in one walk (SYMLOOP_MAX
// on Linux), path elements visited in one walk, and in checking all the
// links of a tree, so that hostile link chains cost little CPU.
const (
	maxHops       = 40
	maxWalkSteps  = 1 << 14
	maxCheckSteps = 1 << 22
)

var (
	errLeaves  = errors.New("leaves the tree")
	errLoop    = errors.New("is a symlink loop")
	errTooLong = errors.New("takes too many steps to resolve")
)

// walk resolves target from the directory dir the way the kernel would,
// following every symlink in the tree (the last element's only if
// followLast), and reports the number of elements it visited. ".." is
// applied to where the walk actually is, so a chain of links that climbs
// out of the tree is caught. Elements that do not exist (or lie under a
// file) are walked lexically, as if they were directories. If found is
// not nil, it receives the node target names, or nil.
func (t *Tree) walk(dir *node, target string, followLast bool, found **node) (int, error) {
	cur := dir     // the deepest existing directory reached
	var leaf *node // a non-directory just reached, as the last step so far
	virtual := 0   // elements walked below cur that do not exist
	pending := strings.Split(target, "/")
	steps, hops := 0, 0
	for len(pending) > 0 {
		elem := pending[0]
		pending = pending[1:]
		if steps++; steps > maxWalkSteps {
			return steps, errTooLong
		}
		if leaf != nil && elem != "" && elem != "." {
			// Anything after a file: ".." comes back to cur; a name goes
			// below the file, where nothing exists.
			leaf = nil
			if elem == ".." {
				continue
			}
			virtual++
			continue
		}
		switch {
		case elem == "" || elem == ".":
		case elem == "..":
			switch {
			case virtual > 0:
				virtual--
			case cur.parent == nil:
				return steps, errLeaves
			default:
				cur = cur.parent
			}
		case virtual > 0:
			virtual++
		default:
			c := cur.child(elem)
			switch {
			case c == nil:
				virtual++
			case c.kind == kindDir:
				cur = c
			case c.kind == kindSymlink && (followLast || len(pending) > 0):
				if hops++; hops > maxHops {
					return steps, errLoop
				}
				// The link's directory is cur: its target continues from here.
				pending = append(strings.Split(c.target, "/"), pending...)
			default:
				leaf = c
			}
		}
	}
	if found != nil {
		switch {
		case virtual > 0:
			*found = nil
		case leaf != nil:
			*found = leaf
		default:
			*found = cur
		}
	}
	return steps, nil
}

// child returns the entry of directory n called name, or nil.
func (n *node) child(name string) *node {
	i, ok := slices.BinarySearchFunc(n.children, name, func(c *node, name string) int { return strings.Compare(c.name, name) })
	if !ok {
		return nil
	}
	return n.children[i]
}

// paths returns every path but the root's, sorted, so parents come before
// their children.
func (t *Tree) paths() []string {
	ps := make([]string, 0, len(t.nodes)-1)
	for p := range t.nodes {
		if p != "." {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// Files returns the paths of the regular files and symlinks, sorted.
func (t *Tree) Files() []string {
	var fs []string
	for _, p := range t.paths() {
		if t.nodes[p].kind != kindDir {
			fs = append(fs, p)
		}
	}
	return fs
}

// Size returns the total size of the regular files' contents.
func (t *Tree) Size() int64 { return t.size }

// Len returns the number of entries: files, directories and symlinks, not
// counting the root.
func (t *Tree) Len() int { return len(t.nodes) - 1 }

// lookup finds the node name names, following symlinks, the last
// element's only if follow.
func (t *Tree) lookup(op, name string, follow bool) (*node, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	var n *node
	if _, err := t.walk(t.nodes["."], name, follow, &n); err != nil || n == nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	return n, nil
}

// Open opens the named file, following symlinks.
func (t *Tree) Open(name string) (fs.File, error) {
	n, err := t.lookup("open", name, true)
	if err != nil {
		return nil, err
	}
	if n.kind == kindDir {
		return &dirFile{n: n}, nil
	}
	return &openFile{n: n, Reader: bytes.NewReader(n.data)}, nil
}

// ReadFile returns the contents of the named file, following symlinks. The
// caller may modify the returned slice.
func (t *Tree) ReadFile(name string) ([]byte, error) {
	n, err := t.lookup("readfile", name, true)
	if err != nil {
		return nil, err
	}
	if n.kind == kindDir {
		return nil, &fs.PathError{Op: "readfile", Path: name, Err: errors.New("is a directory")}
	}
	return bytes.Clone(n.data), nil
}

// Stat describes the named file, following symlinks.
func (t *Tree) Stat(name string) (fs.FileInfo, error) {
	n, err := t.lookup("stat", name, true)
	if err != nil {
		return nil, err
	}
	return info{n}, nil
}

// Lstat describes the named file without following it if it is a symlink.
func (t *Tree) Lstat(name string) (fs.FileInfo, error) {
	n, err := t.lookup("lstat", name, false)
	if err != nil {
		return nil, err
	}
	return info{n}, nil
}

// ReadLink returns the target of the named symlink.
func (t *Tree) ReadLink(name string) (string, error) {
	n, err := t.lookup("readlink", name, false)
	if err != nil {
		return "", err
	}
	if n.kind != kindSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return n.target, nil
}

// ReadDir lists the named directory, sorted by name.
func (t *Tree) ReadDir(name string) ([]fs.DirEntry, error) {
	n, err := t.lookup("readdir", name, true)
	if err != nil {
		return nil, err
	}
	if n.kind != kindDir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	return dirEntries(n.children), nil
}

func dirEntries(ns []*node) []fs.DirEntry {
	es := make([]fs.DirEntry, len(ns))
	for i, c := range ns {
		es[i] = fs.FileInfoToDirEntry(info{c})
	}
	return es
}

// info is a node's fs.FileInfo.
type info struct{ n *node }

func (i info) Name() string { return i.n.name }

func (i info) Size() int64 {
	switch i.n.kind {
	case kindFile:
		return int64(len(i.n.data))
	case kindSymlink:
		return int64(len(i.n.target))
	}
	return 0
}

func (i info) Mode() fs.FileMode {
	switch i.n.kind {
	case kindDir:
		return fs.ModeDir | 0o755
	case kindSymlink:
		return fs.ModeSymlink | 0o777
	}
	if i.n.exec {
		return 0o755
	}
	return 0o644
}

// ModTime is the Unix epoch for every entry: trees carry no times, so that
// identical contents give identical archives.
func (i info) ModTime() time.Time { return time.Unix(0, 0) }
func (i info) IsDir() bool        { return i.n.kind == kindDir }
func (i info) Sys() any           { return nil }

// openFile is an open regular file.
type openFile struct {
	n *node
	*bytes.Reader
}

func (f *openFile) Stat() (fs.FileInfo, error) { return info{f.n}, nil }
func (f *openFile) Close() error               { return nil }

// dirFile is an open directory.
type dirFile struct {
	n   *node
	off int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return info{d.n}, nil }
func (d *dirFile) Close() error               { return nil }

func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.n.name, Err: errors.New("is a directory")}
}

// ReadDir reads the directory's next n entries, as fs.ReadDirFile says.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.n.children[d.off:]
	if n <= 0 {
		d.off += len(rest)
		return dirEntries(rest), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	d.off += len(rest)
	return dirEntries(rest), nil
}

var (
	_ fs.ReadFileFS  = (*Tree)(nil)
	_ fs.StatFS      = (*Tree)(nil)
	_ fs.ReadDirFS   = (*Tree)(nil)
	_ fs.ReadLinkFS  = (*Tree)(nil)
	_ fs.ReadDirFile = (*dirFile)(nil)
	_ io.ReadSeeker  = (*openFile)(nil)
	_ io.ReaderAt    = (*openFile)(nil)
)

// Sub returns the tree under directory dir, re-rooted there: what a
// component in that directory of a repository is made of. A symlink that
// leads out of dir is an error, as it would be in an archive of dir alone.
func (t *Tree) Sub(dir string) (*Tree, error) {
	dir = path.Clean(dir)
	if n := t.nodes[dir]; n == nil || n.kind != kindDir || dir == "." {
		return nil, invalid(dir, "is not a directory of the tree")
	}
	s := newTree()
	s.Comment = t.Comment
	prefix := dir + "/"
	for _, p := range t.paths() {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok {
			continue
		}
		o := t.nodes[p]
		if err := s.add(p, rest, &node{kind: o.kind, data: o.data, exec: o.exec, target: o.target, explicit: o.explicit}); err != nil {
			return nil, err
		}
		if o.kind == kindFile {
			s.size += int64(len(o.data))
		}
	}
	if err := s.finish(); err != nil {
		return nil, err
	}
	return s, nil
}
