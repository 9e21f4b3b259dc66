package router

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"time"
)

// The TLS fast path. Each accepted connection shakes hands on a goroutine
// of its own (crypto/tls; a full handshake is the costly part of TLS and
// blocks on the client's flights). A client that negotiated h2 then goes
// to Fallback. An HTTP/1.1 one goes to an event loop (loop_linux.go), as
// a plain connection does: the loop reads the socket when epoll says so,
// crypto/tls decrypts the records it holds (tlsIO: reads that would block
// return a temporary error, which crypto/tls takes as "no record yet"),
// the fast path parses and forwards as on plain HTTP, and the answer is
// encrypted into records the loop sends. So an HTTPS call costs no
// goroutine wake-ups: run on a goroutine per connection, each call woke
// its goroutine twice through the runtime's poller and scheduler (the
// client's request, then the worker's answer), and under load those
// waits (p99 1.3 ms each, 10 ms at worst, the scheduler's netpoll
// interval when every P is busy) set the tail against nginx.
//
// Without event loops (other platforms, Loops < 0) a goroutine per TLS
// connection runs the same request loop over the *tls.Conn: heads parsed
// in place by parseRequest, the same routes, gate and forwarding lines
// (X-Forwarded-Proto https), the request written to a kept-alive worker
// connection in one write and the answer written back in one TLS write
// where it fits. Either way, what the fast path does not take goes with
// its connection to Fallback as on plain HTTP (screened, with the
// connection's TLS state given to the handler).

// tlsClient is a TLS connection served by the fast path.
type tlsClient struct {
	connLoop
	peer peer
	out  []byte // the answer being written
	up   []byte // the request to the worker
}

// hstsLine is the Strict-Transport-Security header line of answers on TLS.
func (s *FastServer) hstsLine() string { return s.hsts }

// withLine inserts line (ending in CRLF) after the status line of the
// answer head at dst[start:].
func withLine(dst []byte, start int, line string) []byte {
	if line == "" {
		return dst
	}
	i := bytes.Index(dst[start:], []byte("\r\n"))
	if i < 0 {
		return dst
	}
	at := start + i + 2
	dst = append(dst, line...)
	copy(dst[at+len(line):], dst[at:len(dst)-len(line)])
	copy(dst[at:], line)
	return dst
}

// tlsIO is the transport under a TLS connection of the fast path. The
// handshake runs over nc; once a loop takes the socket (nc nil, fd set),
// crypto/tls reads records straight from the non-blocking socket (recv)
// and writes them into out, which the loop sends. Handed back to net/http,
// nc is set again (the socket attached anew). Only one goroutine at a time
// uses it: the handshake's, then the loop's, then net/http's.
type tlsIO struct {
	nc            net.Conn
	fd            int
	local, remote net.Addr
	drained       bool // the socket was read empty since it last became readable
	eof           bool // the client shut its side: read to the end
	out           []byte
	outOff        int
}

// errWouldBlock is what a read of tlsIO returns when the socket has no
// more bytes now. It is temporary, so crypto/tls keeps the partial record
// it holds and reads on at the next call.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "no bytes to read yet" }
func (wouldBlock) Timeout() bool   { return true }
func (wouldBlock) Temporary() bool { return true }

func (t *tlsIO) Read(p []byte) (int, error) {
	if t.nc != nil {
		return t.nc.Read(p)
	}
	return t.recv(p)
}

func (t *tlsIO) Write(p []byte) (int, error) {
	if t.nc != nil {
		return t.nc.Write(p)
	}
	t.out = append(t.out, p...)
	return len(p), nil
}

// pending is how many encrypted bytes are still to send.
func (t *tlsIO) pending() int { return len(t.out) - t.outOff }

// Close closes nc; the loop closes its socket itself.
func (t *tlsIO) Close() error {
	if t.nc != nil {
		return t.nc.Close()
	}
	return nil
}

func (t *tlsIO) LocalAddr() net.Addr  { return t.local }
func (t *tlsIO) RemoteAddr() net.Addr { return t.remote }

// Deadlines apply on nc; a loop keeps its own (sweep).
func (t *tlsIO) SetDeadline(d time.Time) error {
	if t.nc != nil {
		return t.nc.SetDeadline(d)
	}
	return nil
}

func (t *tlsIO) SetReadDeadline(d time.Time) error {
	if t.nc != nil {
		return t.nc.SetReadDeadline(d)
	}
	return nil
}

func (t *tlsIO) SetWriteDeadline(d time.Time) error {
	if t.nc != nil {
		return t.nc.SetWriteDeadline(d)
	}
	return nil
}

// serveTLS shakes hands on an accepted connection and serves it.
func (s *FastServer) serveTLS(nc net.Conn) {
	defer s.wg.Done()
	tio := &tlsIO{nc: nc, fd: -1, local: nc.LocalAddr(), remote: nc.RemoteAddr()}
	tc := tls.Server(tio, s.TLS)
	_ = nc.SetDeadline(time.Now().Add(s.HeadTimeout))
	ctx, cancel := context.WithTimeout(context.Background(), s.HeadTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		tc.Close()
		return
	}
	_ = nc.SetDeadline(time.Time{})
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		s.fallback.push(tc) // net/http serves HTTP/2
		return
	}
	if s.dispatchTLS(tc, tio) {
		return
	}
	c := &tlsClient{connLoop: connLoop{s: s, c: tc, raw: tc.NetConn(), in: make([]byte, loopClientBuffer)}, peer: s.Router.peerOf(tc, "https")}
	if !s.track(&c.connLoop, true) {
		tc.Close()
		return
	}
	closeIt := c.serve(c)
	s.track(&c.connLoop, false)
	if closeIt {
		tc.Close()
	}
}

func (c *tlsClient) parse() (verdict, error) {
	return c.s.parseRequest(&c.req, c.in[:c.n], len(c.in), &c.peer)
}

func (c *tlsClient) next() { c.req = fastReq{lines: c.req.lines[:0]} }

func (c *tlsClient) refusal(err error) []byte {
	c.out = withLine(appendRefusal(c.out[:0], err), 0, c.s.hstsLine())
	return c.out
}

// exchange answers the parsed request c.req: the gate's refusal, or the
// answer of the first worker of the route that gives one (503 when none
// does). False when the connection is to be closed after it.
func (c *tlsClient) exchange() bool {
	s := c.s
	start := time.Now()
	keep := !c.req.close && !s.closing.Load()
	if c.req.adm.status != 0 {
		c.out = withLine(appendGateRefusal(c.out[:0], &c.req.adm, keep), 0, s.hstsLine())
		s.count(c.req.rt, c.req.adm.status, start)
		return c.write(c.out) && keep
	}
	rt := c.req.rt.pick() // the canary's share goes to it
	first := rt.next.Add(1)
	n := uint64(len(rt.targets))
	for tries := uint64(0); tries < n; tries++ {
		t := rt.targets[(first+tries)%n]
		b := t.ep
		if !b.mayTry() {
			continue
		}
		for attempt := 0; attempt < 2; attempt++ {
			status, next, ok := c.try(b, rt, t.worker[0], keep, start)
			if next == nextNone {
				s.count(rt, status, start)
				return ok && keep
			}
			if next == nextWorker {
				break
			}
		}
	}
	c.out = withLine(appendNoInstance(c.out[:0], rt), 0, s.hstsLine())
	s.count(rt, http.StatusServiceUnavailable, start)
	return c.write(c.out) && keep
}

// What try leaves to do.
const (
	nextNone   = iota // answered (or the client's connection failed)
	nextAgain         // send again, on a fresh connection to the same worker
	nextWorker        // try the next worker
)

// try sends the request to worker b and copies its answer to the client.
// ok is false when the client's connection failed or the answer could not
// be passed on whole.
func (c *tlsClient) try(b *Endpoint, rt *route, worker string, keep bool, start time.Time) (status, next int, ok bool) {
	s := c.s
	req := &c.req
	wc, reused, err := b.get(context.Background())
	if err != nil {
		b.markDown() // never connected: the request did not reach it
		return 0, nextWorker, true
	}
	b.downUntil.Store(0)
	timeout := b.rm.cfg.ResponseTimeout
	c.up = appendUpstream(c.up[:0], b, req, rt)
	wc.extendDeadline(start, timeout)
	_, err = wc.c.Write(c.up)
	var res *response
	if err == nil {
		res, err = wc.ans.read(wc.br, req.method)
	} else {
		err = writeError{err}
	}
	if err != nil {
		wc.c.Close()
		if replayable(string(req.method)) || (reused && stale(err)) {
			b.closeIdle()
			return 0, nextAgain, true
		}
		c.out = withLine(s.appendBadGateway(c.out[:0], rt, worker, err), 0, s.hstsLine())
		return http.StatusBadGateway, nextNone, c.write(c.out)
	}
	if res.status == StatusNotServed && res.notServed {
		wc.c.Close()
		return 0, nextWorker, true
	}
	c.out = withLine(appendAnswerHead(c.out[:0], &wc.ans, rt, worker, keep, req), 0, s.hstsLine())
	if _, err := wc.br.Discard(wc.ans.headLen); err != nil {
		wc.c.Close()
		return res.status, nextNone, false
	}
	switch {
	case !res.noBody && res.length < 0:
		ok = c.copyUnsized(wc, res, timeout)
		wc.c.Close()
		return res.status, nextNone, ok
	case res.noBody || res.length == 0:
		ok = c.write(c.out)
	case int64(wc.br.Buffered()) >= res.length && res.length <= maxQueued:
		// The whole body is in: head and body in one write.
		body, _ := wc.br.Peek(int(res.length))
		c.out = append(c.out, body...)
		_, _ = wc.br.Discard(int(res.length))
		ok = c.write(c.out)
	default:
		ok = c.write(c.out) && c.copySized(wc, res.length, timeout)
		if !ok {
			wc.c.Close()
			return res.status, nextNone, false
		}
	}
	if res.keepAlive && wc.br.Buffered() == 0 {
		b.put(wc)
	} else {
		wc.c.Close()
	}
	return res.status, nextNone, ok
}

// write writes p to the client, within IdleTimeout.
func (c *tlsClient) write(p []byte) bool {
	_ = c.c.SetWriteDeadline(time.Now().Add(c.s.IdleTimeout))
	_, err := c.c.Write(p)
	return err == nil
}

// copySized copies the rest of a body of length n from the worker.
func (c *tlsClient) copySized(wc *wconn, n int64, timeout time.Duration) bool {
	for n > 0 {
		if wc.br.Buffered() == 0 {
			if _, err := wc.br.Peek(1); err != nil {
				return false
			}
			wc.extendDeadline(time.Now(), timeout)
		}
		p, _ := wc.br.Peek(int(min(int64(wc.br.Buffered()), n)))
		if !c.write(p) {
			return false
		}
		_, _ = wc.br.Discard(len(p))
		n -= int64(len(p))
	}
	return true
}

// copyUnsized copies a body of unknown length (chunked, or up to the
// close) to the client, chunked, after the head in c.out, flushing as it
// comes.
func (c *tlsClient) copyUnsized(wc *wconn, res *response, timeout time.Duration) bool {
	var src io.Reader = wc.br
	if res.chunked {
		src = &chunkedBody{br: wc.br}
	}
	bw := bufio.NewWriterSize(c.c, loopClientBuffer)
	bw.Write(c.out)
	cw := httputil.NewChunkedWriter(bw)
	buf := make([]byte, connBuffer)
	for {
		n, err := src.Read(buf)
		wc.extendDeadline(time.Now(), timeout)
		_ = c.c.SetWriteDeadline(time.Now().Add(c.s.IdleTimeout))
		if n > 0 {
			if _, werr := cw.Write(buf[:n]); werr != nil || bw.Flush() != nil {
				return false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return false
		}
	}
	cw.Close()
	bw.WriteString("\r\n")
	return bw.Flush() == nil
}
