package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
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
		var ip []byte
		if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			ip = []byte(ra.IP.String())
		}
		fc := s.newConn(c, ip)
		go fc.serve(nil)
	}
}

// newConn sets up a connection for the goroutine path; the caller starts
// its serve.
func (s *FastServer) newConn(c net.Conn, ip []byte) *fastConn {
	fc := &fastConn{s: s, c: c, clientIP: ip}
	fc.io = newRawIO(c)
	fc.br = readerPool.Get().(*bufio.Reader)
	fc.br.Reset(fc.io)
	fc.bw = writerPool.Get().(*bufio.Writer)
	fc.bw.Reset(fc.io)
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
	s        *FastServer
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	io       *rawIO        // under br and bw
	pre      *prefixReader // between br and io when the loop handed it over
	idle     atomic.Bool
	clientIP []byte
	req      fastReq // reused for every request
	// headDeadline is set while a request head is read in more than
	// one piece, under the shorter HeadTimeout.
	headDeadline bool
	ans          answer // the worker's answer head
}

// answer is the head of a worker's answer, parsed in place where it lies
// in the read buffer: the header lines to pass on are kept as slices,
// written to the client as they are, and the head is dropped from the
// buffer only then (headLen bytes).
type answer struct {
	res     response
	status  []byte // code and reason as the worker sent them
	lines   [][]byte
	headLen int
}

// parse parses the answer head at the start of buf, the answer to a
// request with method. It returns false while buf holds no whole head,
// interim true for a 1xx answer to drop (headLen bytes) before the next.
func (a *answer) parse(buf, method []byte) (done, interim bool, err error) {
	i := bytes.Index(buf, []byte("\r\n\r\n"))
	if i < 0 {
		return false, false, nil
	}
	head := buf[:i+4]
	res := &a.res
	*res = response{length: -1}
	a.lines = a.lines[:0]
	a.headLen = len(head)
	rest := head[:len(head)-2]
	line, rest, _ := bytes.Cut(rest, []byte("\r\n"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return false, false, fmt.Errorf("malformed status line %q", line)
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return false, false, fmt.Errorf("malformed status line %q", line)
		}
		res.status = res.status*10 + int(c-'0')
	}
	res.keepAlive = line[7] == '1'
	a.status = line[9:]
	var hop [][]byte
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return false, false, fmt.Errorf("malformed header line %q", line)
		}
		name := line[:colon]
		value := bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (res.length >= 0 && n != res.length) {
				return false, false, fmt.Errorf("bad Content-Length %q", value)
			}
			res.length = n
			continue
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			if !bytes.EqualFold(value, []byte("chunked")) {
				return false, false, fmt.Errorf("unsupported Transfer-Encoding %q", value)
			}
			res.chunked = true
			continue
		case bytes.EqualFold(name, []byte("Connection")):
			for _, tok := range bytes.Split(value, []byte(",")) {
				switch tok = bytes.TrimSpace(tok); {
				case bytes.EqualFold(tok, []byte("close")):
					res.keepAlive = false
				case bytes.EqualFold(tok, []byte("keep-alive")):
					res.keepAlive = true
				case len(tok) > 0:
					hop = append(hop, tok)
				}
			}
			continue
		case bytes.EqualFold(name, []byte("Keep-Alive")), bytes.EqualFold(name, []byte("Proxy-Connection")),
			bytes.EqualFold(name, []byte("Te")), bytes.EqualFold(name, []byte("Trailer")),
			bytes.EqualFold(name, []byte("Upgrade")), bytes.EqualFold(name, []byte("Proxy-Authenticate")),
			bytes.EqualFold(name, []byte("X-Velo-Deployment")), bytes.EqualFold(name, []byte("X-Velo-Worker")):
			continue
		case bytes.EqualFold(name, []byte(HeaderNotServed)):
			res.notServed = true
		}
		a.lines = append(a.lines, line)
	}
	if len(hop) > 0 {
		a.lines = slices.DeleteFunc(a.lines, func(l []byte) bool {
			name, _, _ := bytes.Cut(l, []byte(":"))
			for _, h := range hop {
				if bytes.EqualFold(name, h) {
					return true
				}
			}
			return false
		})
	}
	if res.status >= 100 && res.status < 200 {
		if res.status == http.StatusSwitchingProtocols {
			return false, false, errors.New("protocol upgrades are not forwarded")
		}
		return true, true, nil
	}
	if bytes.Equal(method, []byte("HEAD")) || res.status == http.StatusNoContent || res.status == http.StatusNotModified {
		res.noBody = true
	}
	if !res.noBody && !res.chunked && res.length < 0 {
		res.keepAlive = false // the body runs to the end of the connection
	}
	return true, false, nil
}

// readRawHead reads and parses the head of a worker's answer from br,
// leaving it in br's buffer (see answer), 1xx interim answers skipped.
func (fc *fastConn) readRawHead(br *bufio.Reader, method []byte) (*response, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		done, interim, err := fc.ans.parse(buf, method)
		switch {
		case err != nil:
			return nil, err
		case interim:
			if _, err := br.Discard(fc.ans.headLen); err != nil {
				return nil, err
			}
			continue
		case done:
			return &fc.ans.res, nil
		case len(buf) >= br.Size():
			return nil, errors.New("answer head too long")
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
	}
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
		req, ok := fc.parse()
		if fc.headDeadline {
			deadlineSet = time.Time{} // back to the idle deadline
		}
		if !ok {
			// Not for the fast path: net/http serves this connection
			// from here on, starting with the bytes already read.
			handedOff = true
			buf, _ := fc.br.Peek(fc.br.Buffered())
			s.fallback.push(newPrefixedConn(fc.c, bytes.Clone(buf)))
			return
		}
		keep := fc.forward(req) && !s.closing.Load()
		var err error
		if keep && fc.br.Buffered() == 0 && (fc.pre == nil || len(fc.pre.pre) == 0) {
			// Nothing pipelined: write the answer and wait for the next
			// request in one go (see rawIO). Idle while waiting, so
			// that Shutdown wakes it.
			fc.idle.Store(true)
			err = fc.io.flushAwait(fc.bw)
		} else {
			err = fc.bw.Flush()
		}
		if err != nil || !keep {
			return
		}
	}
}

// fastReq is a parsed request head, its bytes still in the read buffer.
type fastReq struct {
	head     []byte // the whole head, up to and including the blank line
	method   []byte
	uri      []byte
	host     []byte
	mount    []byte
	rt       *route
	lines    [][]byte // header lines to forward as they are (without CRLF)
	clientIP []byte
	auth     []byte // the caller's Authorization value
	xff      []byte // the X-Forwarded-For value received
	body     []byte
	length   int
	close    bool // the client asked to close after this request
}

// size is the request's length in the read buffer.
func (r *fastReq) size() int { return len(r.head) + max(r.length, 0) }

const maxFastBody = 64 << 10

// parse reads a request head and decides whether the fast path takes it.
// When it does not, nothing has been consumed from the reader.
func (fc *fastConn) parse() (*fastReq, bool) {
	br := fc.br
	for {
		buf, _ := br.Peek(br.Buffered())
		switch fc.s.parseRequest(&fc.req, buf, br.Size(), fc.clientIP) {
		case takeFast:
			return &fc.req, true
		case leaveFast:
			return nil, false
		}
		if !fc.headDeadline {
			fc.headDeadline = true
			_ = fc.c.SetReadDeadline(time.Now().Add(fc.s.HeadTimeout))
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, false
		}
	}
}

// verdict is what the fast path makes of the bytes of a request so far.
type verdict int

const (
	readMore  verdict = iota // no whole request yet
	leaveFast                // not for the fast path: net/http serves it
	takeFast                 // head and body are in the buffer
)

// parseRequest parses the request at the start of buf, the bytes read so
// far into a buffer of size bytes, into r, whose slices point into buf.
func (s *FastServer) parseRequest(r *fastReq, buf []byte, size int, clientIP []byte) verdict {
	i := bytes.Index(buf, []byte("\r\n\r\n"))
	if i < 0 {
		if len(buf) >= size {
			return leaveFast // long heads: net/http knows the answers
		}
		return readMore
	}
	head := buf[:i+4]
	*r = fastReq{head: head, length: -1, lines: r.lines[:0], clientIP: clientIP}
	rest := head[:len(head)-2]
	line, rest, _ := bytes.Cut(rest, []byte("\r\n"))
	// Request line: METHOD SP origin-form SP HTTP/1.1
	m, after, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(m) == 0 || !isToken(m) {
		return leaveFast
	}
	uri, proto, ok := bytes.Cut(after, []byte(" "))
	if !ok || !bytes.Equal(proto, []byte("HTTP/1.1")) || len(uri) == 0 || uri[0] != '/' {
		return leaveFast
	}
	for _, c := range uri {
		if c <= ' ' || c >= 0x7f {
			return leaveFast
		}
	}
	r.method, r.uri = m, uri
	path := uri
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	// Paths ServeMux would clean or redirect, and escapes: net/http.
	if bytes.Contains(path, []byte("//")) || bytes.Contains(path, []byte("/.")) || bytes.IndexByte(path, '%') >= 0 {
		return leaveFast
	}
	hosts := 0
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return leaveFast
		}
		name := line[:colon]
		value := bytes.TrimLeft(line[colon+1:], " \t")
		value = bytes.TrimRight(value, " \t")
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return leaveFast
			}
		}
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			hosts++
			r.host = value
			continue
		case bytes.EqualFold(name, []byte("Content-Length")):
			if r.length >= 0 {
				return leaveFast
			}
			n, err := strconv.Atoi(string(value))
			if err != nil || n < 0 || n > maxFastBody {
				return leaveFast
			}
			r.length = n
			continue
		case bytes.EqualFold(name, []byte("Transfer-Encoding")), bytes.EqualFold(name, []byte("Expect")),
			bytes.EqualFold(name, []byte("Upgrade")), bytes.EqualFold(name, []byte("Te")),
			bytes.EqualFold(name, []byte("Trailer")):
			return leaveFast
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				r.close = true
			case bytes.EqualFold(value, []byte("keep-alive")):
			default:
				return leaveFast // fields named as hop-by-hop: net/http
			}
			continue
		case bytes.EqualFold(name, []byte("Keep-Alive")), bytes.EqualFold(name, []byte("Proxy-Connection")),
			bytes.EqualFold(name, []byte("Proxy-Authorization")):
			continue
		case bytes.EqualFold(name, []byte("Authorization")):
			if r.auth != nil {
				return leaveFast
			}
			r.auth = value
			continue
		case bytes.EqualFold(name, []byte("X-Forwarded-For")):
			if r.xff != nil {
				return leaveFast
			}
			r.xff = value
			continue
		case len(name) > 7 && bytes.EqualFold(name[:7], []byte("X-Velo-")):
			continue // internal headers are set by the router only
		}
		r.lines = append(r.lines, line)
	}
	if hosts != 1 {
		return leaveFast
	}
	name, mount, ok := s.Router.componentOf(r.host, path)
	if !ok {
		return leaveFast
	}
	rt := s.Router.table.Load().routes[string(name)]
	if rt == nil || rt.paused || rt.depID == 0 || len(rt.targets) == 0 {
		return leaveFast // ServeHTTP writes those answers
	}
	for _, t := range rt.targets {
		if _, ok := t.b.(*remoteBackend); !ok {
			return leaveFast
		}
	}
	r.rt, r.mount = rt, mount
	if r.length > 0 && len(buf) < len(head)+r.length {
		if len(head)+r.length > size {
			return leaveFast
		}
		return readMore
	}
	if r.length > 0 {
		r.body = buf[len(head) : len(head)+r.length]
	}
	return takeFast
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

func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f || bytes.IndexByte([]byte(`"(),/:;<=>?@[\]{}`), c) >= 0 {
			return false
		}
	}
	return len(b) > 0
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
		status, keep = fc.try(t.b.(*remoteBackend), req, rt, t.worker[0], keep)
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

// appendBadGateway appends the answer when a worker failed the call.
func appendBadGateway(dst []byte, rt *route, worker, host string, err error) []byte {
	msg := "worker " + host + " failed: " + err.Error() + "\n"
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
func (fc *fastConn) try(b *remoteBackend, req *fastReq, rt *route, worker string, keepIn bool) (status int, keep bool) {
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
		err = c.io.flushAwait(c.bw)
		var res *response
		if err == nil {
			res, err = fc.readRawHead(c.br, req.method)
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
			fc.bw.Write(appendBadGateway(fc.bw.AvailableBuffer(), rt, worker, b.host, err))
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
		if res.keepAlive && werr == nil {
			b.put(c)
		} else {
			c.c.Close()
		}
		return res.status, keepIn && werr == nil
	}
}

// appendUpstream appends the request to a worker: the request line, the
// client's header lines as they came, the router's own, and the body.
func appendUpstream(dst []byte, b *remoteBackend, req *fastReq, rt *route) []byte {
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
	dst = append(dst, "\r\nX-Forwarded-For: "...)
	if req.xff != nil {
		dst = append(dst, req.xff...)
		dst = append(dst, ", "...)
	}
	dst = append(dst, req.clientIP...)
	if req.length >= 0 {
		dst = append(dst, "\r\nContent-Length: "...)
		dst = strconv.AppendInt(dst, int64(req.length), 10)
	}
	dst = append(dst, "\r\n\r\n"...)
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
func (fc *fastConn) finishAnswer(wc *wconn, b *remoteBackend, req *fastReq, rt *route, worker string, keep bool, start time.Time) bool {
	wc.extendDeadline(time.Now(), b.rm.cfg.ResponseTimeout)
	res, err := fc.readRawHead(wc.br, req.method)
	if err != nil {
		wc.c.Close()
		return false
	}
	werr := fc.writeAnswer(res, wc, rt, worker, keep, req, b.rm.cfg.ResponseTimeout)
	if res.keepAlive && werr == nil {
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

// prefixedConn is a connection handed to net/http with the bytes the fast
// path already read in front.
type prefixedConn struct {
	net.Conn
	r prefixReader
}

func newPrefixedConn(c net.Conn, pre []byte) *prefixedConn {
	return &prefixedConn{Conn: c, r: prefixReader{pre: pre, r: c}}
}

func (p *prefixedConn) Read(b []byte) (int, error) { return p.r.Read(b) }

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
