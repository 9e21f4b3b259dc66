package wasm

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"

	"github.com/velo-run/velo/internal/manifest"
)

// Why the module's files are a tree of their own rather than a directory
// mount: `files` names some files of the artifact (a glob, a directory
// moved to another guest path), and the module must see exactly those,
// never the rest of the artifact (its velo.toml, its source, the module
// itself) nor anything else of the host. So Prepare resolves the manifest's
// entries once into a fixed map of guest paths, and every open is held
// below the artifact directory by the kernel (openat2 RESOLVE_BENEATH, else
// an os.Root), whatever a symlink says. A small file is read that way once
// and then held in memory (files_held.go). wazero mounts the tree read-only
// (sysfs.ReadFS): a module that opens a file for writing gets EROFS.

// filesFS is a component's mounted files as an fs.FS, rooted at the guest's
// "/". It is immutable after newFilesFS and safe for concurrent use.
type filesFS struct {
	root   *os.Root
	dir    *os.File                 // the artifact directory, for openBeneath
	dirfd  int                      // dir's descriptor, or -1
	files  map[string]string        // fs.FS path ("static/x.css") → path in the artifact
	dirs   map[string][]fs.DirEntry // fs.FS path ("." for "/") → entries, sorted
	held   map[string]*heldFile     // fs.FS path → its contents once read; same keys as files
	budget *fileBudget              // what held files may take, shared by the Runtime's deployments
}

// newFilesFS resolves mounts against the artifact unpacked at dir. Small
// files are held in memory once first opened, within budget (nil: never).
func newFilesFS(dir string, mounts []manifest.FileMount, budget *fileBudget) (*filesFS, error) {
	list, err := manifest.ResolveFiles(os.DirFS(dir), mounts)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	f := &filesFS{root: root, dirfd: -1, files: make(map[string]string, len(list)), dirs: map[string][]fs.DirEntry{".": nil},
		held: make(map[string]*heldFile, len(list)), budget: budget}
	if d, err := os.Open(dir); err == nil {
		f.dir, f.dirfd = d, int(d.Fd())
	}
	for _, mf := range list {
		name := strings.TrimPrefix(mf.Guest, "/")
		f.files[name] = mf.Path
		f.held[name] = new(heldFile)
		// Add the file to its directory, and each directory to its parent
		// the first time it is seen.
		child := fs.DirEntry(fileEntry{fs: f, name: name})
		for parent := path.Dir(name); ; parent = path.Dir(parent) {
			_, seen := f.dirs[parent]
			f.dirs[parent] = append(f.dirs[parent], child)
			if seen || parent == "." {
				break
			}
			child = dirEntry(path.Base(parent))
		}
	}
	for _, entries := range f.dirs {
		slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	}
	return f, nil
}

// fsConfig mounts f read-only at the guest's "/".
func (f *filesFS) fsConfig() wazero.FSConfig {
	ro := readOnlyFS{&sysfs.ReadFS{FS: &sysfs.AdaptFS{FS: f}}}
	return wazero.NewFSConfig().(sysfs.FSConfig).WithSysFSMount(ro, "/")
}

// readOnlyFS answers an open for writing with EROFS, as a read-only mount
// does, where wazero's ReadFS says ENOSYS ("Function not implemented"),
// which sends people looking for a missing feature.
type readOnlyFS struct{ experimentalsys.FS }

// OpenFile implements experimentalsys.FS.
func (r readOnlyFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	const writes = experimentalsys.O_WRONLY | experimentalsys.O_RDWR | experimentalsys.O_CREAT | experimentalsys.O_TRUNC | experimentalsys.O_APPEND
	if flag&writes != 0 {
		if flag&experimentalsys.O_DIRECTORY != 0 {
			return nil, experimentalsys.EISDIR
		}
		return nil, experimentalsys.EROFS
	}
	return r.FS.OpenFile(p, flag, perm)
}

func (f *filesFS) close() error {
	for _, h := range f.held {
		h.release(f.budget)
	}
	if f.dir != nil {
		_ = f.dir.Close()
	}
	return f.root.Close()
}

// Open implements fs.FS.
func (f *filesFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if p, ok := f.files[name]; ok {
		if m := f.held[name].open(f, p); m != nil {
			return m, nil
		}
		file, err := openBeneath(f.root, f.dirfd, p)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: unwrapPathError(err)}
		}
		return readOnlyFile{file}, nil
	}
	if entries, ok := f.dirs[name]; ok {
		return &dirFile{name: path.Base(name), entries: entries}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}

// readOnlyFile is an open file of the artifact with no Write method, so
// wazero cannot write through it even if asked to.
type readOnlyFile struct{ f *os.File }

func (r readOnlyFile) Read(p []byte) (int, error)              { return r.f.Read(p) }
func (r readOnlyFile) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }
func (r readOnlyFile) Seek(off int64, whence int) (int64, error) {
	return r.f.Seek(off, whence)
}
func (r readOnlyFile) Stat() (fs.FileInfo, error) { return r.f.Stat() }
func (r readOnlyFile) Close() error               { return r.f.Close() }

// fileEntry is a mounted file in its directory's listing.
type fileEntry struct {
	fs   *filesFS
	name string // fs.FS path
}

func (e fileEntry) Name() string      { return path.Base(e.name) }
func (e fileEntry) IsDir() bool       { return false }
func (e fileEntry) Type() fs.FileMode { return 0 }
func (e fileEntry) Info() (fs.FileInfo, error) {
	info, err := e.fs.root.Stat(e.fs.files[e.name])
	if err != nil {
		return nil, err
	}
	return namedInfo{info, path.Base(e.name)}, nil
}

// namedInfo is a file's info under the name it is mounted as.
type namedInfo struct {
	fs.FileInfo
	name string
}

func (i namedInfo) Name() string { return i.name }

// dirEntry is a directory of the mounted tree, in its parent's listing.
type dirEntry string

func (d dirEntry) Name() string               { return string(d) }
func (d dirEntry) IsDir() bool                { return true }
func (d dirEntry) Type() fs.FileMode          { return fs.ModeDir }
func (d dirEntry) Info() (fs.FileInfo, error) { return dirInfo(d), nil }

// dirInfo describes a directory of the mounted tree: read and search for
// everyone, nothing else.
type dirInfo string

func (d dirInfo) Name() string       { return string(d) }
func (d dirInfo) Size() int64        { return 0 }
func (d dirInfo) Mode() fs.FileMode  { return fs.ModeDir | 0o555 }
func (d dirInfo) ModTime() time.Time { return time.Unix(0, 0) }
func (d dirInfo) IsDir() bool        { return true }
func (d dirInfo) Sys() any           { return nil }

// dirFile is an open directory of the mounted tree.
type dirFile struct {
	name    string
	entries []fs.DirEntry
	off     int
}

// Stat implements fs.File. Its info holds only a pointer, so that making
// it allocates nothing: wazero stats the preopened root on every call.
func (d *dirFile) Stat() (fs.FileInfo, error) { return dirFileInfo{d}, nil }

// dirFileInfo is an open directory's info: dirInfo's, under its name.
type dirFileInfo struct{ d *dirFile }

func (i dirFileInfo) Name() string       { return i.d.name }
func (i dirFileInfo) Size() int64        { return dirInfo(i.d.name).Size() }
func (i dirFileInfo) Mode() fs.FileMode  { return dirInfo(i.d.name).Mode() }
func (i dirFileInfo) ModTime() time.Time { return dirInfo(i.d.name).ModTime() }
func (i dirFileInfo) IsDir() bool        { return true }
func (i dirFileInfo) Sys() any           { return nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.name, Err: fs.ErrInvalid}
}
func (d *dirFile) Close() error { return nil }

// ReadDir implements fs.ReadDirFile.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if n <= 0 {
		d.off = len(d.entries)
		return slices.Clone(rest), nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	d.off += len(rest)
	return slices.Clone(rest), nil
}
