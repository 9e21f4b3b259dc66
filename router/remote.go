package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// Headers of the router → worker hop. The worker's internal endpoint
// (worker.Handler) reads them; they never reach a component.
const (
	// HeaderInvokeDeployment names the deployment the request is for.
	HeaderInvokeDeployment = "X-Velo-Invoke-Deployment"
	// HeaderInvokeMount is the path prefix the component is mounted at.
	HeaderInvokeMount = "X-Velo-Invoke-Mount"
	// HeaderClientAuthorization carries the caller's own Authorization
	// header while Authorization holds the cluster token.
	HeaderClientAuthorization = "X-Velo-Client-Authorization"
	// HeaderRemoteAddr is the client's address as the router determined
	// it (see Config.TrustedProxies), the worker's r.RemoteAddr.
	HeaderRemoteAddr = "X-Velo-Remote-Addr"
	// HeaderNotServed marks a worker's answer "I do not serve this
	// deployment": the request never reached a component and may be sent
	// to another worker.
	HeaderNotServed = "X-Velo-Not-Served"
)

// StatusNotServed is the status a worker answers with when it does not hold
// the deployment asked for (421 Misdirected Request).
const StatusNotServed = http.StatusMisdirectedRequest

// RemoteConfig configures how the router reaches workers over HTTP.
type RemoteConfig struct {
	// Token is the cluster token sent as a bearer token on every call.
	Token string
	// DownFor is how long a worker that refused a connection is skipped
	// before it is tried again (default 1s).
	DownFor time.Duration
	// DialTimeout bounds connecting to a worker (default 500ms).
	DialTimeout time.Duration
	// MaxIdlePerWorker is how many keep-alive connections are kept per
	// worker (default 256).
	MaxIdlePerWorker int
	// IdleTimeout is how long an unused connection is kept (default 30s,
	// well under the worker's own 2 minutes, so the router is the side
	// that closes it).
	IdleTimeout time.Duration
	// ResponseTimeout bounds how long the fast path waits on a worker
	// that stopped sending (default 5 minutes): a frozen worker must not
	// hold client connections forever. Workers enforce each component's
	// own, shorter timeout; streamed answers that keep sending are not
	// cut.
	ResponseTimeout time.Duration
	// MaxBufferedBody is the largest request body held in memory so that
	// the request can be sent to another worker when the first one
	// answers "not served here" (default 64 KiB). Larger bodies are
	// streamed.
	MaxBufferedBody int64
	Logger          *slog.Logger
}

// Remote reaches workers over HTTP/1.1 with pooled keep-alive connections.
// Its Backend method is what Config.Backend wants. It is safe for
// concurrent use.
//
// It speaks HTTP/1.1 itself rather than through http.Transport: the
// request is written and the answer read on the calling goroutine, with
// pooled buffers and the caller's header map reused, which is what it takes
// to forward as fast as nginx (http.Transport's per-connection goroutines
// and request copies cost close to half of that).
type Remote struct {
	cfg      RemoteConfig
	auth     []string
	dialer   net.Dialer
	mu       sync.Mutex
	backends []*Endpoint // for Close
	// now is time.Now; tests replace it.
	now func() time.Time
}

// NewRemote returns a Remote.
func NewRemote(cfg RemoteConfig) *Remote {
	if cfg.DownFor <= 0 {
		cfg.DownFor = time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 500 * time.Millisecond
	}
	if cfg.MaxIdlePerWorker <= 0 {
		cfg.MaxIdlePerWorker = 256
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.MaxBufferedBody <= 0 {
		cfg.MaxBufferedBody = 64 << 10
	}
	if cfg.ResponseTimeout <= 0 {
		cfg.ResponseTimeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Remote{
		cfg:    cfg,
		auth:   []string{"Bearer " + cfg.Token},
		dialer: net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		now:    time.Now,
	}
}

// Backend returns the backend reaching worker w at w.Addr, a base URL like
// http://10.0.0.5:8080. A worker without a usable http address gets a
// backend that never serves, so the router tries the others.
func (rm *Remote) Backend(w store.Worker) Backend {
	u, err := url.Parse(w.Addr)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return refusing{}
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	b := &Endpoint{rm: rm, host: host}
	rm.mu.Lock()
	rm.backends = append(rm.backends, b)
	rm.mu.Unlock()
	return b
}

type refusing struct{}

func (refusing) Serve(http.ResponseWriter, *http.Request, int64, string) bool { return false }
func (refusing) Endpoint() *Endpoint                                          { return nil }

// Endpoint is itself: the event loops speak to it.
func (b *Endpoint) Endpoint() *Endpoint { return b }

// Endpoint is one worker and its idle connections.
type Endpoint struct {
	rm   *Remote
	host string // host:port to dial
	// downUntil is when a worker that refused a connection may be tried
	// again (unix ns); 0 when it is up.
	downUntil atomic.Int64
	// last caches the invoke header values of the last call: most calls
	// repeat them, and caching saves their allocations.
	last atomic.Pointer[invokeHeaders]

	mu   sync.Mutex
	idle []*wconn // most recently used last
}

type invokeHeaders struct {
	d          int64
	m          string
	dep, mount []string
}

func (b *Endpoint) invokeHeaders(d int64, mount string) *invokeHeaders {
	if ih := b.last.Load(); ih != nil && ih.d == d && ih.m == mount {
		return ih
	}
	ih := &invokeHeaders{d: d, m: mount, dep: []string{strconv.FormatInt(d, 10)}, mount: []string{mount}}
	b.last.Store(ih)
	return ih
}

// wconn is a keep-alive connection to a worker.
type wconn struct {
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	ans      answer // the head of the answer being read
	lastUsed time.Time
	// deadlineSet is when the read deadline was last moved; it moves at
	// most once a second (a deadline costs a timer update).
	deadlineSet time.Time
}

// extendDeadline keeps the connection's read deadline ResponseTimeout
// ahead, give or take a second.
func (c *wconn) extendDeadline(now time.Time, d time.Duration) {
	if now.Sub(c.deadlineSet) > time.Second {
		_ = c.c.SetReadDeadline(now.Add(d))
		c.deadlineSet = now
	}
}

const connBuffer = 32 << 10

// get returns an idle connection, or dials one.
func (b *Endpoint) get(ctx context.Context) (c *wconn, reused bool, err error) {
	now := b.rm.now()
	b.mu.Lock()
	for len(b.idle) > 0 {
		c = b.idle[len(b.idle)-1]
		b.idle[len(b.idle)-1] = nil
		b.idle = b.idle[:len(b.idle)-1]
		if now.Sub(c.lastUsed) < b.rm.cfg.IdleTimeout {
			b.mu.Unlock()
			return c, true, nil
		}
		c.c.Close()
	}
	b.mu.Unlock()
	nc, err := b.rm.dialer.DialContext(ctx, "tcp", b.host)
	if err != nil {
		return nil, false, err
	}
	return &wconn{c: nc, br: bufio.NewReaderSize(nc, connBuffer), bw: bufio.NewWriterSize(nc, connBuffer)}, false, nil
}

// put keeps c for the next call.
func (b *Endpoint) put(c *wconn) {
	c.lastUsed = b.rm.now()
	b.mu.Lock()
	if len(b.idle) < b.rm.cfg.MaxIdlePerWorker {
		b.idle = append(b.idle, c)
		c = nil
	}
	b.mu.Unlock()
	if c != nil {
		c.c.Close()
	}
}

// mayTry reports whether the worker is up, or down long enough to be
// tried again: past the down period one request probes the worker, and
// the others keep skipping it until the probe has answered.
func (b *Endpoint) mayTry() bool {
	until := b.downUntil.Load()
	if until == 0 {
		return true
	}
	now := b.rm.now().UnixNano()
	return now >= until && b.downUntil.CompareAndSwap(until, now+int64(b.rm.cfg.DownFor))
}

// markDown keeps the worker out of rotation for DownFor after it refused
// a connection, and drops its idle connections.
func (b *Endpoint) markDown() {
	b.downUntil.Store(b.rm.now().Add(b.rm.cfg.DownFor).UnixNano())
	b.closeIdle()
}

// closeIdle closes every idle connection: after one proved dead, the
// others to the same worker most likely are too.
func (b *Endpoint) closeIdle() {
	b.mu.Lock()
	idle := b.idle
	b.idle = nil
	b.mu.Unlock()
	for _, c := range idle {
		c.c.Close()
	}
}

// hopHeaders are not forwarded (RFC 9110 7.6.1), in canonical form.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// errNotServed is the worker saying it does not hold the deployment.
var errNotServed = errors.New("deployment not served by this worker")

// Serve forwards r to the worker. It returns false, having written nothing
// and with r's body still unread (or kept in memory for the next try),
// when the worker could not be reached or answered that it does not serve
// deployment d.
func (b *Endpoint) Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	if !b.mayTry() {
		return false
	}
	b.prepareHeader(r, d, mount)

	// The body: none, in memory (replayable), or streamed (one try).
	var body []byte
	streamed := false
	switch rb, isReplay := r.Body.(*replayBody); {
	case isReplay:
		body = rb.data
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
	case r.ContentLength > 0 && r.ContentLength <= b.rm.cfg.MaxBufferedBody:
		body = make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			plain(w, http.StatusBadRequest, "reading request body: "+err.Error())
			return true
		}
		r.Body = &replayBody{data: body}
	default:
		streamed = true
	}

	for attempt := 0; ; attempt++ {
		c, reused, err := b.get(r.Context())
		if err != nil {
			if r.Context().Err() != nil {
				w.WriteHeader(499)
				return true
			}
			// Never connected: the request did not reach the worker.
			b.markDown()
			return false
		}
		b.downUntil.Store(0)
		wrote, err := b.roundTrip(w, r, c, body, streamed)
		switch {
		case err == nil:
			return true
		case errors.Is(err, errNotServed):
			return false
		case wrote:
			// The answer was under way and cannot be completed: cut
			// the client's connection so it sees the failure rather
			// than a short answer (after what it was sent so far).
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			panic(http.ErrAbortHandler)
		case !streamed && (replayable(r.Method) || (reused && stale(err))):
			// No answer, and sending again is safe: the method is
			// idempotent, or the request could not even be written
			// to a kept-alive connection the worker had closed. Try
			// once more on a fresh connection (which fails to dial
			// if the worker is gone), then let the router try
			// another worker.
			b.closeIdle()
			if attempt == 0 {
				continue
			}
			return false
		case r.Context().Err() != nil:
			w.WriteHeader(499)
		case errors.As(err, new(bodyError)):
			plain(w, http.StatusBadRequest, "bad request: "+err.Error())
		default:
			// The error names internal addresses: logged, not shown.
			b.rm.cfg.Logger.Warn("worker failed a call", "worker", b.host, "err", err)
			plain(w, http.StatusBadGateway, "the worker failed to answer")
		}
		return true
	}
}

// prepareHeader turns r's header into the one sent to the worker, in
// place: hop-by-hop fields out, the cluster token and invoke headers in.
// Doing it again for a retry on another worker gives the same result.
func (b *Endpoint) prepareHeader(r *http.Request, d int64, mount string) {
	h := r.Header
	if conn, ok := h["Connection"]; ok {
		for _, f := range conn {
			for name := range strings.SplitSeq(f, ",") {
				if name = strings.TrimSpace(name); name != "" {
					delete(h, http.CanonicalHeaderKey(name))
				}
			}
		}
	}
	for _, k := range hopHeaders {
		if _, ok := h[k]; ok {
			delete(h, k)
		}
	}
	if a, ok := h["Authorization"]; ok && (len(a) != 1 || a[0] != b.rm.auth[0]) {
		h[HeaderClientAuthorization] = a
	}
	h["Authorization"] = b.rm.auth
	ih := b.invokeHeaders(d, mount)
	h[HeaderInvokeDeployment] = ih.dep
	h[HeaderInvokeMount] = ih.mount
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h[HeaderRemoteAddr] = []string{ip}
	}
}

// replayable reports whether a request may be sent again after a
// connection failed without an answer (RFC 9110 9.2.2 idempotent methods).
func replayable(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// stale reports whether err shows the connection was closed before the
// request could even be written (it never reached the worker).
func stale(err error) bool {
	var we writeError
	return errors.As(err, &we)
}

type writeError struct{ err error }

func (e writeError) Error() string { return "write request: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// roundTrip sends r on c and copies the answer to w. wrote reports whether
// anything was written to w. The connection goes back to the pool when the
// exchange ended cleanly, else it is closed.
func (b *Endpoint) roundTrip(w http.ResponseWriter, r *http.Request, c *wconn, body []byte, streamed bool) (wrote bool, err error) {
	keep := false
	defer func() {
		if keep {
			b.put(c)
		} else {
			c.c.Close()
		}
	}()
	// The caller going away ends the exchange.
	stop := alwaysTrue
	if ctx := r.Context(); ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() { _ = c.c.SetDeadline(time.Unix(1, 0)) })
	}
	defer func() {
		if !stop() {
			keep = false
		}
	}()

	c.extendDeadline(time.Now(), b.rm.cfg.ResponseTimeout)
	if err := writeRequest(c.bw, r, body, streamed); err != nil {
		return false, writeError{err}
	}
	if streamed {
		if err := copyChunked(c.bw, r.Body); err != nil {
			return false, err
		}
	}
	if err := c.bw.Flush(); err != nil {
		return false, writeError{err}
	}

	res, err := c.ans.read(c.br, []byte(r.Method))
	if err != nil {
		return false, err
	}
	if res.status == StatusNotServed && res.notServed && !streamed {
		_, _ = c.br.Discard(c.ans.headLen)
		if err := res.discard(c.br); err == nil {
			keep = res.keepAlive && c.br.Buffered() == 0
		}
		return false, errNotServed
	}
	dst := w.Header()
	for _, l := range c.ans.lines {
		name, value, _ := bytes.Cut(l, []byte(":"))
		k := canonicalKey(name)
		dst[k] = append(dst[k], string(bytes.Trim(value, " \t")))
	}
	_, _ = c.br.Discard(c.ans.headLen)
	w.WriteHeader(res.status)
	if err := res.copyBody(w, c, b.rm.cfg.ResponseTimeout); err != nil {
		return true, err
	}
	// Bytes after a complete answer: nobody asked for them, and the
	// connection is not reused.
	keep = res.keepAlive && c.br.Buffered() == 0
	return true, nil
}

func alwaysTrue() bool { return true }

// writeRequest writes r's request line and header (and an in-memory
// body) to bw.
func writeRequest(bw *bufio.Writer, r *http.Request, body []byte, streamed bool) error {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	uri := r.RequestURI
	if uri == "" || uri[0] != '/' {
		uri = r.URL.RequestURI()
	}
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.Host)
	bw.WriteString("\r\n")
	for k, vs := range r.Header {
		if k == "Host" || k == "Content-Length" {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	switch {
	case streamed:
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	case len(body) > 0:
		var n [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(n[:0], int64(len(body)), 10))
		bw.WriteString("\r\n\r\n")
		bw.Write(body)
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n\r\n")
	default:
		bw.WriteString("\r\n")
	}
	_, err := bw.Write(nil)
	return err
}

// copyChunked streams src to bw in chunked encoding.
func copyChunked(bw *bufio.Writer, src io.Reader) error {
	cw := httputil.NewChunkedWriter(bw)
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	body := &clientBody{r: src}
	if _, err := io.CopyBuffer(cw, body, *bp); err != nil {
		if body.err != nil {
			return bodyError{body.err}
		}
		return fmt.Errorf("send request body: %w", err)
	}
	if err := cw.Close(); err != nil {
		return err
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// clientBody reads a client's request body and keeps its failure (a
// garbled chunked body, a short one), told apart from the worker's.
type clientBody struct {
	r   io.Reader
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// bodyError is a client's request body that could not be read: the
// client's fault, answered 400.
type bodyError struct{ err error }

func (e bodyError) Error() string { return "reading request body: " + e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

// response is the head of a worker's answer.
type response struct {
	status    int
	length    int64 // -1: unknown
	chunked   bool
	noBody    bool
	keepAlive bool
	notServed bool
}

// commonKeys interns the header names workers send most, so reading them
// allocates nothing.
var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Content-Type", "Content-Length", "Date", "Server", "Cache-Control",
		"Connection", "Transfer-Encoding", "Location", "Set-Cookie", "Etag", "Last-Modified",
		"X-Content-Type-Options", "Vary", "Content-Encoding", HeaderNotServed, "Keep-Alive"} {
		m[k] = k
	}
	return m
}()

func canonicalKey(b []byte) string {
	if k, ok := commonKeys[string(b)]; ok {
		return k
	}
	return http.CanonicalHeaderKey(string(b))
}

// discard reads and drops a short body so the connection can be reused.
func (res *response) discard(br *bufio.Reader) error {
	if res.noBody {
		return nil
	}
	if res.chunked {
		_, err := io.Copy(io.Discard, io.LimitReader(&chunkedBody{br: br}, 64<<10))
		return err
	}
	if res.length < 0 || res.length > 64<<10 {
		return errors.New("answer too long to discard")
	}
	_, err := br.Discard(int(res.length))
	return err
}

// copyBody copies the answer's body to w with a pooled buffer, flushing
// after every read when it is streamed (no length known).
func (res *response) copyBody(w http.ResponseWriter, c *wconn, timeout time.Duration) error {
	br := c.br
	if res.noBody {
		return nil
	}
	var src io.Reader = br
	switch {
	case res.chunked:
		src = &chunkedBody{br: br}
	case res.length >= 0:
		if res.length == 0 {
			return nil
		}
		src = io.LimitReader(br, res.length)
	}
	var f http.Flusher
	if res.length < 0 {
		f, _ = w.(http.Flusher)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var copied int64
	for {
		n, err := src.Read(buf)
		c.extendDeadline(time.Now(), timeout)
		if n > 0 {
			copied += int64(n)
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if f != nil {
				f.Flush()
			}
		}
		if err == io.EOF {
			if res.length >= 0 && copied < res.length {
				return io.ErrUnexpectedEOF
			}
			if !res.chunked && res.length < 0 {
				return nil // ended with the connection, which is not kept
			}
			return nil
		}
		if err != nil {
			return err
		}
		if res.length >= 0 && copied == res.length {
			return nil
		}
	}
}

// chunkedBody reads a chunked body and the trailer after it.
type chunkedBody struct {
	br   *bufio.Reader
	cr   io.Reader
	done bool
}

func (c *chunkedBody) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	if c.cr == nil {
		c.cr = httputil.NewChunkedReader(c.br)
	}
	n, err := c.cr.Read(p)
	if err == io.EOF {
		// Trailer fields (dropped) up to the blank line.
		for {
			line, lerr := c.br.ReadSlice('\n')
			if lerr != nil {
				return n, lerr
			}
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				break
			}
		}
		c.done = true
	}
	return n, err
}

// replayBody is a request body already read into memory, kept so that a
// retry on another worker can send it again.
type replayBody struct{ data []byte }

func (*replayBody) Read([]byte) (int, error) { return 0, io.EOF }
func (*replayBody) Close() error             { return nil }

// Close closes the idle connections of every backend made so far.
func (rm *Remote) Close() {
	rm.mu.Lock()
	bs := rm.backends
	rm.backends = nil
	rm.mu.Unlock()
	for _, b := range bs {
		b.closeIdle()
	}
}
