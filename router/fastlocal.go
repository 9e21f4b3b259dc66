package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The in-process fast path (FastServer.InProcess, velo up). A call for a
// component whose workers all live in this process (InProcess backends)
// is a function call, but through net/http it paid for a second parse of
// the head (after the screen's), a goroutine per request watching for the
// client to go away, the ServeMux, and an answer head and body written in
// two system calls once they pass net/http's 4 KiB buffer: together more
// than the router's whole part of a call. So each plain TCP connection is
// served on a goroutine of its own (the handler blocks, an event loop must
// not) by the fast path's request loop: the head parsed once in place by
// parse, the same routes, gate and forwarding lines as the loops, and the
// backend's Serve called with an *http.Request made from the parsed head
// (the headers a remote worker would see: the client's lines, the gate's
// identity lines, X-Forwarded-For/-Proto, Authorization and X-Api-Key
// unless private) and a localWriter, which holds the answer and writes its
// head and body in one write when it fits in localBuffer, and else frames
// it (Content-Length as declared, or chunked) and streams it. What the
// fast path does not take goes with its connection to Fallback, screened,
// as from the loops.
//
// The request's context is the connection's: it ends when the connection
// does. Like net/http's, it is cancelled when the client goes away while a
// call runs, but only for calls that last longer than watchAfter: only
// those get a goroutine reading the connection meanwhile (net/http starts
// one for every request).

// sandboxCSP is the Content-Security-Policy values of a path-mounted
// component's answer that sets none itself; its capacity is its length,
// so that adding to it copies it.
var sandboxCSP = []string{SandboxPolicy}[:1:1]

// localBuffer is the most of an answer held to go out in one write.
const localBuffer = 64 << 10

// watchAfter is how long a call runs before its connection is watched for
// the client going away.
const watchAfter = 100 * time.Millisecond

// aLongTimeAgo is a deadline in the past, to stop a pending read.
var aLongTimeAgo = time.Unix(1, 0)

// localClient is a plain TCP connection served by the in-process fast path.
type localClient struct {
	connLoop
	peer   peer
	remote string // c's remote address, RemoteAddr of an untrusted peer's calls
	fwd    []headerPair
	w      localWriter
	body   bytes.Reader
	tmpl   *http.Request // carries ctx, copied into every request
	ctx    context.Context
	cancel context.CancelFunc

	// The watch of a long call (see watchAfter).
	watch   *time.Timer
	wmu     sync.Mutex
	armed   bool      // the call runs: the timer may start the watch
	since   time.Time // when the running call began
	pending bool      // the timer is set
	reading bool      // the watch reads
	wdone   chan struct{}
	wbuf    []byte // what the watch read: the next requests
	wn      int

	// request's scratch, kept for the next request.
	strs  []byte
	spans []span
}

type headerPair struct{ key, value string }

// serveLocal serves an accepted plain connection on the in-process fast
// path.
func (s *FastServer) serveLocal(nc net.Conn) {
	defer s.wg.Done()
	c := &localClient{connLoop: connLoop{s: s, c: nc, raw: nc, in: make([]byte, loopClientBuffer)},
		peer: s.Router.peerOf(nc, "http"), remote: nc.RemoteAddr().String()}
	c.w.c = c
	c.fwd, _ = fwdHeaders(c.peer.fwd, nil)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	defer c.cancel()
	c.tmpl = (&http.Request{}).WithContext(c.ctx)
	c.watch = time.AfterFunc(time.Hour, c.startWatch)
	c.watch.Stop()
	defer c.watch.Stop()
	if !s.track(&c.connLoop, true) {
		nc.Close()
		return
	}
	closeIt := c.serve(c)
	s.track(&c.connLoop, false)
	if closeIt {
		nc.Close()
	}
}

func (c *localClient) parse() (verdict, error) {
	return c.s.parse(&c.req, c.in[:c.n], len(c.in), &c.peer, true)
}

func (c *localClient) next() {
	c.req = fastReq{lines: c.req.lines[:0], scratch: c.req.scratch[:0], gated: c.req.gated[:0]}
	if cap(c.strs) > loopClientBuffer {
		c.strs, c.spans = nil, nil // a large head's: not kept
	}
	if c.wn > 0 {
		// What the watch read meanwhile: the next requests.
		if need := c.n + c.wn; need > len(c.in) {
			c.in = append(c.in[:c.n:c.n], make([]byte, need-c.n)...)
		}
		c.n += copy(c.in[c.n:], c.wbuf[:c.wn])
		c.wn = 0
	}
}

func (c *localClient) refusal(err error) []byte { return appendRefusal(c.w.out[:0], err) }

// write writes p to the client, within IdleTimeout (less its slack, see
// connLoop.deadline).
func (c *localClient) write(p []byte) error {
	c.deadline(&c.wdl, time.Now(), c.s.IdleTimeout, c.c.SetWriteDeadline)
	_, err := c.c.Write(p)
	return err
}

// exchange answers the parsed request c.req: the gate's refusal, or the
// answer of the first in-process backend of the route that serves it (503
// when none does). False when the connection is to be closed after it.
func (c *localClient) exchange() (keepOpen bool) {
	s := c.s
	start := time.Now()
	keep := !c.req.close && !s.closing.Load()
	if c.req.adm.status != 0 {
		s.count(c.req.rt, c.req.adm.status, start)
		return c.write(appendGateRefusal(c.w.out[:0], &c.req.adm, keep)) == nil && keep
	}
	rt := c.req.rt.pick() // the canary's share goes to it
	r, err := c.request(rt)
	if err != nil {
		_ = c.write(appendRefusal(c.w.out[:0], err))
		return false
	}
	w := &c.w
	w.reset(rt, r, keep)
	defer func() {
		if p := recover(); p != nil {
			// As net/http: the connection is cut, and a panic other than
			// ErrAbortHandler is logged with its stack.
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				s.Router.cfg.Logger.Error("panic serving a call", "component", rt.name, "panic", fmt.Sprint(p), "stack", string(buf))
			}
			c.endWatch()
			keepOpen = false
		}
		w.release()
	}()
	n := uint64(len(rt.targets))
	first := rt.next.Add(1)
	served := false
	h := w.h
	for i := uint64(0); i < n && !served; i++ {
		t := rt.targets[(first+i)%n]
		h["X-Velo-Deployment"] = rt.depHeader
		h["X-Velo-Worker"] = t.worker
		w.worker = t.worker
		c.beginWatch(start)
		served = t.b.Serve(w, r, rt.depID, string(c.req.mount))
		c.endWatch()
	}
	if !served {
		s.count(rt, http.StatusServiceUnavailable, start)
		return c.write(appendNoInstance(w.out[:0], rt)) == nil && keep
	}
	ok := w.finish()
	s.count(rt, w.status, start)
	return ok && w.keep && c.ctx.Err() == nil
}

// request makes the *http.Request the backend serves from c.req: what a
// remote worker's handler would make of the request the fast path sends
// it (appendUpstream).
//
// Its strings (the target, the host, every header name and value) are cut
// from one string made of them all, and its header values share one
// slice, each holding room for its own value only (a handler appending to
// one copies it): a few allocations a request, not two a header line.
func (c *localClient) request(rt *route) (*http.Request, error) {
	req := &c.req
	b := append(c.strs[:0], req.uri...)
	b = append(b, req.host...)
	sp := c.spans[:0]
	for _, l := range req.lines {
		name, value, err := field(l)
		if err != nil {
			return nil, err
		}
		sp, b = appendSpan(sp, b, "", name, value, false)
	}
	if req.length >= 0 { // as net/http keeps it, and a remote worker sees it
		sp = append(sp, span{key: "Content-Length", set: true, vs: len(b)})
		b = strconv.AppendInt(b, req.length, 10)
		sp[len(sp)-1].ve = len(b)
	}
	private := rt.gate != nil && rt.gate.private
	if req.auth != nil && !private {
		sp, b = appendSpan(sp, b, "Authorization", nil, req.auth, true)
	}
	if req.apiKey != nil && !private {
		sp, b = appendSpan(sp, b, HeaderAPIKey, nil, req.apiKey, true)
	}
	for lines := req.gated[:req.split]; len(lines) > 0; {
		l, rest, _ := bytes.Cut(lines, []byte("\r\n"))
		lines = rest
		name, value, err := field(l)
		if err != nil {
			return nil, err
		}
		sp, b = appendSpan(sp, b, "", name, value, false)
	}
	c.strs, c.spans = b, sp
	fwd, client := c.fwd, ""
	if c.peer.fwd == nil { // a trusted proxy: per request
		fwd, client = fwdHeaders(req.fwd, nil)
	}

	all := string(b)
	uri := all[:len(req.uri)]
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return nil, fmt.Errorf("malformed request target %q", req.uri)
	}
	vals := make([]string, len(sp)+len(fwd))
	h := make(http.Header, len(sp)+len(fwd))
	add := func(i int, k, v string, set bool) {
		vals[i] = v
		if old, ok := h[k]; ok && !set {
			h[k] = append(old, v) // a repeated header: a slice of its own
		} else {
			h[k] = vals[i : i+1 : i+1]
		}
	}
	for i, s := range sp {
		k := s.key
		if k == "" {
			k = textproto.CanonicalMIMEHeaderKey(all[s.ns:s.ne])
		}
		add(i, k, all[s.vs:s.ve], s.set)
	}
	for i, p := range fwd {
		add(len(sp)+i, p.key, p.value, true)
	}
	remote := c.remote
	if client != "" && client != c.peer.addr.String() {
		remote = net.JoinHostPort(client, "0")
	}
	r := new(http.Request)
	*r = *c.tmpl
	r.Method = method(req.method)
	r.URL = u
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Header = h
	r.Host = all[len(req.uri) : len(req.uri)+len(req.host)]
	r.RemoteAddr = remote
	r.RequestURI = uri
	r.ContentLength, r.Body = 0, http.NoBody
	if req.length > 0 {
		c.body.Reset(req.body)
		r.ContentLength, r.Body = req.length, bodyReader{&c.body}
	}
	return r, nil
}

// span is a header of the request being made (request): its name at
// [ns:ne] of the request's strings, or key when known ahead, and its value
// at [vs:ve]; set when it replaces the values before it rather than
// adding to them.
type span struct {
	key            string
	ns, ne, vs, ve int
	set            bool
}

// appendSpan appends name (unless key is given) and value to b and their
// span to sp.
func appendSpan(sp []span, b []byte, key string, name, value []byte, set bool) ([]span, []byte) {
	s := span{key: key, set: set, ns: len(b)}
	b = append(b, name...)
	s.ne, s.vs = len(b), len(b)
	b = append(b, value...)
	s.ve = len(b)
	return append(sp, s), b
}

// bodyReader is a request body held whole in the read buffer.
type bodyReader struct{ *bytes.Reader }

func (bodyReader) Close() error { return nil }

// method returns m as a string, without allocating for the common ones.
func method(m []byte) string {
	for _, s := range [...]string{"GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		if string(m) == s {
			return s
		}
	}
	return string(m)
}

// fwdHeaders splits the forwarding lines (forwardLines) into the headers
// a component sees and the client's address, which it sees as RemoteAddr.
func fwdHeaders(lines []byte, dst []headerPair) ([]headerPair, string) {
	client := ""
	for len(lines) > 0 {
		l, rest, _ := bytes.Cut(lines, []byte("\r\n"))
		lines = rest
		name, value, err := field(l)
		if err != nil {
			continue
		}
		k := textproto.CanonicalMIMEHeaderKey(string(name))
		if k == HeaderRemoteAddr {
			client = string(value)
			continue
		}
		dst = append(dst, headerPair{k, string(value)})
	}
	return dst, client
}

// beginWatch arms the watch of the call about to run, begun at since. The
// timer is set only when it is not set already: calls that follow each
// other within watchAfter share one firing, which sets it again for what
// is left of the running call's watchAfter (startWatch), rather than
// setting and stopping it for every call.
func (c *localClient) beginWatch(since time.Time) {
	c.wmu.Lock()
	c.armed, c.since = true, since
	if !c.pending {
		c.pending = true
		c.watch.Reset(watchAfter)
	}
	c.wmu.Unlock()
}

// endWatch disarms the watch once the call returned, and stops its read
// if it began.
func (c *localClient) endWatch() {
	c.wmu.Lock()
	c.armed = false
	reading := c.reading
	c.wmu.Unlock()
	if !reading {
		return
	}
	_ = c.c.SetReadDeadline(aLongTimeAgo)
	<-c.wdone
	c.rdl = time.Time{} // the watch's: the loop sets its own again
	c.wmu.Lock()
	c.reading = false
	c.wmu.Unlock()
}

// startWatch runs on the timer's goroutine when a call lasts: it reads the
// connection until the call ends, cancelling the connection's context
// when the client goes away. What it reads (the next requests) is kept.
func (c *localClient) startWatch() {
	c.wmu.Lock()
	c.pending = false
	if !c.armed || c.reading {
		c.wmu.Unlock()
		return
	}
	if left := watchAfter - time.Since(c.since); left > 0 {
		c.pending = true // a later call's: not watched yet
		c.watch.Reset(left)
		c.wmu.Unlock()
		return
	}
	c.reading = true
	c.wdone = make(chan struct{})
	c.wmu.Unlock()
	defer close(c.wdone)
	if c.n > c.req.size() {
		return // the next request is in already: the client is there
	}
	if c.wbuf == nil {
		c.wbuf = make([]byte, 4<<10)
	}
	_ = c.c.SetReadDeadline(time.Time{})
	n, err := c.c.Read(c.wbuf)
	c.wn = n
	var ne net.Error
	if n == 0 && err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		c.cancel() // the client went away
	}
}

// localWriter is the http.ResponseWriter of an in-process call: it holds
// the answer (head and up to localBuffer of body) and writes it in one
// piece, or frames and streams it once it is larger or flushed, with the
// semantics of net/http's (WriteHeader once, Content-Type sniffed, Date,
// Content-Length held to, HEAD and bodiless statuses, trailers).
type localWriter struct {
	c      *localClient
	rt     *route
	worker []string
	h      http.Header
	out    []byte // the answer being written
	body   []byte // the body held while the head is not sent
	head   []byte // the head's status and header lines, made at WriteHeader
	keys   []string

	status   int
	wrote    bool  // WriteHeader was called (status is final)
	sent     bool  // the head went to the client
	chunked  bool  // the body goes chunked
	length   int64 // declared Content-Length, -1 none
	written  int64 // body bytes the handler wrote
	isHead   bool  // a HEAD request: writes are counted, not sent
	noBody   bool  // the status has no body
	sniff    bool  // no Content-Type: sniff the body
	date     bool  // no Date: add one
	trailers []string
	keep     bool
	err      error // the first failed write to the client
}

func (w *localWriter) reset(rt *route, r *http.Request, keep bool) {
	h := w.h
	if h == nil {
		h = make(http.Header, 8)
	}
	clear(h)
	*w = localWriter{c: w.c, rt: rt, h: h, out: w.out[:0], body: w.body[:0], head: w.head[:0], keys: w.keys[:0],
		length: -1, isHead: r.Method == "HEAD", keep: keep}
}

// release drops what the writer keeps of a large answer.
func (w *localWriter) release() {
	if cap(w.out) > 2*localBuffer {
		w.out = nil
	}
	if cap(w.body) > 2*localBuffer {
		w.body = nil
	}
}

// Header implements http.ResponseWriter.
func (w *localWriter) Header() http.Header { return w.h }

// WriteHeader implements http.ResponseWriter.
func (w *localWriter) WriteHeader(code int) { w.writeHeader(code, true) }

// writeHeader is WriteHeader; begin is unset for the 200 of a handler that
// wrote nothing, to which, as through ServeHTTP (statusWriter), the
// router adds nothing.
func (w *localWriter) writeHeader(code int, begin bool) {
	if w.wrote {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	h := w.h
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// An informational answer goes out at once; the final one follows.
		if w.err == nil {
			w.out = w.appendHeaderLines(appendStatusLine(w.out[:0], code), h)
			w.out = append(w.out, "\r\n"...)
			w.err = w.c.write(w.out)
		}
		return
	}
	w.wrote, w.status = true, code
	// As statusWriter.begin: Velo's cookies never set by a component, and
	// the sandbox on a path-mounted one.
	if begin {
		stripVeloSetCookies(h)
		if len(w.c.req.mount) > 0 {
			if v, ok := h["Content-Security-Policy"]; ok {
				h["Content-Security-Policy"] = append(v, SandboxPolicy)
			} else {
				h["Content-Security-Policy"] = sandboxCSP // shared, as the route's headers are
			}
		}
	}
	w.noBody = !bodyAllowedForStatus(code)
	if cl := h.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64); err == nil && n >= 0 {
			w.length = n
		} else {
			h.Del("Content-Length") // as net/http: a bad one is not sent
		}
	}
	if v := h.Get("Connection"); v != "" {
		if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
			w.keep = false
		}
	}
	if tr := h["Trailer"]; len(tr) > 0 {
		for _, v := range tr {
			for _, k := range strings.Split(v, ",") {
				if k = textproto.TrimString(k); k != "" {
					w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
				}
			}
		}
	}
	_, hasType := h["Content-Type"]
	w.sniff = !hasType && !w.noBody
	_, hasDate := h["Date"]
	w.date = !hasDate
	w.head = w.appendHeaderLines(appendStatusLine(w.head[:0], code), h)
}

// appendHeaderLines appends h's lines, sorted, but those of the framing,
// which the writer sets itself; invalid names are dropped and line breaks
// in values become spaces, as net/http does.
func (w *localWriter) appendHeaderLines(dst []byte, h http.Header) []byte {
	keys := w.keys[:0]
	for k := range h {
		switch k {
		case "Content-Length", "Transfer-Encoding", "Connection", "Trailer":
			continue
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.keys = keys
	for _, k := range keys {
		for _, v := range h[k] {
			dst = append(dst, k...)
			dst = append(dst, ": "...)
			dst = appendValue(dst, v)
			dst = append(dst, "\r\n"...)
		}
	}
	return dst
}

// appendValue appends a header value trimmed, CR and LF as spaces.
func appendValue(dst []byte, v string) []byte {
	v = textproto.TrimString(v)
	if strings.IndexByte(v, '\r') < 0 && strings.IndexByte(v, '\n') < 0 { // not ContainsAny: it builds a set per call
		return append(dst, v...)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		dst = append(dst, c)
	}
	return dst
}

func appendStatusLine(dst []byte, code int) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	if t := http.StatusText(code); t != "" {
		return append(append(dst, t...), "\r\n"...)
	}
	dst = append(dst, "status code "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	return append(dst, "\r\n"...)
}

// bodyAllowedForStatus is net/http's rule: no body for 1xx, 204 and 304.
func bodyAllowedForStatus(code int) bool {
	switch {
	case code >= 100 && code <= 199, code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}

// Write implements http.ResponseWriter.
func (w *localWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.noBody {
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	if w.err != nil {
		return 0, w.err
	}
	w.written += int64(len(p))
	if w.isHead {
		if w.sniff && !w.sent && len(w.body) < 512 { // net/http sniffs a HEAD's writes too
			w.body = append(w.body, p[:min(len(p), 512-len(w.body))]...)
		}
		return len(p), nil
	}
	if len(p) == 0 {
		return len(p), nil
	}
	if !w.sent && len(w.body)+len(p) <= localBuffer {
		w.body = append(w.body, p...)
		return len(p), nil
	}
	if !w.sent {
		w.out = w.appendHead(w.out[:0], false)
		w.out = w.appendChunk(w.out, w.body)
		w.body = w.body[:0]
	} else {
		w.out = w.out[:0]
	}
	w.out = w.appendChunk(w.out, p)
	if w.err = w.c.write(w.out); w.err != nil {
		return 0, w.err
	}
	return len(p), nil
}

// appendHead appends the answer's head with its framing and marks it sent.
// With whole set the handler is done and the body is what it wrote.
func (w *localWriter) appendHead(dst []byte, whole bool) []byte {
	w.sent = true
	dst = append(dst, w.head...)
	if w.sniff && len(w.body) > 0 {
		dst = append(dst, "Content-Type: "...)
		dst = append(dst, http.DetectContentType(w.body)...)
		dst = append(dst, "\r\n"...)
	}
	if w.date {
		dst = append(dst, "Date: "...)
		dst = appendDate(dst)
		dst = append(dst, "\r\n"...)
	}
	if !w.keep {
		dst = append(dst, "Connection: close\r\n"...)
	}
	trailers := len(w.trailers) > 0 || whole && w.hasPrefixTrailers()
	switch {
	case w.noBody:
		if w.length >= 0 && w.status == http.StatusNotModified {
			dst = appendLength(dst, w.length)
		}
	case w.length >= 0 && !trailers:
		dst = appendLength(dst, w.length)
	case whole && !trailers:
		dst = appendLength(dst, w.written)
	case w.isHead:
	default:
		w.chunked = true
		if len(w.trailers) > 0 {
			dst = append(dst, "Trailer: "...)
			dst = append(dst, strings.Join(w.trailers, ", ")...)
			dst = append(dst, "\r\n"...)
		}
		dst = append(dst, "Transfer-Encoding: chunked\r\n"...)
	}
	return append(dst, "\r\n"...)
}

func appendLength(dst []byte, n int64) []byte {
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, "\r\n"...)
}

func (w *localWriter) hasPrefixTrailers() bool {
	for k := range w.h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

// appendChunk appends body bytes, framed as a chunk when chunked.
func (w *localWriter) appendChunk(dst, p []byte) []byte {
	if len(p) == 0 || w.isHead || w.noBody {
		return dst
	}
	if !w.chunked {
		return append(dst, p...)
	}
	dst = strconv.AppendInt(dst, int64(len(p)), 16)
	dst = append(dst, "\r\n"...)
	dst = append(dst, p...)
	return append(dst, "\r\n"...)
}

// appendTrailers appends the end of a chunked body and the trailers.
func (w *localWriter) appendTrailers(dst []byte) []byte {
	dst = append(dst, "0\r\n"...)
	for _, k := range w.trailers {
		for _, v := range w.h[k] {
			dst = append(dst, k...)
			dst = append(dst, ": "...)
			dst = appendValue(dst, v)
			dst = append(dst, "\r\n"...)
		}
	}
	for k, vs := range w.h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidHeaderFieldName(name) {
			for _, v := range vs {
				dst = append(dst, http.CanonicalHeaderKey(name)...)
				dst = append(dst, ": "...)
				dst = appendValue(dst, v)
				dst = append(dst, "\r\n"...)
			}
		}
	}
	return append(dst, "\r\n"...)
}

// Flush implements http.Flusher.
func (w *localWriter) Flush() { _ = w.FlushError() }

// FlushError sends what is held; http.ResponseController calls it.
func (w *localWriter) FlushError() error {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil || w.sent {
		return w.err
	}
	w.out = w.appendHead(w.out[:0], false)
	w.out = w.appendChunk(w.out, w.body)
	w.body = w.body[:0]
	w.err = w.c.write(w.out)
	return w.err
}

// SetReadDeadline is for http.ResponseController: the body is read whole
// before the call, so there is nothing to time.
func (w *localWriter) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline is for http.ResponseController. Each write to the
// client is held to IdleTimeout; an earlier deadline is not kept.
func (w *localWriter) SetWriteDeadline(time.Time) error { return nil }

// finish sends what the handler left, after it returned: the whole answer
// in one write when nothing went out yet. False when the connection must
// be closed (a failed write, a body shorter than its Content-Length).
func (w *localWriter) finish() bool {
	if !w.wrote {
		w.writeHeader(http.StatusOK, false)
	}
	if w.err != nil {
		return false
	}
	switch {
	case !w.sent:
		w.out = w.appendHead(w.out[:0], true)
		w.out = w.appendChunk(w.out, w.body)
		if w.chunked {
			w.out = w.appendTrailers(w.out)
		}
	case w.chunked:
		w.out = w.appendTrailers(w.out[:0])
	default:
		w.out = w.out[:0]
	}
	if len(w.out) > 0 {
		if w.err = w.c.write(w.out); w.err != nil {
			return false
		}
	}
	if w.length >= 0 && w.written < w.length && !w.isHead && !w.noBody {
		return false // the client cannot know where the next answer starts
	}
	return true
}

// dateNow is the Date header's value, made at most once a second.
var dateNow atomic.Pointer[dateText]

type dateText struct {
	sec  int64
	text []byte
}

func appendDate(dst []byte) []byte {
	now := time.Now()
	d := dateNow.Load()
	if d == nil || d.sec != now.Unix() {
		d = &dateText{sec: now.Unix(), text: now.UTC().AppendFormat(nil, http.TimeFormat)}
		dateNow.Store(d)
	}
	return append(dst, d.text...)
}
