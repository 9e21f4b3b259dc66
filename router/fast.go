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
	s.mu.Lock()
	s.ln = ln
	s.conns = map[*fastConn]struct{}{}
	s.fallback = newHandoffListener(ln.Addr())
	s.mu.Unlock()
	go func() { _ = s.Fallback.Serve(s.fallback) }()
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
		fc := &fastConn{s: s, c: c}
		if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
			fc.clientIP = []byte(ra.IP.String())
		}
		s.mu.Lock()
		s.conns[fc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go fc.serve()
	}
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
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
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
	io       *rawIO // under br and bw
	idle     atomic.Bool
	clientIP []byte
	req      fastReq // reused for every request
	// headDeadline is set while a request head is read in more than
	// one piece, under the shorter HeadTimeout.
	headDeadline bool
	// The worker's answer head, parsed in place (see readRawHead).
	res        response
	resStatus  []byte
	resLines   [][]byte
	resHeadLen int
}

// readRawHead parses the head of a worker's answer where it lies in br's
// buffer, without copying: the header lines to pass on are kept as slices,
// written to the client as they are, and the head is discarded from br
// only then (resHeadLen bytes). 1xx interim answers are skipped.
func (fc *fastConn) readRawHead(br *bufio.Reader, method []byte) (*response, error) {
	for {
		var head []byte
		for {
			buf, _ := br.Peek(br.Buffered())
			if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
				head = buf[:i+4]
				break
			}
			if len(buf) >= br.Size() {
				return nil, errors.New("answer head too long")
			}
			if _, err := br.Peek(len(buf) + 1); err != nil {
				return nil, fmt.Errorf("read answer: %w", err)
			}
		}
		res := &fc.res
		*res = response{length: -1}
		fc.resLines = fc.resLines[:0]
		fc.resHeadLen = len(head)
		rest := head[:len(head)-2]
		line, rest, _ := bytes.Cut(rest, []byte("\r\n"))
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return nil, fmt.Errorf("malformed status line %q", line)
		}
		for _, c := range line[9:12] {
			if c < '0' || c > '9' {
				return nil, fmt.Errorf("malformed status line %q", line)
			}
			res.status = res.status*10 + int(c-'0')
		}
		res.keepAlive = line[7] == '1'
		fc.resStatus = line[9:]
		var hop [][]byte
		for len(rest) > 0 {
			line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				return nil, fmt.Errorf("malformed header line %q", line)
			}
			name := line[:colon]
			value := bytes.TrimSpace(line[colon+1:])
			switch {
			case bytes.EqualFold(name, []byte("Content-Length")):
				n, err := strconv.ParseInt(string(value), 10, 64)
				if err != nil || n < 0 || (res.length >= 0 && n != res.length) {
					return nil, fmt.Errorf("bad Content-Length %q", value)
				}
				res.length = n
				continue
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				if !bytes.EqualFold(value, []byte("chunked")) {
					return nil, fmt.Errorf("unsupported Transfer-Encoding %q", value)
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
			fc.resLines = append(fc.resLines, line)
		}
		if len(hop) > 0 {
			fc.resLines = slices.DeleteFunc(fc.resLines, func(l []byte) bool {
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
				return nil, errors.New("protocol upgrades are not forwarded")
			}
			if _, err := br.Discard(len(head)); err != nil {
				return nil, err
			}
			continue
		}
		if bytes.Equal(method, []byte("HEAD")) || res.status == http.StatusNoContent || res.status == http.StatusNotModified {
			res.noBody = true
		}
		if !res.noBody && !res.chunked && res.length < 0 {
			res.keepAlive = false // the body runs to the end of the connection
		}
		return res, nil
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

func (fc *fastConn) serve() {
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
		if fc.br != nil && !handedOff {
			fc.br.Reset(nil)
			readerPool.Put(fc.br)
		}
		if fc.bw != nil {
			fc.bw.Reset(nil)
			writerPool.Put(fc.bw)
		}
		s.wg.Done()
	}()
	fc.io = newRawIO(fc.c)
	fc.br = readerPool.Get().(*bufio.Reader)
	fc.br.Reset(fc.io)
	fc.bw = writerPool.Get().(*bufio.Writer)
	fc.bw.Reset(fc.io)
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
			s.fallback.push(&prefixedConn{Conn: fc.c, r: fc.br})
			return
		}
		keep := fc.forward(req)
		var err error
		if keep && fc.br.Buffered() == 0 {
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
	length   int
	close    bool // the client asked to close after this request
}

const maxFastBody = 64 << 10

// parse reads a request head and decides whether the fast path takes it.
// When it does not, nothing has been consumed from the reader.
func (fc *fastConn) parse() (*fastReq, bool) {
	br := fc.br
	// Find the end of the head within the buffer.
	var head []byte
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			head = buf[:i+4]
			break
		}
		if len(buf) >= br.Size() {
			return nil, false // long heads: net/http knows the answers
		}
		if !fc.headDeadline {
			fc.headDeadline = true
			_ = fc.c.SetReadDeadline(time.Now().Add(fc.s.HeadTimeout))
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, false
		}
	}
	r := &fc.req
	*r = fastReq{head: head, length: -1, lines: r.lines[:0], clientIP: fc.clientIP}
	rest := head[:len(head)-2]
	line, rest, _ := bytes.Cut(rest, []byte("\r\n"))
	// Request line: METHOD SP origin-form SP HTTP/1.1
	m, after, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(m) == 0 || !isToken(m) {
		return nil, false
	}
	uri, proto, ok := bytes.Cut(after, []byte(" "))
	if !ok || !bytes.Equal(proto, []byte("HTTP/1.1")) || len(uri) == 0 || uri[0] != '/' {
		return nil, false
	}
	for _, c := range uri {
		if c <= ' ' || c >= 0x7f {
			return nil, false
		}
	}
	r.method, r.uri = m, uri
	path := uri
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	// Paths ServeMux would clean or redirect, and escapes: net/http.
	if bytes.Contains(path, []byte("//")) || bytes.Contains(path, []byte("/.")) || bytes.IndexByte(path, '%') >= 0 {
		return nil, false
	}
	hosts := 0
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return nil, false
		}
		name := line[:colon]
		value := bytes.TrimLeft(line[colon+1:], " \t")
		value = bytes.TrimRight(value, " \t")
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return nil, false
			}
		}
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			hosts++
			r.host = value
			continue
		case bytes.EqualFold(name, []byte("Content-Length")):
			if r.length >= 0 {
				return nil, false
			}
			n, err := strconv.Atoi(string(value))
			if err != nil || n < 0 || n > maxFastBody {
				return nil, false
			}
			r.length = n
			continue
		case bytes.EqualFold(name, []byte("Transfer-Encoding")), bytes.EqualFold(name, []byte("Expect")),
			bytes.EqualFold(name, []byte("Upgrade")), bytes.EqualFold(name, []byte("Te")),
			bytes.EqualFold(name, []byte("Trailer")):
			return nil, false
		case bytes.EqualFold(name, []byte("Connection")):
			switch {
			case bytes.EqualFold(value, []byte("close")):
				r.close = true
			case bytes.EqualFold(value, []byte("keep-alive")):
			default:
				return nil, false // fields named as hop-by-hop: net/http
			}
			continue
		case bytes.EqualFold(name, []byte("Keep-Alive")), bytes.EqualFold(name, []byte("Proxy-Connection")),
			bytes.EqualFold(name, []byte("Proxy-Authorization")):
			continue
		case bytes.EqualFold(name, []byte("Authorization")):
			if r.auth != nil {
				return nil, false
			}
			r.auth = value
			continue
		case bytes.EqualFold(name, []byte("X-Forwarded-For")):
			if r.xff != nil {
				return nil, false
			}
			r.xff = value
			continue
		case len(name) > 7 && bytes.EqualFold(name[:7], []byte("X-Velo-")):
			continue // internal headers are set by the router only
		}
		r.lines = append(r.lines, line)
	}
	if hosts != 1 {
		return nil, false
	}
	name, mount, ok := fc.s.Router.componentOf(r.host, path)
	if !ok {
		return nil, false
	}
	rt := fc.s.Router.table.Load().routes[string(name)]
	if rt == nil || rt.paused || rt.depID == 0 || len(rt.targets) == 0 {
		return nil, false // ServeHTTP writes those answers
	}
	for _, t := range rt.targets {
		if _, ok := t.b.(*remoteBackend); !ok {
			return nil, false
		}
	}
	r.rt, r.mount = rt, mount
	if r.length > 0 {
		if _, err := br.Peek(len(head) + r.length); err != nil {
			return nil, false
		}
	}
	return r, true
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
	body := []byte(nil)
	if req.length > 0 {
		buf, _ := fc.br.Peek(len(req.head) + req.length)
		body = buf[len(req.head):]
	}
	n := uint64(len(rt.targets))
	first := rt.next.Add(1)
	status := 0
	keep = !req.close
	for i := uint64(0); i < n && status == 0; i++ {
		t := rt.targets[(first+i)%n]
		status, keep = fc.try(t.b.(*remoteBackend), req, body, rt, t.worker[0], keep)
	}
	if _, err := fc.br.Discard(len(req.head) + max(req.length, 0)); err != nil {
		return false
	}
	if status == 0 {
		status = http.StatusServiceUnavailable
		msg := fmt.Sprintf("component %q has no healthy instance\n", rt.name)
		fmt.Fprintf(fc.bw, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nX-Velo-Deployment: %s\r\nContent-Length: %d\r\n\r\n%s",
			rt.depHeader[0], len(msg), msg)
	}
	if fc.s.Router.cfg.NoHits {
		return keep
	}
	c := rt.stats
	c.hits.Add(1)
	c.totalHits.Add(1)
	if status >= 500 {
		c.errors.Add(1)
		c.totalErrors.Add(1)
	}
	c.latency.Record(time.Since(start))
	return keep
}

// try forwards to one worker. status is 0 when the request never reached
// a worker able to serve it (try the next one); otherwise the answer was
// written (or the client connection must be dropped: keep false).
func (fc *fastConn) try(b *remoteBackend, req *fastReq, body []byte, rt *route, worker string, keepIn bool) (status int, keep bool) {
	if until := b.downUntil.Load(); until != 0 {
		now := b.rm.now().UnixNano()
		if now < until || !b.downUntil.CompareAndSwap(until, now+int64(b.rm.cfg.DownFor)) {
			return 0, keepIn
		}
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := b.get(context.Background())
		if err != nil {
			b.downUntil.Store(b.rm.now().Add(b.rm.cfg.DownFor).UnixNano())
			b.closeIdle()
			return 0, keepIn
		}
		b.downUntil.Store(0)
		c.extendDeadline(time.Now(), b.rm.cfg.ResponseTimeout)
		fc.writeUpstream(c.bw, b, req, rt, body)
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
			msg := "worker " + b.host + " failed: " + err.Error() + "\n"
			fmt.Fprintf(fc.bw, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nX-Velo-Deployment: %s\r\nX-Velo-Worker: %s\r\nContent-Length: %d\r\n\r\n%s",
				rt.depHeader[0], worker, len(msg), msg)
			return http.StatusBadGateway, keepIn
		}
		if res.status == StatusNotServed && res.notServed {
			_, _ = c.br.Discard(fc.resHeadLen)
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

// writeUpstream writes the request to a worker: the request line, the
// client's header lines as they came, and the router's own.
func (fc *fastConn) writeUpstream(bw *bufio.Writer, b *remoteBackend, req *fastReq, rt *route, body []byte) {
	bw.Write(req.method)
	bw.WriteByte(' ')
	bw.Write(req.uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.Write(req.host)
	bw.WriteString("\r\n")
	for _, l := range req.lines {
		bw.Write(l)
		bw.WriteString("\r\n")
	}
	bw.WriteString("Authorization: ")
	bw.WriteString(b.rm.auth[0])
	bw.WriteString("\r\nX-Velo-Invoke-Deployment: ")
	bw.WriteString(rt.depHeader[0])
	bw.WriteString("\r\nX-Velo-Invoke-Mount: ")
	bw.Write(req.mount)
	if req.auth != nil {
		bw.WriteString("\r\nX-Velo-Client-Authorization: ")
		bw.Write(req.auth)
	}
	bw.WriteString("\r\nX-Forwarded-For: ")
	if req.xff != nil {
		bw.Write(req.xff)
		bw.WriteString(", ")
	}
	bw.Write(req.clientIP)
	if req.length >= 0 {
		var nb [20]byte
		bw.WriteString("\r\nContent-Length: ")
		bw.Write(strconv.AppendInt(nb[:0], int64(req.length), 10))
	}
	bw.WriteString("\r\n\r\n")
	bw.Write(body)
}

// writeAnswer copies the worker's answer to the client. After a failure
// while copying the body, the client connection must be dropped.
func (fc *fastConn) writeAnswer(res *response, c *wconn, rt *route, worker string, keep bool, req *fastReq, timeout time.Duration) error {
	bw := fc.bw
	var nb [20]byte
	bw.WriteString("HTTP/1.1 ")
	bw.Write(fc.resStatus) // code and reason as the worker sent them
	bw.WriteString("\r\n")
	for _, l := range fc.resLines {
		bw.Write(l)
		bw.WriteString("\r\n")
	}
	// The head's bytes are written: drop them from the worker's reader.
	if _, err := c.br.Discard(fc.resHeadLen); err != nil {
		return err
	}
	bw.WriteString("X-Velo-Deployment: ")
	bw.WriteString(rt.depHeader[0])
	bw.WriteString("\r\nX-Velo-Worker: ")
	bw.WriteString(worker)
	bw.WriteString("\r\n")
	if len(req.mount) > 0 {
		// As ServeHTTP: a path-mounted component shares the host's origin.
		bw.WriteString("Content-Security-Policy: " + SandboxPolicy + "\r\n")
	}
	if !keep {
		bw.WriteString("Connection: close\r\n")
	}
	switch {
	case res.noBody:
		if res.length >= 0 && bytes.Equal(req.method, []byte("HEAD")) {
			bw.WriteString("Content-Length: ")
			bw.Write(strconv.AppendInt(nb[:0], res.length, 10))
			bw.WriteString("\r\n")
		}
		bw.WriteString("\r\n")
	case res.length >= 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(nb[:0], res.length, 10))
		bw.WriteString("\r\n\r\n")
		if _, err := io.CopyN(bw, c.br, res.length); err != nil {
			return err
		}
	default:
		// Unknown length or chunked from the worker: chunked to the
		// client, flushed as it comes.
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
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

// prefixedConn is a connection handed to net/http with the bytes the fast
// path already read in front.
type prefixedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *prefixedConn) Read(b []byte) (int, error) {
	if p.r.Buffered() > 0 {
		return p.r.Read(b)
	}
	return p.Conn.Read(b)
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
