package archive

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Default limits: what an archive may weigh unless the caller says otherwise.
const (
	DefaultCompressed = 64 << 20
	DefaultUnpacked   = 256 << 20
	DefaultFiles      = 10_000
)

// Limits caps what Read accepts. A zero field takes its default.
type Limits struct {
	Compressed int64 // bytes of .tar.gz read from the source
	Unpacked   int64 // total bytes of file contents once unpacked
	Files      int   // entries of every kind, directories and links included
}

// DefaultLimits returns the limits used when a Limits field is zero:
// 64 MiB compressed, 256 MiB unpacked, 10 000 entries.
func DefaultLimits() Limits {
	return Limits{Compressed: DefaultCompressed, Unpacked: DefaultUnpacked, Files: DefaultFiles}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.Compressed <= 0 {
		l.Compressed = d.Compressed
	}
	if l.Unpacked <= 0 {
		l.Unpacked = d.Unpacked
	}
	if l.Files <= 0 {
		l.Files = d.Files
	}
	return l
}

// Errors an archive is refused with. Every refusal is an *Error that wraps
// one of them, so an API can answer 413 for ErrTooLarge and 400 for
// ErrInvalid; any other error is the source's own (a failed read) or the
// filesystem's.
var (
	ErrTooLarge = errors.New("archive too large")
	ErrInvalid  = errors.New("invalid archive")
)

// Error says why an archive was refused, and which entry if one is to blame.
type Error struct {
	Entry string // the entry's name as written in the archive; empty if the archive as a whole
	Msg   string
	Err   error // ErrTooLarge or ErrInvalid
}

// Error returns "archive: entry NAME: MSG", or "archive: MSG".
func (e *Error) Error() string {
	if e.Entry != "" {
		return fmt.Sprintf("archive: entry %q: %s", e.Entry, e.Msg)
	}
	return "archive: " + e.Msg
}

// Unwrap returns ErrTooLarge or ErrInvalid.
func (e *Error) Unwrap() error { return e.Err }

func invalid(entry, format string, args ...any) *Error {
	return &Error{Entry: entry, Msg: fmt.Sprintf(format, args...), Err: ErrInvalid}
}

func tooLarge(format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...), Err: ErrTooLarge}
}

// Caps on names, well within what every filesystem takes.
const (
	maxNameLen = 4096
	maxElemLen = 255
)

// maxTrailing is how much decompressed data may follow the end of the tar
// stream (tar writers pad to a record size; GNU tar's is 10 KiB).
const maxTrailing = 1 << 20

// metaAllowance is the decompressed tar metadata (headers, PAX records, long
// names) allowed per entry on top of the file contents, so that the
// decompressed stream as a whole has a cap too.
const metaAllowance = 8 << 10

// capReader reads at most max bytes from r and remembers whether the source
// tried to give more, and any error of the source itself.
type capReader struct {
	r    io.Reader
	n    int64
	max  int64
	over bool
	err  error
}

var errOverCap = errors.New("over the cap")

func (c *capReader) Read(p []byte) (int, error) {
	if c.over {
		return 0, errOverCap
	}
	if rem := c.max + 1 - c.n; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		c.over = true
		return n - int(c.n-c.max), errOverCap
	}
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// reader holds the state of one Read.
type reader struct {
	lim        Limits
	src        *capReader // compressed bytes from the caller
	body       *capReader // decompressed tar stream
	stripTop   bool
	top        string // the top-level directory when stripTop
	firstEntry string // the entry that set top, for error messages
}

// fail turns a read error into the error Read returns: the caps first (a
// cap cut the stream short, whatever the decoder made of it), then the
// source's own error, then corruption.
func (rd *reader) fail(err error) error {
	switch {
	case rd.src.over:
		return tooLarge("compressed size exceeds %s", formatSize(rd.lim.Compressed))
	case rd.body.over:
		return tooLarge("unpacked size exceeds %s", formatSize(rd.lim.Unpacked))
	case rd.src.err != nil:
		return fmt.Errorf("archive: read: %w", rd.src.err)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return invalid("", "truncated")
	}
	return invalid("", "corrupt: %v", err)
}

// Read reads a gzip'd tar archive fully into memory and validates all of it.
// It enforces lim while reading: the compressed bytes read from r, each
// entry's declared size against what is left of the unpacked cap (before
// reading its contents), and the number of entries. It refuses absolute
// names, ".." components, NUL bytes and backslashes in names, hard links,
// devices, fifos, duplicate paths, paths through a symlink, and symlinks that
// do not resolve inside the tree. A PAX global header (GitHub puts the commit
// id in one) is skipped and its comment kept in Tree.Comment.
//
// With stripTop, every entry must lie under one top-level directory (GitHub's
// "owner-repo-sha/"), which is removed from every path.
func Read(r io.Reader, lim Limits, stripTop bool) (*Tree, error) {
	lim = lim.withDefaults()
	rd := &reader{lim: lim, stripTop: stripTop}
	rd.src = &capReader{r: r, max: lim.Compressed}
	zr, err := gzip.NewReader(rd.src)
	if err != nil {
		if rd.src.over || rd.src.err != nil {
			rd.body = &capReader{}
			return nil, rd.fail(err)
		}
		return nil, invalid("", "not gzip: %v", err)
	}
	defer zr.Close()
	streamCap := lim.Unpacked + int64(lim.Files)*metaAllowance + maxTrailing
	rd.body = &capReader{r: zr, max: streamCap}

	t := newTree()
	tr := tar.NewReader(rd.body)
	entries := 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return nil, rd.fail(err)
		}
		entries++
		if entries > lim.Files {
			return nil, tooLarge("more than %d entries", lim.Files)
		}
		if err := rd.entry(t, tr, hdr); err != nil {
			return nil, err
		}
	}
	// Read what follows the tar stream up to the gzip trailer, so its
	// checksum is verified, but only as much as tar padding can explain.
	n, err := io.Copy(io.Discard, io.LimitReader(rd.body, maxTrailing+1))
	if err != nil {
		return nil, rd.fail(err)
	}
	if n > maxTrailing {
		return nil, invalid("", "more than %s of data after the end of the tar stream", formatSize(maxTrailing))
	}
	if err := t.finish(); err != nil {
		return nil, err
	}
	return t, nil
}

// entry validates one tar header and adds what it describes to t.
func (rd *reader) entry(t *Tree, tr *tar.Reader, hdr *tar.Header) error {
	raw := hdr.Name
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		if c, ok := hdr.PAXRecords["comment"]; ok {
			t.Comment = c
		}
		return nil
	}
	name, err := cleanName(raw)
	if err != nil {
		return err
	}
	if rd.stripTop {
		var skip bool
		if name, skip, err = rd.strip(raw, name, hdr.Typeflag == tar.TypeDir); err != nil || skip {
			return err
		}
	}
	if name == "" {
		if hdr.Typeflag == tar.TypeDir {
			return nil // the root itself, as "./"
		}
		return invalid(raw, "not a directory but names the root")
	}

	switch hdr.Typeflag {
	case tar.TypeReg:
		if hdr.Size < 0 {
			return invalid(raw, "negative size")
		}
		if hdr.Size > rd.lim.Unpacked-t.size {
			return tooLarge("unpacked size exceeds %s", formatSize(rd.lim.Unpacked))
		}
		// Grow the buffer as data arrives rather than trusting the
		// declared size for one allocation.
		buf := make([]byte, 0, min(hdr.Size, 1<<20))
		for int64(len(buf)) < hdr.Size {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			end := min(int64(cap(buf)), hdr.Size)
			n, err := tr.Read(buf[len(buf):end])
			buf = buf[:len(buf)+n]
			if err != nil {
				if err == io.EOF && int64(len(buf)) == hdr.Size {
					break
				}
				return rd.fail(err)
			}
		}
		t.size += hdr.Size
		return t.add(raw, name, &node{kind: kindFile, data: buf, exec: hdr.Mode&0o111 != 0})
	case tar.TypeDir:
		return t.add(raw, name, &node{kind: kindDir, explicit: true})
	case tar.TypeSymlink:
		if err := checkTarget(raw, hdr.Linkname); err != nil {
			return err
		}
		return t.add(raw, name, &node{kind: kindSymlink, target: hdr.Linkname})
	case tar.TypeLink:
		return invalid(raw, "hard links are not allowed (link to %q)", hdr.Linkname)
	case tar.TypeChar:
		return invalid(raw, "character devices are not allowed")
	case tar.TypeBlock:
		return invalid(raw, "block devices are not allowed")
	case tar.TypeFifo:
		return invalid(raw, "fifos are not allowed")
	case tar.TypeGNUSparse:
		return invalid(raw, "sparse files are not supported")
	}
	return invalid(raw, "unsupported entry type %q", hdr.Typeflag)
}

// strip removes the shared top-level directory from name. skip reports an
// entry that is that directory itself.
func (rd *reader) strip(raw, name string, isDir bool) (rest string, skip bool, err error) {
	if name == "" {
		return "", true, nil // "./": the root of the root
	}
	top, rest, nested := strings.Cut(name, "/")
	if !nested && !isDir {
		return "", false, invalid(raw, "not under a top-level directory")
	}
	switch {
	case rd.top == "":
		rd.top, rd.firstEntry = top, raw
	case top != rd.top:
		return "", false, invalid(raw, "not under the top-level directory %q of entry %q; expected a single top-level directory", rd.top+"/", rd.firstEntry)
	}
	return rest, !nested, nil
}

// cleanName validates a tar entry's name and returns it as an fs.FS path,
// "" for the root.
func cleanName(raw string) (string, error) {
	switch {
	case raw == "":
		return "", invalid(raw, "empty name")
	case len(raw) > maxNameLen:
		return "", invalid(raw[:64]+"…", "name longer than %d bytes", maxNameLen)
	case strings.IndexByte(raw, 0) >= 0:
		return "", invalid(raw, "name contains a NUL byte")
	case strings.IndexByte(raw, '\\') >= 0:
		return "", invalid(raw, "name contains a backslash")
	case raw[0] == '/':
		return "", invalid(raw, "absolute path")
	}
	var elems []string
	depth, dotdot := 0, false
	for elem := range strings.SplitSeq(raw, "/") {
		switch elem {
		case "", ".":
			continue
		case "..":
			dotdot = true
			if depth--; depth < 0 {
				return "", invalid(raw, "path leaves the tree")
			}
			continue
		}
		if len(elem) > maxElemLen {
			return "", invalid(raw, "path element longer than %d bytes", maxElemLen)
		}
		depth++
		elems = append(elems, elem)
	}
	if dotdot {
		return "", invalid(raw, `path contains ".."`)
	}
	return strings.Join(elems, "/"), nil
}

// checkTarget validates the syntax of a symlink's target; where it resolves
// to is checked once the whole tree is known.
func checkTarget(raw, target string) error {
	switch {
	case target == "":
		return invalid(raw, "symlink with an empty target")
	case len(target) > maxNameLen:
		return invalid(raw, "symlink target longer than %d bytes", maxNameLen)
	case strings.IndexByte(target, 0) >= 0:
		return invalid(raw, "symlink target contains a NUL byte")
	case strings.IndexByte(target, '\\') >= 0:
		return invalid(raw, "symlink target %q contains a backslash", target)
	case target[0] == '/':
		return invalid(raw, "symlink target %q is absolute", target)
	}
	return nil
}

// formatSize writes n bytes as "256 MiB" when a binary unit divides it.
func formatSize(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
