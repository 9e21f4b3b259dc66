package wasm

import (
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
)

// Why small files are held in memory: a file server module opens, reads
// and closes its file on every request, each a system call or more (openat2,
// fcntl, fstat, read, close), and a fresh instance per request means no
// descriptor survives from one request to the next. The artifact's files
// never change once unpacked, so the first open of a small file reads it
// whole, and later opens are answered from those bytes: what the module
// sees (contents, size, mode, times, inode) is what the first open saw, the
// mount is as read-only and confined as before (the first read goes
// through openBeneath), and only the system calls are gone. What all held
// files of a Runtime take is bounded by a fileBudget; past it, or for a
// larger file, every open goes to the disk as before.

const (
	// maxHeldFile is the largest file held in memory.
	maxHeldFile = 64 << 10
	// heldFilesBudget is the most all of a Runtime's held files take.
	heldFilesBudget = 32 << 20
)

// fileBudget counts the bytes held files take, across a Runtime.
type fileBudget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes, or reports that they do not fit.
func (b *fileBudget) take(n int64) bool {
	if b == nil {
		return false
	}
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

// heldFile is one mounted file's contents once read, or nothing when it is
// not held (too large, over budget, or its read failed).
type heldFile struct {
	once sync.Once
	data []byte
	info fs.FileInfo // nil: not held
}

// open returns the file held in memory, reading it the first time, or nil
// when it is not held and must be opened on disk.
func (h *heldFile) open(f *filesFS, p string) fs.File {
	h.once.Do(func() { h.load(f, p) })
	if h.info == nil {
		return nil
	}
	return &memFile{data: h.data, info: h.info}
}

func (h *heldFile) load(f *filesFS, p string) {
	file, err := openBeneath(f.root, f.dirfd, p)
	if err != nil {
		return // each open fails on disk, with its own error
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil || !info.Mode().IsRegular() || info.Size() > maxHeldFile {
		return
	}
	size := info.Size()
	if !f.budget.take(size) {
		return
	}
	data := make([]byte, size)
	if n, err := io.ReadFull(file, data); err != nil || n != len(data) {
		f.budget.used.Add(-size)
		return
	}
	h.data, h.info = data, info
}

// release gives a held file's bytes back to budget. Called once no open can
// follow (the deployment has drained).
func (h *heldFile) release(b *fileBudget) {
	h.once.Do(func() {}) // a file never opened stays unheld
	if h.info != nil && b != nil {
		b.used.Add(-int64(len(h.data)))
		h.data, h.info = nil, nil
	}
}

// memFile is an open held file: a reader over its bytes, with no Write
// method, like readOnlyFile.
type memFile struct {
	data []byte
	off  int64
	info fs.FileInfo
}

func (m *memFile) Stat() (fs.FileInfo, error) { return m.info, nil }
func (m *memFile) Close() error               { return nil }

func (m *memFile) Read(p []byte) (int, error) {
	if m.off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[m.off:])
	m.off += int64(n)
	return n, nil
}

// ReadAt implements io.ReaderAt (WASI fd_pread).
func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &fs.PathError{Op: "readat", Path: m.info.Name(), Err: fs.ErrInvalid}
	}
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Seek implements io.Seeker (WASI fd_seek, fd_tell).
func (m *memFile) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += m.off
	case io.SeekEnd:
		off += int64(len(m.data))
	default:
		return 0, &fs.PathError{Op: "seek", Path: m.info.Name(), Err: fs.ErrInvalid}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "seek", Path: m.info.Name(), Err: fs.ErrInvalid}
	}
	m.off = off
	return off, nil
}
