package router

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
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
	// platform has them (Linux; default GOMAXPROCS). Negative, or without
	// event loops, net/http serves every connection (through the same
	// request parser, see screenedConn).
	Loops int
	// TLS, when set, makes Serve terminate TLS with it on every
	// connection it accepts: the handshake runs on a goroutine, then
	// HTTP/1.1 keep-alive requests take the fast path on the event loops
	// (on a goroutine per connection without them, see fasttls.go), h2
	// clients go to Fallback, which must then have the same TLSConfig.
	TLS *tls.Config
	// HSTS, when set, is the Strict-Transport-Security value of every
	// answer the fast path writes on TLS (Fallback's handler sets its own).
	HSTS string
	// InProcess, without TLS, serves every plain connection on a goroutine
	// of its own running the fast path, which also takes the calls of
	// components whose workers are all in this process (InProcess
	// backends) and calls them directly (fastlocal.go). For velo up.
	InProcess bool

	hsts      string                 // the HSTS header line, from HSTS
	connLoops map[*connLoop]struct{} // served on goroutines of their own (fastconn.go)
	loops     []*loop
	next      atomic.Uint64 // the loop the next connection goes to
	mu        sync.Mutex
	ln        net.Listener
	closing   atomic.Bool
	wg        sync.WaitGroup
	fallback  *handoffListener
}

// Serve accepts connections on ln until Shutdown or a listener failure.
func (s *FastServer) Serve(ln net.Listener) error {
	if s.IdleTimeout <= 0 {
		s.IdleTimeout = 2 * time.Minute
	}
	if s.HeadTimeout <= 0 {
		s.HeadTimeout = 10 * time.Second
	}
	if s.HSTS != "" {
		s.hsts = "Strict-Transport-Security: " + s.HSTS + "\r\n"
	}
	if s.closing.Load() {
		return http.ErrServerClosed
	}
	if s.Fallback.IdleTimeout <= 0 {
		s.Fallback.IdleTimeout = s.IdleTimeout
	}
	if s.Fallback.ReadHeaderTimeout <= 0 {
		s.Fallback.ReadHeaderTimeout = s.HeadTimeout
	}
	s.mu.Lock()
	s.ln = ln
	s.fallback = newHandoffListener(ln.Addr())
	s.mu.Unlock()
	// A request net/http reads after a screen went blind is its
	// connection's last (see screenedConn).
	h := s.Fallback.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	s.Fallback.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sc, _ := r.Context().Value(screenKey{}).(*screenedConn); sc != nil {
			if n, b := sc.served.Add(1), sc.blindAt.Load(); b != 0 && n >= b {
				w.Header().Set("Connection", "close")
			}
			// net/http sees TLS state only on a *tls.Conn it holds itself.
			if tc, ok := sc.Conn.(*tls.Conn); ok && r.TLS == nil {
				st := tc.ConnectionState()
				r.TLS = &st
			}
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
		switch {
		case s.InProcess && s.TLS == nil:
			s.mu.Lock()
			if s.closing.Load() {
				s.mu.Unlock()
				c.Close()
				return http.ErrServerClosed
			}
			s.wg.Add(1)
			s.mu.Unlock()
			go s.serveLocal(c)
		case s.TLS != nil:
			// Added under mu, which Shutdown takes after closing is set:
			// never an Add after its Wait began.
			s.mu.Lock()
			if s.closing.Load() {
				s.mu.Unlock()
				c.Close()
				return http.ErrServerClosed
			}
			s.wg.Add(1)
			s.mu.Unlock()
			go s.serveTLS(c)
		case !s.dispatch(c):
			s.fallback.push(s.screen(c, nil))
		}
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
	s.mu.Unlock()
	s.stopLoops(false)
	s.closeConnLoops(false)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.stopLoops(true)
		s.closeConnLoops(true)
	}
	return s.Fallback.Shutdown(ctx)
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
	apiKey  []byte   // the caller's X-Api-Key value
	adm     admission
	gated   []byte // the gate's header lines: to the worker (identity), to the client (rate limit)
	split   int    // gated[:split] goes to the worker, gated[split:] to the client
	xff     []byte // the X-Forwarded-For value received
	xfp     []byte // the X-Forwarded-Proto value received
	fwd     []byte // the forwarding header lines to send (see peer)
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

const (
	loopClientBuffer = 16 << 10 // a client connection's read buffer
	// maxQueued is how much of an answer is queued for a client that is
	// behind before the worker's connection is read no more.
	maxQueued = 64 << 10
)

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
	return s.parse(r, buf, size, p, false)
}

// parse is parseRequest, also taking the routes served in this process
// when local is set (the in-process path, fastlocal.go).
func (s *FastServer) parse(r *fastReq, buf []byte, size int, p *peer, local bool) (verdict, error) {
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
	if rt == nil || !rt.fast && !(local && rt.local) {
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
		r.fwd = s.Router.forwardLines(p.addr, string(r.xff), string(r.xfp), p.scheme)
	}
	if rt.gate != nil {
		s.admit(r, rt, p)
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
	h := host
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && !bytes.Contains(h[i:], []byte("]")) {
		h = h[:i]
	}
	if hosts := r.table.Load().hosts; len(hosts) > 0 {
		if c, ok := hosts[string(h)]; ok {
			return []byte(c), nil, true
		}
		if hasUpper(h) {
			if c, ok := hosts[strings.ToLower(string(h))]; ok {
				return []byte(c), nil, true
			}
		}
	}
	if r.cfg.Domain != "" {
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

func hasUpper(b []byte) bool {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// count records a call's answer in its component's counters.
func (s *FastServer) count(rt *route, status int, start time.Time) {
	s.Router.count(rt, status, start)
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
	private := rt.gate != nil && rt.gate.private
	if req.auth != nil && !private {
		dst = append(dst, "\r\nX-Velo-Client-Authorization: "...)
		dst = append(dst, req.auth...)
	}
	dst = append(dst, "\r\n"...)
	if req.apiKey != nil && !private {
		dst = append(dst, HeaderAPIKey+": "...)
		dst = append(dst, req.apiKey...)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, req.gated[:req.split]...)
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
	dst = append(dst, req.gated[req.split:]...)
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
	buf   []byte // what in reads into
	out   []byte // to pass on
	left  int64  // body bytes of the current request still to pass
	err   error  // the read error to return once in is passed on
	req   fastReq
	heads int64 // heads passed on
	// blindAt is the number of the head after which the screen went
	// blind (0: not), served the number of requests net/http began.
	blindAt, served atomic.Int64
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
		blind := sc.blindAt.Load() != 0
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
			case err != nil || len(sc.in) > maxScreenedHead:
				sc.out, sc.in, sc.err = refusedHead, nil, io.EOF
			case n > 0:
				sc.out, sc.in, sc.left = sc.in[:n], sc.in[n:], max(sc.req.length, 0)
				if sc.heads++; sc.req.chunked || sc.req.upgrade || bytes.Equal(sc.req.method, []byte("CONNECT")) {
					sc.blindAt.Store(sc.heads)
				}
			case sc.err != nil:
				sc.out, sc.in = sc.in, nil // the start of a head, then the error
			default:
				if len(sc.in) == 0 { // all passed on: read into buf again
					sc.in = sc.buf[:0]
				}
				sc.in = slices.Grow(sc.in, 4<<10)
				sc.buf = sc.in[:0:min(cap(sc.in), 16<<10)]
				n, err = sc.Conn.Read(sc.in[len(sc.in):cap(sc.in)])
				sc.in = sc.in[:len(sc.in)+n]
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return 0, err // deadlines move: the next read goes on
				}
				sc.err = err
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

// admit runs the gate of a call on the fast path: the verdict in r.adm,
// the header lines it adds in r.gated. Routes whose gates may block (JWTs)
// never come here.
func (s *FastServer) admit(r *fastReq, rt *route, p *peer) {
	client := p.addr
	if s.Router.trusted(client) {
		_, _, client = s.Router.forwarded(client, string(r.xff), string(r.xfp), p.scheme)
	}
	t := s.Router.table.Load()
	r.adm = s.Router.admit(context.Background(), t, rt, credentials{authorization: r.auth, apiKey: r.apiKey}, client, time.Now())
	if r.adm.status == 0 && rt.gate.private {
		r.gated = appendIdentity(r.gated, &r.adm)
	}
	r.split = len(r.gated)
	if r.adm.status == 0 && r.adm.limited {
		r.gated = r.adm.rl.appendLines(r.gated)
	}
}
