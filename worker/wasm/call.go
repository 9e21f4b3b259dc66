package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
)

// Why a call streams: a module's body and answer may each be tens of MiB,
// and a worker runs many calls at once, so holding either whole in memory
// lets a few large requests take the worker down. The body goes to stdin as
// the module reads it; stdout is held only until the CGI head and at most
// outBuffer bytes of it are in (so a small answer still goes out in one
// piece, with a Content-Length), and after that it goes to the client as the
// module writes it. What a call holds is thus bounded by a constant, which
// is what lets the worker's admission reckon a call's memory ahead
// (Instance.CallMemory).
const (
	// outBuffer is what a call buffers of stdout before it starts sending:
	// the whole CGI head must fit in it, and an answer that fits whole is
	// sent with a Content-Length.
	outBuffer = 64 << 10
	// smallBody is the most of a body of unknown length (chunked) kept in
	// memory; a longer one is spooled to a temporary file, since CGI tells
	// the module CONTENT_LENGTH before it reads.
	smallBody = 64 << 10
	// keepBuffer is the largest buffer a pooled call keeps for the next
	// request.
	keepBuffer = 1 << 20
)

var errBodyTooLarge = errors.New("request body too large")

// Why a module's answer was refused; the module sees its write fail.
var (
	errResponseTooLarge = errors.New("response too large")
	errHeadTooLarge     = fmt.Errorf("CGI head larger than %d KiB, or never ended by a blank line", outBuffer>>10)
)

// call holds one request's state. Calls are pooled so that a request
// allocates no buffers in the steady state.
type call struct {
	length int64 // CONTENT_LENGTH
	small  []byte
	spool  *os.File
	stdin  stdin
	stdout cgiWriter
	stderr lineWriter
	args   environ // NUL-terminated arguments
	env    environ
	wasi   wasiState

	// cfg is cfgOf's base config with this call's stdin, stdout and stderr
	// bound, so that a request of the same deployment as this call's last
	// one clones the config once (WithArgs) rather than four times: each
	// With of wazero's ModuleConfig copies the whole config.
	cfg   wazero.ModuleConfig
	cfgOf *instance
}

// pools holds a Runtime's reusable per-request state.
type pools struct {
	calls sync.Pool
}

func (p *pools) get() *call {
	c, _ := p.calls.Get().(*call)
	if c == nil {
		c = new(call)
		c.wasi.env, c.wasi.args = &c.env, &c.args
	}
	return c
}

func (p *pools) put(c *call) {
	if c.spool != nil {
		_ = c.spool.Close()
		c.spool = nil
	}
	c.length = 0
	c.small = c.small[:0]
	c.stdin = stdin{}
	c.stdout.reset()
	if cap(c.stderr.buf) > keepBuffer {
		c.stderr.buf = nil
	}
	c.stderr.sink = nil
	if cap(c.args.buf) > keepBuffer {
		c.args = environ{}
	}
	c.args.reset()
	if cap(c.env.buf) > keepBuffer {
		c.env = environ{}
	}
	c.env.reset()
	c.wasi.reset()
	if c.cfgOf != nil && c.cfgOf.closed.Load() {
		c.cfg, c.cfgOf = nil, nil // keep no retired deployment alive
	}
	p.calls.Put(c)
}

// stdin is a module's standard input: the request body, read as the module
// reads. Its own type also keeps wazero from treating a spool file as a
// host file descriptor.
type stdin struct {
	r   io.Reader
	err error // the first read error but EOF
}

func (s *stdin) Read(p []byte) (int, error) {
	if s.r == nil {
		return 0, io.EOF
	}
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// openBody points stdin at r's body and sets c.length, reading nothing of
// a body whose length is known. A body of unknown length (chunked) is read
// here, into memory when small, else into a spool file in spoolDir. Bodies
// over max are refused with errBodyTooLarge.
func (c *call) openBody(r *http.Request, max int64, spoolDir string) error {
	c.stdin.r, c.length = nil, 0
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil
	}
	if r.ContentLength > 0 {
		if r.ContentLength > max {
			return errBodyTooLarge
		}
		// net/http's body ends after exactly ContentLength bytes and fails
		// if the client sends fewer.
		c.stdin.r, c.length = r.Body, r.ContentLength
		return nil
	}
	if cap(c.small) < smallBody {
		c.small = make([]byte, 0, smallBody)
	}
	n, err := io.ReadFull(r.Body, c.small[:smallBody])
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		c.small = c.small[:n]
		if int64(n) > max {
			return errBodyTooLarge
		}
		c.stdin.r, c.length = bytes.NewReader(c.small), int64(n)
		return nil
	case err != nil:
		return err
	}
	c.small = c.small[:n]
	f, err := os.CreateTemp(spoolDir, "velo-body-")
	if err != nil {
		return fmt.Errorf("spool body: %w", err)
	}
	c.spool = f
	_ = os.Remove(f.Name()) // the open file lives on, and nothing stays behind
	if _, err := f.Write(c.small); err != nil {
		return fmt.Errorf("spool body: %w", err)
	}
	rest, err := io.Copy(f, io.LimitReader(r.Body, max-int64(n)+1))
	if err != nil {
		return err
	}
	total := int64(n) + rest
	if total > max {
		return errBodyTooLarge
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("spool body: %w", err)
	}
	c.stdin.r, c.length = f, total
	return nil
}

// cgiWriter is a module's stdout: it collects the CGI head and the start of
// the body, and once outBuffer is full sends the head and then everything
// the module writes on to the client. Not safe for concurrent use, which a
// module's stdout never needs.
type cgiWriter struct {
	w        http.ResponseWriter
	max      int64     // most bytes the module may write
	deadline time.Time // sending to the client must be done by then
	stop     context.CancelFunc

	buf      []byte   // what is held until sent: the head, then the body's start
	scanned  int      // buf[:scanned] is whole header lines, none blank
	body     int      // where the body starts in buf; 0 until the head's end is seen
	total    int64    // bytes the module wrote
	sent     bool     // the head went out; writes go to the client
	noBody   bool     // the status has no body (204, 304): writes are dropped
	deadSet  bool     // a write deadline was set on the connection
	err      error    // why the answer failed; set once
	modFault bool     // err is the module's doing, not the client's
	skipped  []string // header lines parseCGI skipped, for the logs (a few)
}

// start readies w for a request.
func (o *cgiWriter) start(w http.ResponseWriter, max int64, deadline time.Time, stop context.CancelFunc) {
	o.w, o.max, o.deadline, o.stop = w, max, deadline, stop
}

func (o *cgiWriter) reset() {
	if o.deadSet {
		_ = http.NewResponseController(o.w).SetWriteDeadline(time.Time{})
	}
	buf := o.buf[:0]
	if cap(buf) > keepBuffer {
		buf = nil
	}
	*o = cgiWriter{buf: buf}
}

// Write implements io.Writer. A failed write fails the call: the module is
// stopped and sees EIO.
func (o *cgiWriter) Write(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	if o.total+int64(len(p)) > o.max {
		return 0, o.fail(fmt.Errorf("response larger than %d bytes: %w", o.max, errResponseTooLarge), true)
	}
	o.total += int64(len(p))
	if o.sent {
		return o.send(p)
	}
	if len(o.buf)+len(p) <= outBuffer {
		o.buf = append(o.buf, p...)
		if o.body == 0 {
			o.scan()
		}
		return len(p), nil
	}
	// Past the buffer: the head must be complete by now, and it goes out.
	room := outBuffer - len(o.buf)
	o.buf = append(o.buf, p[:room]...)
	if o.body == 0 {
		o.scan()
	}
	if o.body == 0 {
		return 0, o.fail(errHeadTooLarge, true)
	}
	if err := o.sendHead(-1); err != nil {
		return 0, err
	}
	if n, err := o.send(o.buf[o.body:]); err != nil {
		return n, err
	}
	if _, err := o.send(p[room:]); err != nil {
		return room, err
	}
	return len(p), nil
}

// scan looks for the blank line that ends the head in the lines not yet
// scanned.
func (o *cgiWriter) scan() {
	for {
		nl := bytes.IndexByte(o.buf[o.scanned:], '\n')
		if nl < 0 {
			return
		}
		line := o.buf[o.scanned : o.scanned+nl]
		o.scanned += nl + 1
		if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			o.body = o.scanned
			return
		}
	}
}

// sendHead parses the head and sends it, with Content-Length when length
// is not negative. On a bad head nothing is sent.
func (o *cgiWriter) sendHead(length int) error {
	h := o.w.Header()
	status, _, err := parseCGI(o.buf[:o.body], h, o.skip)
	if err != nil {
		return o.fail(fmt.Errorf("invalid CGI response: %w", err), true)
	}
	o.sent = true
	if !bodyAllowed(status) {
		o.noBody = true
	} else if length >= 0 {
		h.Set("Content-Length", strconv.Itoa(length))
	}
	if length < 0 && !o.deadline.IsZero() {
		// From here the module waits on the client: a client slow to read
		// cannot hold the call past its deadline.
		o.deadSet = http.NewResponseController(o.w).SetWriteDeadline(o.deadline) == nil
	}
	o.w.WriteHeader(status)
	return nil
}

// skip remembers a header line parseCGI skipped; Serve logs them.
func (o *cgiWriter) skip(line []byte) {
	if len(o.skipped) < 4 {
		o.skipped = append(o.skipped, string(clip(line)))
	}
}

// send writes p to the client.
func (o *cgiWriter) send(p []byte) (int, error) {
	if o.noBody || len(p) == 0 {
		return len(p), nil
	}
	n, err := o.w.Write(p)
	if err != nil {
		return n, o.fail(fmt.Errorf("sending to the client: %w", err), false)
	}
	return n, nil
}

// fail records why the answer failed and stops the module.
func (o *cgiWriter) fail(err error, moduleFault bool) error {
	if o.err == nil {
		o.err, o.modFault = err, moduleFault
		o.stop()
	}
	return o.err
}

// finish sends a buffered answer whole after the module exited cleanly.
func (o *cgiWriter) finish() error {
	if o.sent {
		return nil
	}
	if o.body == 0 {
		// No blank line: let parseCGI say what is wrong.
		_, _, err := parseCGI(o.buf, http.Header{}, nil)
		if err == nil {
			err = errors.New("header block not ended by a blank line")
		}
		return fmt.Errorf("invalid CGI response: %w", err)
	}
	body := o.buf[o.body:]
	if err := o.sendHead(len(body)); err != nil {
		return o.err
	}
	_, _ = o.send(body)
	return nil
}

// headerEnv names the CGI variable for a request header: HTTP_ and the name
// upper-cased with '-' as '_'. Authorization, Proxy-Authorization and
// Connection are not passed (RFC 3875 §4.1.18: credentials and hop-by-hop
// fields are the server's business).
func (rt *Runtime) headerEnv(key string) (string, bool) {
	if name, ok := rt.headerNames[key]; ok {
		return name, name != ""
	}
	switch http.CanonicalHeaderKey(key) {
	case "Authorization", "Proxy-Authorization", "Connection":
		return "", false
	}
	return headerEnvName(key), true
}

func headerEnvName(key string) string {
	var b strings.Builder
	b.Grow(5 + len(key))
	b.WriteString("HTTP_")
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case c == '-':
			c = '_'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// commonHeaders are request headers whose CGI names are computed once per
// Runtime rather than per request.
func commonHeaders() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Cache-Control",
		"Content-Length", "Content-Type", "Cookie", "Dnt", "If-Modified-Since",
		"If-None-Match", "Origin", "Pragma", "Priority", "Range", "Referer",
		"Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform", "Sec-Fetch-Dest",
		"Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Te",
		"Upgrade-Insecure-Requests", "User-Agent", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id",
	} {
		m[k] = headerEnvName(k)
	}
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Connection"} {
		m[k] = "" // never passed
	}
	return m
}
