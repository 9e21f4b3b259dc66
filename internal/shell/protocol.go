package shell

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Protocol is the Upgrade token of a shell connection.
const Protocol = "velo-shell/1"

// Frame kinds.
const (
	// KindStdin carries bytes for the command's stdin (client → server).
	KindStdin byte = 'i'
	// KindEOF ends the command's stdin; no payload (client → server).
	KindEOF byte = 'e'
	// KindResize sets the terminal's size: columns then rows, two
	// big-endian uint16 (client → server).
	KindResize byte = 'r'
	// KindStdout carries the command's output, or with a TTY the
	// terminal's (server → client).
	KindStdout byte = 'o'
	// KindStderr carries the command's standard error, without a TTY
	// (server → client).
	KindStderr byte = 'E'
	// KindExit is the command's exit status, a big-endian int32; the
	// server's last frame (server → client).
	KindExit byte = 'x'
	// KindError says in UTF-8 why the command could not run or was cut
	// off; the server's last frame (server → client).
	KindError byte = '!'
)

// MaxPayload bounds a frame's payload.
const MaxPayload = 32 << 10

const headerSize = 5

// ErrFrame is a malformed frame: an unknown kind, a payload over
// MaxPayload or the wrong size for its kind.
var ErrFrame = errors.New("malformed shell frame")

// WriteFrame writes one frame to w, in one Write call. A payload over
// MaxPayload is an error; callers split their data.
func WriteFrame(w io.Writer, kind byte, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("%w: %d-byte payload, at most %d", ErrFrame, len(payload), MaxPayload)
	}
	buf := make([]byte, headerSize+len(payload))
	buf[0] = kind
	binary.BigEndian.PutUint32(buf[1:headerSize], uint32(len(payload)))
	copy(buf[headerSize:], payload)
	_, err := w.Write(buf)
	return err
}

// Reader reads frames from a connection.
type Reader struct {
	r   io.Reader
	buf []byte
}

// NewReader reads frames from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, buf: make([]byte, headerSize+MaxPayload)}
}

// Next reads the next frame. Its payload is valid until the next call. A
// connection that ends between frames is io.EOF; one that ends inside a
// frame is io.ErrUnexpectedEOF. Frames of unknown kinds, over MaxPayload,
// or of the wrong size for their kind are ErrFrame.
func (fr *Reader) Next() (kind byte, payload []byte, err error) {
	if _, err := io.ReadFull(fr.r, fr.buf[:headerSize]); err != nil {
		return 0, nil, err
	}
	kind = fr.buf[0]
	n := binary.BigEndian.Uint32(fr.buf[1:headerSize])
	if n > MaxPayload {
		return 0, nil, fmt.Errorf("%w: %d-byte payload, at most %d", ErrFrame, n, MaxPayload)
	}
	switch kind {
	case KindStdin, KindStdout, KindStderr, KindError:
	case KindEOF:
		if n != 0 {
			return 0, nil, fmt.Errorf("%w: EOF with a payload", ErrFrame)
		}
	case KindResize, KindExit:
		if n != 4 {
			return 0, nil, fmt.Errorf("%w: %q frame of %d bytes, want 4", ErrFrame, kind, n)
		}
	default:
		return 0, nil, fmt.Errorf("%w: unknown kind %q", ErrFrame, kind)
	}
	payload = fr.buf[headerSize : headerSize+int(n)]
	if _, err := io.ReadFull(fr.r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return kind, payload, nil
}

// Size is a terminal's size in characters.
type Size struct {
	Cols, Rows uint16
}

func (s Size) payload() []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:2], s.Cols)
	binary.BigEndian.PutUint16(b[2:4], s.Rows)
	return b[:]
}

func sizeOf(p []byte) Size {
	return Size{Cols: binary.BigEndian.Uint16(p[0:2]), Rows: binary.BigEndian.Uint16(p[2:4])}
}

// Limits of a Request.
const (
	MaxArgs   = 256
	MaxArgLen = 4096
	MaxCmdLen = 64 << 10 // all arguments together
	MaxSide   = 1000     // columns or rows
)

// DefaultCommand is what runs when a Request names none.
var DefaultCommand = []string{"/bin/sh"}

// Request is what to run: the parameters of the upgrade request.
type Request struct {
	// Cmd is the command and its arguments (default DefaultCommand).
	Cmd []string
	// TTY gives the command a terminal of Size, with TERM set to Term.
	TTY  bool
	Size Size
	Term string
}

// Query encodes r as the upgrade request's query.
func (r Request) Query() url.Values {
	q := url.Values{}
	for _, a := range r.Cmd {
		q.Add("cmd", a)
	}
	if r.TTY {
		q.Set("tty", "1")
		if r.Size.Cols > 0 && r.Size.Rows > 0 {
			q.Set("cols", strconv.Itoa(int(r.Size.Cols)))
			q.Set("rows", strconv.Itoa(int(r.Size.Rows)))
		}
		if r.Term != "" {
			q.Set("term", r.Term)
		}
	}
	return q
}

// ParseRequest reads a Request from an upgrade request's query, checking
// every parameter: at most MaxArgs arguments of MaxArgLen bytes (MaxCmdLen
// in all), no NUL bytes, valid UTF-8; a size of 1 to MaxSide each way; a
// TERM of letters, digits and ".+-_". Unknown parameters are refused.
func ParseRequest(q url.Values) (Request, error) {
	var r Request
	for k := range q {
		switch k {
		case "cmd", "tty", "cols", "rows", "term":
		default:
			return r, fmt.Errorf("unknown parameter %q", k)
		}
	}
	cmd := q["cmd"]
	if len(cmd) > MaxArgs {
		return r, fmt.Errorf("cmd: %d arguments, at most %d", len(cmd), MaxArgs)
	}
	total := 0
	for i, a := range cmd {
		total += len(a)
		switch {
		case i == 0 && a == "":
			return r, errors.New("cmd: the command is empty")
		case len(a) > MaxArgLen:
			return r, fmt.Errorf("cmd: argument %d is %d bytes, at most %d", i, len(a), MaxArgLen)
		case strings.ContainsRune(a, 0):
			return r, fmt.Errorf("cmd: argument %d holds a NUL byte", i)
		case !utf8Valid(a):
			return r, fmt.Errorf("cmd: argument %d is not UTF-8", i)
		}
	}
	if total > MaxCmdLen {
		return r, fmt.Errorf("cmd: %d bytes in all, at most %d", total, MaxCmdLen)
	}
	r.Cmd = cmd
	for _, k := range []string{"tty", "cols", "rows", "term"} {
		if len(q[k]) > 1 {
			return r, fmt.Errorf("%s: given %d times", k, len(q[k]))
		}
	}
	switch q.Get("tty") {
	case "", "0", "false":
	case "1", "true":
		r.TTY = true
	default:
		return r, fmt.Errorf("tty: %q, want 1 or 0", q.Get("tty"))
	}
	cols, rows := q.Get("cols"), q.Get("rows")
	if (cols == "") != (rows == "") {
		return r, errors.New("cols and rows: give both or neither")
	}
	if cols != "" {
		if !r.TTY {
			return r, errors.New("cols and rows: only with tty=1")
		}
		c, err1 := strconv.Atoi(cols)
		h, err2 := strconv.Atoi(rows)
		if err1 != nil || err2 != nil || c < 1 || h < 1 || c > MaxSide || h > MaxSide {
			return r, fmt.Errorf("cols and rows: %q × %q, want numbers from 1 to %d", cols, rows, MaxSide)
		}
		r.Size = Size{Cols: uint16(c), Rows: uint16(h)}
	}
	if t := q.Get("term"); t != "" {
		if !r.TTY {
			return r, errors.New("term: only with tty=1")
		}
		if len(t) > 64 || strings.IndexFunc(t, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".+-_", c))
		}) >= 0 {
			return r, fmt.Errorf("term: %q is not a terminal type", t)
		}
		r.Term = t
	}
	return r, nil
}

// Command is the command to run: Cmd, or DefaultCommand.
func (r Request) Command() []string {
	if len(r.Cmd) == 0 {
		return DefaultCommand
	}
	return r.Cmd
}

// Env is the environment the command gets besides its container's: TERM
// with a TTY.
func (r Request) Env() []string {
	if !r.TTY {
		return nil
	}
	t := r.Term
	if t == "" {
		t = "xterm"
	}
	return []string{"TERM=" + t}
}

// String describes the command for logs: its arguments quoted where
// needed, cut at 200 bytes.
func (r Request) String() string {
	var b strings.Builder
	for i, a := range r.Command() {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`") || !printable(a) {
			b.WriteString(strconv.Quote(a))
		} else {
			b.WriteString(a)
		}
	}
	s := b.String()
	if len(s) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func utf8Valid(s string) bool { return utf8.ValidString(s) }

func printable(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0
}
