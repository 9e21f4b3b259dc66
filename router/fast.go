package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// FastServer serves a router's listener itself: component calls to remote
// workers take a lean HTTP/1.1 path — request head parsed in place, header
// lines forwarded as they came, one read and one write per side — and every
// other request, or any request the fast path does not fully understand
// (HTTP/1.0, chunked or large bodies, Expect, upgrades, odd paths or
// header lines, unknown or paused components…), goes with its connection
// to Fallback, a regular http.Server. The fast path only forwards; every
// decision it cannot take exactly as ServeHTTP would is left to ServeHTTP.
//
// It exists for throughput: net/http's server costs about as much per
// request as all of nginx's proxying, and the router is the hot path.
type FastServer struct {
	Router   *Router
	Fallback *http.Server
	// IdleTimeout closes a kept-alive connection without a request for
	// that long (default 2 minutes); HeadTimeout bounds reading a request
	// head once it has begun (default 10s).
	IdleTimeout, HeadTimeout time.Duration
	// Loops is the number of event loops serving connections where the
	// platform has them (Linux; default GOMAXPROCS). Negative serves each
	// connection on a goroutine of its own instead.
	Loops int

	loops    []*loop
	next     int // the loop the next connection goes to
	mu       sync.Mutex
	ln       net.Listener
	conns    map[*fastConn]struct{}
	closing  atomic.Bool
	wg       sync.WaitGroup
	fallback *handoffListener
}

// Serve accepts connections on ln until Shutdown or a listener failure.
func (s *FastServer) Serve(ln net.Listener) error {
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 2 * time.Minute
	}
	if s.HeadTimeout <= 0 {
		s.HeadTimeout = 10 * time.Second
	}
	if s.closing.Load() {
		return http.ErrServerClosed
	}
	s.mu.Lock()
	s.ln = ln
	s.conns = map[*fastConn]struct{}{}
	s.fallback = newHandoffListener(ln.Addr())
	s.mu.Unlock()
	// A request net/http reads after a screen went blind is its
	// connection's last (see screenedConn).
	h := s.Fallback.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	s.Fallback.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sc, _ := r.Context().Value(screenKey{}).(*screenedConn); sc != nil && sc.blind.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
	cc := s.Fallback.ConnContext
	s.Fallback.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if cc != nil {
			ctx = cc(ctx, c)
		}
		return context.WithValue(ctx, screenKey{}, c)
	}
	go func() { _ = s.Fallback.Serve(s.fallback) }()
	s.startLoops()
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		if s.dispatch(c) {
			continue
		}
		go s.newConn(c, s.Router.peerOf(c)).serve(nil)
	}
}

// newConn sets up a connection for the goroutine path; the caller starts
// its serve.
func (s *FastServer) newConn(c net.Conn, p peer) *fastConn {
	fc := &fastConn{s: s, c: c, peer: p}
	fc.br = readerPool.Get().(*bufio.Reader)
	fc.br.Reset(c)
	fc.bw = writerPool.Get().(*bufio.Writer)
	fc.bw.Reset(c)
	s.mu.Lock()
	s.conns[fc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	return fc
}

// Shutdown stops accepting, lets requests under way finish, closes idle
// connections, then shuts the fallback server down.
func (s *FastServer) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for fc := range s.conns {
		fc.wakeIfIdle()
	}
	s.mu.Unlock()
	s.stopLoops(false)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.stopLoops(true)
		s.mu.Lock()
		for fc := range s.conns {
			fc.c.Close()
		}
		s.mu.Unlock()
	}
	return s.Fallback.Shutdown(ctx)
}

// fastConn is one client connection on the fast path.
type fastConn struct {
	s    *FastServer
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	pre  *prefixReader // between br and c when the loop handed it over
	idle atomic.Bool
	peer peer
	req  fastReq // reused for every request
	// headDeadline is set while a request head is read in more than
	// one piece, under the shorter HeadTimeout.
	headDeadline bool
	ans          answer // the worker's answer head
}

func (fc *fastConn) wakeIfIdle() {
	if fc.idle.Load() {
		_ = fc.c.SetReadDeadline(time.Unix(1, 0))
	}
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// serve serves the connection until it closes or is handed to net/http,
// after first when given (false: close).
func (fc *fastConn) serve(first func() bool) {
	s := fc.s
	handedOff := false
	defer func() {
		if p := recover(); p != nil && p != http.ErrAbortHandler {
			s.Router.cfg.Logger.Error("fast path panic", "panic", p)
		}
		s.mu.Lock()
		delete(s.conns, fc)
		s.mu.Unlock()
		if !handedOff {
			fc.c.Close()
		}
		if fc.br != nil {
			fc.br.Reset(nil)
			readerPool.Put(fc.br)
		}
		if fc.bw != nil {
			fc.bw.Reset(nil)
			writerPool.Put(fc.bw)
		}
		s.wg.Done()
	}()
	if first != nil && !first() {
		return
	}
	var deadlineSet time.Time
	for !s.closing.Load() {
		fc.idle.Store(true)
		// The idle deadline moves at most once a second: a deadline
		// costs a timer update, and a request is far shorter.
		if now := time.Now(); now.Sub(deadlineSet) > time.Second {
			_ = fc.c.SetReadDeadline(now.Add(s.IdleTimeout))
			deadlineSet = now
		}
		if _, err := fc.br.Peek(1); err != nil {
			return
		}
		fc.idle.Store(false)
		fc.headDeadline = false
		req, v := fc.parse()
		if fc.headDeadline {
			deadlineSet = time.Time{} // back to the idle deadline
		}
		if v == refuse {
			_ = fc.bw.Flush()
			return
		}
		if v == leaveFast {
			// Not for the fast path: net/http serves this connection
			// from here on, starting with the bytes already read.
			handedOff = true
			buf, _ := fc.br.Peek(fc.br.Buffered())
			s.fallback.push(s.screen(fc.c, bytes.Clone(buf)))
			return
		}
		keep := fc.forward(req) && !s.closing.Load()
		if err := fc.bw.Flush(); err != nil || !keep {
			return
		}
	}
}

// fastReq is a parsed request head, its bytes still in the read buffer.
type fastReq struct {
	head    []byte // the whole head, up to and including the blank line
	method  []byte
	uri     []byte
	host    []byte
	mount   []byte
	rt      *route
	lines   [][]byte // header lines to forward as they are (without CRLF)
	scratch []byte   // header lines rewritten (Cookie without Velo's own)
	auth    []byte   // the caller's Authorization value
	xff     []byte   // the X-Forwarded-For value received
	xfp     []byte   // the X-Forwarded-Proto value received
	fwd     []byte   // the forwarding header lines to send (see peer)
	body    []byte
	length  int64
	close   bool // the client asked to close after this request
	http10  bool
	chunked bool
	special bool // a header the fast path leaves to net/http
	upgrade bool
}

// size is the request's length in the read buffer.
func (r *fastReq) size() int { return len(r.head) + int(max(r.length, 0)) }

const maxFastBody = 64 << 10

// parse reads a request head and decides whether the fast path takes it.
// When it does not, nothing has been consumed from the reader; a request
// refused is answered here, and the connection is to be closed.
func (fc *fastConn) parse() (*fastReq, verdict) {
	br := fc.br
	for {
		buf, _ := br.Peek(br.Buffered())
		v, err := fc.s.parseRequest(&fc.req, buf, br.Size(), &fc.peer)
		switch v {
		case takeFast, leaveFast:
			return &fc.req, v
		case refuse:
			fc.bw.Write(appendRefusal(fc.bw.AvailableBuffer(), err))
			return nil, refuse
		}
		if !fc.headDeadline {
			fc.headDeadline = true
			_ = fc.c.SetReadDeadline(time.Now().Add(fc.s.HeadTimeout))
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, refuse
		}
	}
}

// verdict is what the fast path makes of the bytes of a request so far.
type verdict int

const (
	readMore  verdict = iota // no whole request yet
	leaveFast                // not for the fast path: net/http serves it
	takeFast                 // head and body are in the buffer
	refuse                   // malformed: 400, and the connection closed
)

// parseRequest parses the request at the start of buf, the bytes read so
// far into a buffer of size bytes, into r, whose slices point into buf.
// err says why a request is refused.
func (s *FastServer) parseRequest(r *fastReq, buf []byte, size int, p *peer) (verdict, error) {
	n, err := parseRequestHead(r, buf)
	switch {
	case err != nil:
		return refuse, err
	case n == 0 && len(buf) >= size:
		return leaveFast, nil // long heads: net/http answers them
	case n == 0:
		return readMore, nil
	case r.http10 || r.chunked || r.special || r.length > maxFastBody || r.uri[0] != '/':
		return leaveFast, nil
	}
	path := r.uri
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	// Paths ServeMux would clean or redirect, and escapes: net/http.
	if bytes.Contains(path, []byte("//")) || bytes.Contains(path, []byte("/.")) || bytes.IndexByte(path, '%') >= 0 {
		return leaveFast, nil
	}
	name, mount, ok := s.Router.componentOf(r.host, path)
	if !ok {
		return leaveFast, nil
	}
	rt := s.Router.table.Load().routes[string(name)]
	if rt == nil || !rt.fast {
		return leaveFast, nil // ServeHTTP serves those, or writes their answers
	}
	r.rt, r.mount = rt, mount
	if r.length > 0 && len(buf) < n+int(r.length) {
		if n+int(r.length) > size {
			return leaveFast, nil
		}
		return readMore, nil
	}
	if r.length > 0 {
		r.body = buf[n : n+int(r.length)]
	}
	r.fwd = p.fwd
	if r.fwd == nil {
		r.fwd = s.Router.forwardLines(p.addr, string(r.xff), string(r.xfp))
	}
	return takeFast, nil
}

// appendRefusal appends the answer to a malformed request.
func appendRefusal(dst []byte, err error) []byte {
	msg := "bad request: " + err.Error() + "\n"
	dst = append(dst, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, msg...)
}

// componentOf is component for raw bytes: the component name and mount.
func (r *Router) componentOf(host, path []byte) (name, mount []byte, ok bool) {
	if r.cfg.Domain != "" {
		h := host
		if i := bytes.LastIndexByte(h, ':'); i >= 0 && !bytes.Contains(h[i:], []byte("]")) {
			h = h[:i]
		}
		suffix := "." + r.cfg.Domain
		if len(h) > len(suffix) && bytes.EqualFold(h[len(h)-len(suffix):], []byte(suffix)) {
			sub := h[:len(h)-len(suffix)]
			if bytes.IndexByte(sub, '.') < 0 {
				return sub, nil, true
			}
		}
	}
	rest, found := bytes.CutPrefix(path, []byte(Prefix))
	if !found {
		return nil, nil, false
	}
	name, _, _ = bytes.Cut(rest, []byte("/"))
	if len(name) == 0 {
		return nil, nil, false
	}
	return name, path[:len(Prefix)+len(name)], true
}

// forward sends the request to the route's workers, round-robin with
// failover as ServeHTTP does, writes the answer, counts it, and reports
// whether the connection may serve another request.
func (fc *fastConn) forward(req *fastReq) (keep bool) {
	start := time.Now()
	rt := req.rt
	n := uint64(len(rt.targets))
	first := rt.next.Add(1)
	status := 0
	keep = !req.close && !fc.s.closing.Load()
	for i := uint64(0); i < n && status == 0; i++ {
		t := rt.targets[(first+i)%n]
		status, keep = fc.try(t.ep, req, rt, t.worker[0], keep)
	}
	if _, err := fc.br.Discard(req.size()); err != nil {
		return false
	}
	if status == 0 {
		status = http.StatusServiceUnavailable
		fc.bw.Write(appendNoInstance(fc.bw.AvailableBuffer(), rt))
	}
	fc.s.count(rt, status, start)
	return keep
}

// count records a call's answer in its component's counters.
func (s *FastServer) count(rt *route, status int, start time.Time) {
	if s.Router.cfg.NoHits {
		return
	}
	c := rt.stats
	c.hits.Add(1)
	c.totalHits.Add(1)
	if status >= 500 {
		c.errors.Add(1)
		c.totalErrors.Add(1)
	}
	c.latency.Record(time.Since(start))
}

// appendNoInstance appends the answer when no worker could be reached.
func appendNoInstance(dst []byte, rt *route) []byte {
	msg := "component \"" + rt.name + "\" has no healthy instance\n"
	dst = append(dst, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Velo-Deployment: "...)
	dst = append(dst, rt.depHeader[0]...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, msg...)
}

// appendBadGateway appends the answer when a worker failed the call. It
// does not say how: the error names internal addresses, so it is logged.
func (s *FastServer) appendBadGateway(dst []byte, rt *route, worker string, err error) []byte {
	s.Router.cfg.Logger.Warn("worker failed a call", "component", rt.name, "worker", worker, "err", err)
	msg := "worker " + worker + " failed to answer\n"
	dst = append(dst, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nX-Velo-Deployment: "...)
	dst = append(dst, rt.depHeader[0]...)
	dst = append(dst, "\r\nX-Velo-Worker: "...)
	dst = append(dst, worker...)
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, msg...)
}

// try forwards to one worker. status is 0 when the request never reached
// a worker able to serve it (try the next one); otherwise the answer was
// written (or the client connection must be dropped: keep false).
func (fc *fastConn) try(b *Endpoint, req *fastReq, rt *route, worker string, keepIn bool) (status int, keep bool) {
	if !b.mayTry() {
		return 0, keepIn
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := b.get(context.Background())
		if err != nil {
			b.markDown()
			return 0, keepIn
		}
		b.downUntil.Store(0)
		c.extendDeadline(time.Now(), b.rm.cfg.ResponseTimeout)
		c.bw.Write(appendUpstream(c.bw.AvailableBuffer(), b, req, rt))
		err = c.bw.Flush()
		var res *response
		if err == nil {
			res, err = fc.ans.read(c.br, req.method)
		} else {
			err = writeError{err}
		}
		if err != nil {
			c.c.Close()
			if replayable(string(req.method)) || (reused && stale(err)) {
				b.closeIdle()
				if attempt == 0 {
					continue
				}
				return 0, keepIn
			}
			fc.bw.Write(fc.s.appendBadGateway(fc.bw.AvailableBuffer(), rt, worker, err))
			return http.StatusBadGateway, keepIn
		}
		if res.status == StatusNotServed && res.notServed {
			_, _ = c.br.Discard(fc.ans.headLen)
			if res.discard(c.br) == nil && res.keepAlive {
				b.put(c)
			} else {
				c.c.Close()
			}
			return 0, keepIn
		}
		werr := fc.writeAnswer(res, c, rt, worker, keepIn, req, b.rm.cfg.ResponseTimeout)
		// Bytes after a complete answer: nobody asked for them, and the
		// connection is not reused.
		if res.keepAlive && werr == nil && c.br.Buffered() == 0 {
			b.put(c)
		} else {
			c.c.Close()
		}
		return res.status, keepIn && werr == nil
	}
}

// appendUpstream appends the request to a worker: the request line, the
// client's header lines as they came, the router's own, and the body.
func appendUpstream(dst []byte, b *Endpoint, req *fastReq, rt *route) []byte {
	dst = append(dst, req.method...)
	dst = append(dst, ' ')
	dst = append(dst, req.uri...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, req.host...)
	dst = append(dst, "\r\n"...)
	for _, l := range req.lines {
		dst = append(dst, l...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "Authorization: "...)
	dst = append(dst, b.rm.auth[0]...)
	dst = append(dst, "\r\nX-Velo-Invoke-Deployment: "...)
	dst = append(dst, rt.depHeader[0]...)
	dst = append(dst, "\r\nX-Velo-Invoke-Mount: "...)
	dst = append(dst, req.mount...)
	if req.auth != nil {
		dst = append(dst, "\r\nX-Velo-Client-Authorization: "...)
		dst = append(dst, req.auth...)
	}
	dst = append(dst, "\r\n"...)
	dst = append(dst, req.fwd...)
	if req.length >= 0 {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, req.length, 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	return append(dst, req.body...)
}

// appendAnswerHead appends the head of the answer to the client: the
// worker's status and header lines, the router's own, and the framing of
// the body (its length, or chunked when the worker's is not known ahead).
func appendAnswerHead(dst []byte, a *answer, rt *route, worker string, keep bool, req *fastReq) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, a.status...)
	dst = append(dst, "\r\n"...)
	for _, l := range a.lines {
		dst = append(dst, l...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "X-Velo-Deployment: "...)
	dst = append(dst, rt.depHeader[0]...)
	dst = append(dst, "\r\nX-Velo-Worker: "...)
	dst = append(dst, worker...)
	dst = append(dst, "\r\n"...)
	if len(req.mount) > 0 {
		// As ServeHTTP: a path-mounted component shares the host's origin.
		dst = append(dst, "Content-Security-Policy: "+SandboxPolicy+"\r\n"...)
	}
	if !keep {
		dst = append(dst, "Connection: close\r\n"...)
	}
	res := &a.res
	switch {
	case res.noBody:
		if res.length >= 0 && bytes.Equal(req.method, []byte("HEAD")) {
			dst = append(dst, "Content-Length: "...)
			dst = strconv.AppendInt(dst, res.length, 10)
			dst = append(dst, "\r\n"...)
		}
	case res.length >= 0:
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, res.length, 10)
		dst = append(dst, "\r\n"...)
	default:
		// Unknown length or chunked from the worker: chunked to the
		// client, flushed as it comes.
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	return append(dst, "\r\n"...)
}

// writeAnswer copies the worker's answer to the client. After a failure
// while copying the body, the client connection must be dropped.
func (fc *fastConn) writeAnswer(res *response, c *wconn, rt *route, worker string, keep bool, req *fastReq, timeout time.Duration) error {
	bw := fc.bw
	bw.Write(appendAnswerHead(bw.AvailableBuffer(), &fc.ans, rt, worker, keep, req))
	// The head's bytes are written: drop them from the worker's reader.
	if _, err := c.br.Discard(fc.ans.headLen); err != nil {
		return err
	}
	switch {
	case res.noBody:
	case res.length >= 0:
		if _, err := io.CopyN(bw, c.br, res.length); err != nil {
			return err
		}
	default:
		cw := httputil.NewChunkedWriter(bw)
		var src io.Reader = c.br
		if res.chunked {
			src = &chunkedBody{br: c.br}
		}
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		for {
			n, err := src.Read(*bp)
			c.extendDeadline(time.Now(), timeout)
			if n > 0 {
				if _, werr := cw.Write((*bp)[:n]); werr != nil {
					return werr
				}
				if werr := bw.Flush(); werr != nil {
					return werr
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		cw.Close()
		bw.WriteString("\r\n")
	}
	return nil
}

// finishAnswer copies a worker's answer that the event loop handed over
// (its head still unread in wc.br) and reports whether the client
// connection goes on.
func (fc *fastConn) finishAnswer(wc *wconn, b *Endpoint, req *fastReq, rt *route, worker string, keep bool, start time.Time) bool {
	wc.extendDeadline(time.Now(), b.rm.cfg.ResponseTimeout)
	res, err := fc.ans.read(wc.br, req.method)
	if err != nil {
		wc.c.Close()
		return false
	}
	werr := fc.writeAnswer(res, wc, rt, worker, keep, req, b.rm.cfg.ResponseTimeout)
	if res.keepAlive && werr == nil && wc.br.Buffered() == 0 {
		b.put(wc)
	} else {
		wc.c.Close()
	}
	fc.s.count(rt, res.status, start)
	return fc.bw.Flush() == nil && werr == nil && keep
}

// prefixReader reads pre, then r.
type prefixReader struct {
	pre []byte
	r   io.Reader
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// screenedConn is a connection handed to net/http, which parses the
// requests on it from there on. Each of their heads passes
// parseRequestHead first, so that net/http never frames a request Velo
// refuses (Content-Length with Transfer-Encoding, which net/http frames by
// TE, for one): a refused head reaches net/http as a request line it
// refuses too, and it answers 400 and closes. After a chunked request or
// an upgrade the screen cannot know where the next head starts: it goes
// blind, and the connection is closed after that answer (see Serve).
type screenedConn struct {
	net.Conn
	in    []byte // read, not yet passed on
	out   []byte // to pass on
	left  int64  // body bytes of the current request still to pass
	err   error  // the read error to return once in is passed on
	req   fastReq
	blind atomic.Bool
}

// maxScreenedHead is as net/http's DefaultMaxHeaderBytes.
const maxScreenedHead = 1 << 20

// refusedHead is what net/http reads instead of a head Velo refuses.
var refusedHead = []byte("\x00 refused HTTP/1.1\r\n\r\n")

type screenKey struct{}

func (s *FastServer) screen(c net.Conn, pre []byte) *screenedConn {
	return &screenedConn{Conn: c, in: pre}
}

func (sc *screenedConn) Read(p []byte) (int, error) {
	for len(sc.out) == 0 {
		blind := sc.blind.Load()
		switch n, err := 0, error(nil); {
		case sc.err != nil && len(sc.in) == 0:
			return 0, sc.err
		case blind || sc.left > 0:
			if len(sc.in) == 0 {
				if !blind {
					p = p[:min(int64(len(p)), sc.left)]
				}
				n, err = sc.Conn.Read(p)
				sc.left -= int64(n)
				return n, err
			}
			k := len(sc.in)
			if !blind {
				k = int(min(int64(k), sc.left))
			}
			sc.out, sc.in, sc.left = sc.in[:k], sc.in[k:], sc.left-int64(k)
		default:
			n, err = parseRequestHead(&sc.req, sc.in)
			switch {
			case err != nil || len(sc.in) > maxScreenedHead || (n == 0 && sc.err != nil):
				sc.out, sc.in = refusedHead, nil
				sc.blind.Store(true)
			case n > 0:
				sc.out, sc.in, sc.left = sc.in[:n], sc.in[n:], max(sc.req.length, 0)
				if sc.req.chunked || sc.req.upgrade || bytes.Equal(sc.req.method, []byte("CONNECT")) {
					sc.blind.Store(true)
				}
			default:
				sc.in = slices.Grow(sc.in, 4<<10)
				n, sc.err = sc.Conn.Read(sc.in[len(sc.in):cap(sc.in)])
				sc.in = sc.in[:len(sc.in)+n]
			}
		}
	}
	n := copy(p, sc.out)
	sc.out = sc.out[n:]
	return n, nil
}

// handoffListener gives net/http the connections the fast path hands off.
type handoffListener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newHandoffListener(addr net.Addr) *handoffListener {
	return &handoffListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *handoffListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return l.addr }
