//go:build linux

package router

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The event loops serve the fast path as nginx's workers do: each loop is
// one thread that waits on its own epoll set and, for each socket that is
// ready, reads, parses, writes and moves on, never parking a goroutine per
// request. With a goroutine per connection, every request woke its
// goroutine twice through the runtime's poller and scheduler, which cost
// the router its tail latency against nginx on a busy machine.
//
// A loop owns its client connections and its own idle connections to
// workers; nothing in it is shared with another loop or locked, except
// the route table (read through its atomic pointer), the workers' down
// marks and the hit counters, as on the goroutine path. Work that would
// block is done elsewhere: dialing a worker runs on a goroutine and posts
// its connection back; a request the fast path does not take goes with
// its connection to net/http (Fallback), and an answer whose length is not
// known ahead (chunked, or up to the close) is copied on a goroutine, which
// then gives the client connection back to a loop.
//
// TLS connections are served the same way once their handshake is done
// (on a goroutine, see fasttls.go): the loop reads through the
// connection's *tls.Conn, whose records come straight from the socket
// (tlsIO), and encrypts each answer into records when it sends it.

const loopSweep = 100 * time.Millisecond

// startLoops starts the event loops, or returns false when the server
// serves each connection on its own goroutine.
func (s *FastServer) startLoops() bool {
	n := s.Loops
	if n < 0 {
		return false
	}
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	var loops []*loop
	for range n {
		l, err := newLoop(s)
		if err != nil {
			s.Router.cfg.Logger.Warn("event loop unavailable, serving connections on goroutines", "err", err)
			for _, l := range loops {
				unix.Close(l.wake)
				unix.Close(l.ep)
			}
			return false
		}
		loops = append(loops, l)
	}
	s.mu.Lock()
	s.loops = loops
	s.mu.Unlock()
	for _, l := range loops {
		s.wg.Add(1)
		go l.run()
	}
	return true
}

// dispatch gives an accepted connection to a loop, or returns false to
// serve it on a goroutine.
func (s *FastServer) dispatch(c net.Conn) bool {
	if len(s.loops) == 0 {
		return false
	}
	if _, ok := c.RemoteAddr().(*net.TCPAddr); !ok {
		return false
	}
	p := s.Router.peerOf(c, "http")
	if !s.toLoop(c, nil, nil, p, nil) {
		// The loop is gone (it failed): net/http serves.
		go s.fallback.push(s.screen(c, nil))
	}
	return true
}

// dispatchTLS gives a TLS connection whose handshake is done to a loop,
// or returns false to serve it on its goroutine.
func (s *FastServer) dispatchTLS(tc *tls.Conn, tio *tlsIO) bool {
	if len(s.loops) == 0 {
		return false
	}
	if _, ok := tio.remote.(*net.TCPAddr); !ok {
		return false
	}
	return s.toLoop(tc, tc, tio, s.Router.peerOf(tc, "https"), nil)
}

// toLoop gives connection c (tc over tio for TLS) to the next loop, with
// pre read from it already. False when it stays with the caller, c as it
// was (on a failure to take the socket out of c, or a loop gone), and
// true when the loop has it or it is closed.
func (s *FastServer) toLoop(c net.Conn, tc *tls.Conn, tio *tlsIO, p peer, pre []byte) bool {
	under := c
	if tio != nil {
		under = tio.nc
	}
	fd, err := detach(under)
	if err != nil {
		return false
	}
	if tio != nil {
		tio.nc, tio.fd = nil, fd
	}
	l := s.loops[s.next.Add(1)%uint64(len(s.loops))]
	if l.post(func() { l.addClient(fd, p, tc, tio, pre) }) {
		return true
	}
	nc, err := attachConn(fd)
	if err != nil {
		return true // closed
	}
	if tio != nil {
		tio.nc, tio.fd = nc, -1
		return false
	}
	// A plain connection is a new net.Conn: hand it on here.
	go s.fallback.push(s.screen(nc, pre))
	return true
}

// stopLoops tells the loops to stop: idle connections are closed at once,
// busy ones after their answer, or all at once when force is set.
func (s *FastServer) stopLoops(force bool) {
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	for _, l := range loops {
		l.post(func() { l.stop(force) })
	}
}

// detach takes the socket out of c: a duplicate of its descriptor, which
// stays non-blocking, and c closed (which takes it out of the runtime's
// poller).
func detach(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, errors.New("not a socket")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	cerr := rc.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return -1, cerr
	}
	if err != nil {
		return -1, err
	}
	c.Close()
	return fd, nil
}

// attachConn makes a net.Conn of a socket the loop lets go of; fd is
// closed either way.
func attachConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	return net.FileConn(f)
}

type loop struct {
	s    *FastServer
	ep   int // epoll descriptor
	wake int // eventfd that wakes the loop for its inbox

	mu     sync.Mutex
	inbox  []func()
	exited bool

	// Owned by the loop's thread.
	fds      map[int32]any // *loopConn or *upConn
	idle     map[*Endpoint][]*upConn
	clients  int
	stopping bool
	now      time.Time
	swept    time.Time
}

func newLoop(s *FastServer) (*loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return nil, os.NewSyscallError("eventfd", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return &loop{s: s, ep: ep, wake: wake, fds: map[int32]any{}, idle: map[*Endpoint][]*upConn{}}, nil
}

// post runs f on the loop's thread; false when the loop has exited.
func (l *loop) post(f func()) bool {
	l.mu.Lock()
	if l.exited {
		l.mu.Unlock()
		return false
	}
	l.inbox = append(l.inbox, f)
	first := len(l.inbox) == 1
	l.mu.Unlock()
	if first {
		var one = [8]byte{1}
		_, _ = unix.Write(l.wake, one[:])
	}
	return true
}

func (l *loop) run() {
	defer l.s.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer func() {
		if p := recover(); p != nil {
			l.s.Router.cfg.Logger.Error("event loop panic", "panic", p)
		}
		l.exit()
	}()
	events := make([]unix.EpollEvent, 256)
	var inbox []func()
	for {
		n, err := unix.EpollWait(l.ep, events, int(loopSweep/time.Millisecond))
		if err != nil && err != unix.EINTR {
			l.s.Router.cfg.Logger.Error("event loop", "err", os.NewSyscallError("epoll_wait", err))
			return
		}
		l.now = time.Now()
		for _, ev := range events[:max(n, 0)] {
			switch x := l.fds[ev.Fd].(type) {
			case *loopConn:
				l.clientEvent(x, ev.Events)
			case *upConn:
				l.upEvent(x, ev.Events)
			case nil:
				if int(ev.Fd) == l.wake {
					var b [8]byte
					_, _ = unix.Read(l.wake, b[:])
					l.mu.Lock()
					inbox, l.inbox = l.inbox, inbox[:0]
					l.mu.Unlock()
					for i, f := range inbox {
						f()
						inbox[i] = nil
					}
				}
			}
		}
		if l.now.Sub(l.swept) >= loopSweep {
			l.sweep()
			l.swept = l.now
		}
		if l.stopping && l.clients == 0 {
			return
		}
	}
}

// exit closes everything the loop still holds; posts that come later are
// refused (and their work undone by the poster).
func (l *loop) exit() {
	l.mu.Lock()
	l.exited = true
	inbox := l.inbox
	l.inbox = nil
	l.mu.Unlock()
	l.stopping = true
	for _, f := range inbox {
		f() // new clients are closed at once, dialed connections kept idle
	}
	for _, x := range l.fds {
		switch x := x.(type) {
		case *loopConn:
			l.closeClient(x)
		case *upConn:
			l.closeUp(x)
		}
	}
	unix.Close(l.wake)
	unix.Close(l.ep)
}

func (l *loop) stop(force bool) {
	l.stopping = true
	for _, x := range l.fds {
		if c, ok := x.(*loopConn); ok && (force || (!c.busy && c.n == 0 && c.pending() == 0)) {
			l.closeClient(c)
		}
	}
}

func (l *loop) register(fd int) error {
	return unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)})
}

// loopConn is a client connection served by a loop.
type loopConn struct {
	fd       int
	peer     peer
	in       []byte // the read buffer; in[:n] holds what was read
	n        int
	readable bool // the socket may have bytes to read
	eof      bool // the client closed its side (or the socket failed)
	out      []byte
	outOff   int       // out[outOff:] is still to send
	outSince time.Time // when the client last fell behind
	closed   bool
	serving  bool // serveClient is on the stack
	keep     bool
	// tls and tio are set on a TLS connection: in[:n] and out hold
	// plaintext, tio.out the records still to send.
	tls *tls.Conn
	tio *tlsIO
	// headSince is when the first bytes of a request head came, idleSince
	// when the connection became idle.
	headSince, idleSince time.Time

	// The exchange under way.
	busy    bool
	req     fastReq
	ans     answer
	rt      *route
	first   uint64 // round-robin start
	tries   uint64 // targets tried
	attempt int    // connections tried on the current target
	b       *Endpoint
	worker  string
	up      *upConn
	start   time.Time
	status  int
	left    int64 // answer body bytes still to copy
}

func (c *loopConn) pending() int {
	n := len(c.out) - c.outOff
	if c.tio != nil {
		n += c.tio.pending()
	}
	return n
}

// secure adds to the answer head at c.out[start:] what an answer on TLS
// carries (HSTS).
func (l *loop) secure(c *loopConn, start int) {
	if c.tls != nil {
		c.out = withLine(c.out, start, l.s.hstsLine())
	}
}

// upConn is a connection to a worker, idle or serving one exchange.
type upConn struct {
	fd       int
	b        *Endpoint
	in       []byte
	n        int
	readable bool
	eof      bool
	out      []byte // the request
	outOff   int
	c        *loopConn // the client of the exchange under way
	reused   bool
	headDone bool
	closed   bool
	lastUsed time.Time
	deadline time.Time
}

func (u *upConn) consume(n int) {
	u.n = copy(u.in, u.in[n:u.n])
}

// addClient takes a client connection, with pre read from it already; tc
// and tio are set for TLS.
func (l *loop) addClient(fd int, p peer, tc *tls.Conn, tio *tlsIO, pre []byte) {
	if l.stopping {
		unix.Close(fd)
		return
	}
	c := &loopConn{fd: fd, peer: p, in: make([]byte, max(loopClientBuffer, len(pre))), keep: true, idleSince: l.now, tls: tc, tio: tio}
	c.n = copy(c.in, pre)
	if c.idleSince.IsZero() {
		c.idleSince = time.Now()
	}
	if err := l.register(fd); err != nil {
		unix.Close(fd)
		return
	}
	l.fds[int32(fd)] = c
	l.clients++
	if tc != nil || c.n > 0 {
		// crypto/tls may hold a request read with the handshake's
		// last flight, which no readiness event will announce; pre
		// may hold requests.
		c.readable = true
		l.serveClient(c)
	}
}

// forgetClient takes c out of the loop without closing its socket.
func (l *loop) forgetClient(c *loopConn) {
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, c.fd, nil)
	delete(l.fds, int32(c.fd))
	l.clients--
	c.closed = true
}

func (l *loop) closeClient(c *loopConn) {
	if c.closed {
		return
	}
	if u := c.up; u != nil {
		l.closeUp(u) // mid-answer: the connection cannot be reused
	}
	if c.tls != nil && !c.eof && c.pending() == 0 {
		// close_notify, if the socket takes it now.
		if c.tls.CloseWrite() == nil {
			_, _ = sendSome(c.fd, c.tio.out[c.tio.outOff:])
		}
	}
	l.forgetClient(c)
	unix.Close(c.fd)
}

// forgetUp takes u out of the loop without closing its socket.
func (l *loop) forgetUp(u *upConn) {
	_ = unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, u.fd, nil)
	delete(l.fds, int32(u.fd))
	u.closed = true
	if u.c != nil {
		u.c.up = nil
		u.c = nil
	}
}

func (l *loop) closeUp(u *upConn) {
	if u.closed {
		return
	}
	l.forgetUp(u)
	unix.Close(u.fd)
}

func (l *loop) clientEvent(c *loopConn, ev uint32) {
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.eof = true
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.readable = true
		if c.tio != nil {
			c.tio.drained, c.tio.eof = false, c.eof
		}
	}
	if c.pending() > 0 {
		if ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) == 0 || !l.flushClient(c) || c.pending() > 0 {
			return
		}
		// Caught up: the answer under way goes on, or the next request.
		if c.busy {
			if c.up != nil && c.up.headDone {
				l.pumpUp(c.up)
			}
			return
		}
	}
	if !c.busy {
		l.serveClient(c)
	}
}

// serveClient reads and parses requests and starts their exchanges, as
// long as the connection is idle and has bytes to read.
func (l *loop) serveClient(c *loopConn) {
	if c.serving {
		return // the caller's loop goes on
	}
	c.serving = true
	defer func() { c.serving = false }()
	for !c.closed && !c.busy && c.pending() == 0 {
		if !c.keep || l.stopping {
			l.closeClient(c)
			return
		}
		if c.n > 0 {
			switch v, err := l.s.parseRequest(&c.req, c.in[:c.n], len(c.in), &c.peer); v {
			case takeFast:
				c.headSince = time.Time{}
				if c.req.adm.status != 0 {
					l.refuseGate(c)
					continue
				}
				l.startExchange(c)
				continue
			case leaveFast:
				// A body the fast path takes (maxFastBody) but the
				// buffer does not hold: the buffer grows for this one.
				if need := len(c.req.head) + int(c.req.length); c.req.rt != nil && c.req.length > 0 && need > len(c.in) {
					c.in = append(c.in[:c.n:c.n], make([]byte, need-c.n)...)
					continue
				}
				l.handoff(c)
				return
			case refuse:
				start := len(c.out)
				c.out, c.n, c.keep = appendRefusal(c.out, err), 0, false
				l.secure(c, start)
				if !l.flushClient(c) {
					return
				}
				continue
			}
			if c.headSince.IsZero() {
				c.headSince = l.now
			}
		}
		if !c.readable {
			return
		}
		if c.n == len(c.in) {
			l.handoff(c) // not reached: parseRequest leaves full buffers
			return
		}
		if c.tls != nil {
			m, err := c.tls.Read(c.in[c.n:])
			if c.tio.pending() > 0 && !l.flushClient(c) {
				return // crypto/tls answered something itself (a key update)
			}
			if m == 0 {
				if err == errWouldBlock {
					c.readable = false // no whole record yet: the next event
				} else {
					l.closeClient(c) // closed, or a bad record
				}
				return
			}
			c.n += m
			continue
		}
		m, err := recvSome(c.fd, c.in[c.n:])
		switch {
		case err != nil:
			l.closeClient(c)
			return
		case m == 0:
			c.readable = false
			return
		}
		if m < len(c.in)-c.n && !c.eof {
			c.readable = false // drained: the next bytes come with an event
		}
		c.n += m
	}
}

// recv reads what a loop's TLS socket has into p for crypto/tls: once
// the socket was read empty since its last readiness event, errWouldBlock
// without a system call (the next bytes come with an event, as for a
// plain client).
func (t *tlsIO) recv(p []byte) (int, error) {
	if t.drained {
		return 0, errWouldBlock
	}
	m, err := recvSome(t.fd, p)
	switch {
	case err == io.ErrUnexpectedEOF:
		return 0, io.EOF
	case err != nil:
		return 0, err
	case m == 0:
		t.drained = true
		return 0, errWouldBlock
	case m < len(p) && !t.eof:
		t.drained = true
	}
	return m, nil
}

// recvSome reads what the socket has into p: 0 and no error when it has
// nothing now, io.ErrUnexpectedEOF when the peer closed.
func recvSome(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		m, errno := rawRecv(uintptr(fd), p)
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return 0, nil
		case errno != 0:
			return 0, os.NewSyscallError("read", errno)
		case m == 0:
			return 0, io.ErrUnexpectedEOF
		}
		return m, nil
	}
}

func (l *loop) startExchange(c *loopConn) {
	c.busy = true
	c.start = l.now
	c.rt = c.req.rt.pick() // the canary's share goes to it
	c.first = c.rt.next.Add(1)
	c.tries, c.status = 0, 0
	c.keep = !c.req.close && !l.stopping
	l.nextTarget(c)
}

// refuseGate answers a call the gate refused.
func (l *loop) refuseGate(c *loopConn) {
	c.busy = true
	c.start = l.now
	c.rt = c.req.rt
	c.keep = !c.req.close && !l.stopping
	start := len(c.out)
	c.out = appendGateRefusal(c.out, &c.req.adm, c.keep)
	l.secure(c, start)
	c.status = c.req.adm.status
	l.done(c)
}

// nextTarget sends the request to the next worker of the route that is
// up, or answers 503 when none is left.
func (l *loop) nextTarget(c *loopConn) {
	n := uint64(len(c.rt.targets))
	for c.tries < n {
		t := c.rt.targets[(c.first+c.tries)%n]
		c.tries++
		b := t.ep
		if !b.mayTry() {
			continue
		}
		c.b, c.worker, c.attempt = b, t.worker[0], 0
		l.sendTo(c)
		return
	}
	start := len(c.out)
	c.out = appendNoInstance(c.out, c.rt)
	l.secure(c, start)
	c.status = 503
	l.done(c)
}

// sendTo sends the request on an idle connection to c.b, or dials one.
func (l *loop) sendTo(c *loopConn) {
	b := c.b
	list := l.idle[b]
	for len(list) > 0 {
		u := list[len(list)-1]
		list[len(list)-1] = nil
		list = list[:len(list)-1]
		if u.closed {
			continue
		}
		if l.now.Sub(u.lastUsed) >= b.rm.cfg.IdleTimeout {
			l.closeUp(u)
			continue
		}
		l.idle[b] = list
		l.attach(c, u, true)
		return
	}
	l.idle[b] = list
	l.dial(c)
}

func (l *loop) dial(c *loopConn) {
	b := c.b
	go func() {
		fd := -1
		nc, err := b.rm.dialer.Dial("tcp", b.host)
		if err == nil {
			fd, err = detach(nc)
		}
		if !l.post(func() { l.dialed(c, b, fd, err) }) && fd >= 0 {
			unix.Close(fd)
		}
	}()
}

func (l *loop) dialed(c *loopConn, b *Endpoint, fd int, err error) {
	if err != nil {
		b.markDown()
		l.closeIdle(b)
		if !c.closed {
			l.nextTarget(c)
		}
		return
	}
	u := &upConn{fd: fd, b: b, in: make([]byte, connBuffer), lastUsed: l.now}
	if err := l.register(fd); err != nil {
		unix.Close(fd)
		if !c.closed {
			l.nextTarget(c)
		}
		return
	}
	l.fds[int32(fd)] = u
	if c.closed {
		l.idle[b] = append(l.idle[b], u)
		return
	}
	l.attach(c, u, false)
}

// closeIdle closes the loop's idle connections to b.
func (l *loop) closeIdle(b *Endpoint) {
	for _, u := range l.idle[b] {
		l.closeUp(u)
	}
	delete(l.idle, b)
}

func (l *loop) attach(c *loopConn, u *upConn, reused bool) {
	c.up, u.c, u.reused, u.headDone = u, c, reused, false
	c.b.downUntil.Store(0)
	u.deadline = l.now.Add(c.b.rm.cfg.ResponseTimeout)
	u.out = appendUpstream(u.out[:0], c.b, &c.req, c.rt)
	u.outOff = 0
	if l.flushUp(u) && u.readable {
		l.pumpUp(u)
	}
}

// flushUp sends what is left of the request; false when it failed (and
// the failure was handled).
func (l *loop) flushUp(u *upConn) bool {
	m, err := sendSome(u.fd, u.out[u.outOff:])
	u.outOff += m
	if err != nil {
		l.upFailed(u, writeError{err})
		return false
	}
	return true // the rest, if any, when the socket is writable
}

// flushClient sends what the client has not been sent yet; false when the
// connection failed (and is closed).
func (l *loop) flushClient(c *loopConn) bool {
	if c.tls != nil {
		return l.flushTLS(c)
	}
	m, err := sendSome(c.fd, c.out[c.outOff:])
	c.outOff += m
	switch {
	case err != nil:
		l.closeClient(c)
		return false
	case c.outOff < len(c.out):
		if c.outSince.IsZero() {
			c.outSince = l.now
		}
	default:
		c.out, c.outOff, c.outSince = c.out[:0], 0, time.Time{}
	}
	return true
}

// flushTLS encrypts what is queued in c.out (in records of up to 16 KiB,
// one for a small answer) and sends what the socket takes of the records.
func (l *loop) flushTLS(c *loopConn) bool {
	t := c.tio
	if c.outOff < len(c.out) {
		if _, err := c.tls.Write(c.out[c.outOff:]); err != nil {
			l.closeClient(c)
			return false
		}
		c.out, c.outOff = c.out[:0], 0
	}
	m, err := sendSome(c.fd, t.out[t.outOff:])
	t.outOff += m
	switch {
	case err != nil:
		l.closeClient(c)
		return false
	case t.outOff < len(t.out):
		if c.outSince.IsZero() {
			c.outSince = l.now
		}
	default:
		t.out, t.outOff, c.outSince = t.out[:0], 0, time.Time{}
	}
	return true
}

// sendSome sends as much of p as the socket takes now.
func sendSome(fd int, p []byte) (int, error) {
	sent := 0
	for sent < len(p) {
		m, errno := rawSend(uintptr(fd), p[sent:])
		switch errno {
		case 0:
			sent += m
		case syscall.EINTR:
		case syscall.EAGAIN:
			return sent, nil
		default:
			return sent, os.NewSyscallError("write", errno)
		}
	}
	return sent, nil
}

func (l *loop) upEvent(u *upConn, ev uint32) {
	if ev&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		u.eof = true
	}
	if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		u.readable = true
	}
	if u.c == nil {
		if u.readable {
			l.closeUp(u) // idle: closed by the worker, or bytes nobody asked for
		}
		return
	}
	if u.outOff < len(u.out) && ev&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !l.flushUp(u) {
		return
	}
	if u.readable {
		l.pumpUp(u)
	}
}

// pumpUp moves a worker's answer along: reads what its socket has, parses
// the head, and copies the body to the client as fast as the client
// takes it.
func (l *loop) pumpUp(u *upConn) {
	for !u.closed && u.c != nil {
		c := u.c
		if !u.headDone {
			if u.n > 0 {
				done, interim, err := c.ans.parse(u.in[:u.n], c.req.method)
				switch {
				case err != nil:
					l.upFailed(u, err)
					return
				case interim:
					u.consume(c.ans.headLen)
					continue
				case done:
					if !l.answerHead(c, u) {
						return
					}
					continue
				case u.n == len(u.in):
					l.upFailed(u, errors.New("answer head too long"))
					return
				}
			}
		} else {
			if u.n > 0 && c.pending() < maxQueued {
				k := int(min(int64(u.n), c.left))
				c.out = append(c.out, u.in[:k]...)
				u.consume(k)
				c.left -= int64(k)
				if c.left == 0 {
					l.answered(c, u)
					return
				}
				continue
			}
			if c.pending() > 0 {
				if !l.flushClient(c) {
					return
				}
				if c.pending() > 0 {
					return // the client is behind: on with it when it catches up
				}
				continue
			}
		}
		if !u.readable {
			return
		}
		m, err := recvSome(u.fd, u.in[u.n:])
		switch {
		case err != nil:
			l.upFailed(u, fmt.Errorf("read answer: %w", err))
			return
		case m == 0:
			u.readable = false
			return
		}
		if m < len(u.in)-u.n && !u.eof {
			u.readable = false
		}
		u.n += m
		u.deadline = l.now.Add(u.b.rm.cfg.ResponseTimeout)
	}
}

// answerHead acts on a worker's answer head: the head goes to the client
// and the body follows (true), or the exchange moves on without the
// worker's connection (false).
func (l *loop) answerHead(c *loopConn, u *upConn) bool {
	res := &c.ans.res
	if res.status == StatusNotServed && res.notServed {
		l.closeUp(u)
		l.nextTarget(c)
		return false
	}
	if !res.noBody && res.length < 0 {
		l.slowLane(c, u)
		return false
	}
	start := len(c.out)
	c.out = appendAnswerHead(c.out, &c.ans, c.rt, c.worker, c.keep, &c.req)
	l.secure(c, start)
	u.consume(c.ans.headLen)
	u.headDone, c.status = true, res.status
	c.left = res.length
	if res.noBody {
		c.left = 0
	}
	if c.left == 0 {
		l.answered(c, u)
		return false
	}
	return true
}

// answered: the whole answer is on its way to the client; the worker's
// connection goes back to the idle ones.
func (l *loop) answered(c *loopConn, u *upConn) {
	// Reused only if the answer ended where the request did: nothing
	// more was read, and the request was all sent.
	keep := c.ans.res.keepAlive && u.n == 0 && !u.eof && u.outOff == len(u.out) && !l.stopping
	u.c, c.up = nil, nil
	if keep && len(l.idle[u.b]) < u.b.rm.cfg.MaxIdlePerWorker {
		u.lastUsed = l.now
		u.headDone = false
		l.idle[u.b] = append(l.idle[u.b], u)
	} else {
		l.closeUp(u)
	}
	l.done(c)
}

// upFailed handles a worker connection that failed. Once the answer's
// head was passed on, the client's copy is cut too; before, the request
// is sent again when it never reached the worker or may be repeated,
// else the client gets 502.
func (l *loop) upFailed(u *upConn, err error) {
	c := u.c
	l.closeUp(u)
	if c == nil {
		return
	}
	if u.headDone {
		l.closeClient(c)
		return
	}
	if replayable(string(c.req.method)) || (u.reused && stale(err)) {
		c.b.closeIdle()
		l.closeIdle(c.b)
		if c.attempt == 0 {
			c.attempt++
			l.sendTo(c)
			return
		}
		l.nextTarget(c)
		return
	}
	start := len(c.out)
	c.out = l.s.appendBadGateway(c.out, c.rt, c.worker, err)
	l.secure(c, start)
	c.status = 502
	l.done(c)
}

// done ends the exchange once its answer is queued: counted, the request
// dropped from the buffer, and the connection on to its next request when
// the client has the answer.
func (l *loop) done(c *loopConn) {
	l.s.count(c.rt, c.status, c.start)
	size := c.req.size()
	c.n = copy(c.in, c.in[size:c.n])
	if len(c.in) > loopClientBuffer && c.n <= loopClientBuffer {
		nb := make([]byte, loopClientBuffer)
		copy(nb, c.in[:c.n])
		c.in = nb
	}
	// The buffers go on to the next request: a gated call's header
	// lines would otherwise be allocated anew on every call.
	c.req = fastReq{lines: c.req.lines[:0], scratch: c.req.scratch[:0], gated: c.req.gated[:0]}
	c.rt, c.b, c.busy = nil, nil, false
	c.idleSince = l.now
	if !l.flushClient(c) || c.pending() > 0 {
		return
	}
	l.serveClient(c)
}

// handoff gives the connection to net/http with the bytes read so far.
func (l *loop) handoff(c *loopConn) {
	l.forgetClient(c)
	pre := bytes.Clone(c.in[:c.n])
	nc, err := l.attachClient(c)
	if err != nil {
		return
	}
	go l.s.fallback.push(l.s.screen(nc, pre))
}

// attachClient makes a net.Conn of a client connection the loop lets go
// of: its socket, or the *tls.Conn over it.
func (l *loop) attachClient(c *loopConn) (net.Conn, error) {
	nc, err := attachConn(c.fd)
	if err != nil || c.tls == nil {
		return nc, err
	}
	c.tio.nc, c.tio.fd = nc, -1
	return c.tls, nil
}

// slowLane hands an exchange whose answer has no length to a goroutine,
// which copies it (chunked to the client) and then gives the client
// connection back to a loop.
func (l *loop) slowLane(c *loopConn, u *upConn) {
	clientRest := bytes.Clone(c.in[c.req.size():c.n])
	p, tc, tio := c.peer, c.tls, c.tio
	answer := bytes.Clone(u.in[:u.n])
	req := &fastReq{method: bytes.Clone(c.req.method), mount: bytes.Clone(c.req.mount)}
	rt, b, worker, keep, start := c.rt, c.b, c.worker, c.keep, c.start
	l.forgetUp(u)
	l.forgetClient(c)
	uc, uerr := attachConn(u.fd)
	cc, cerr := l.attachClient(c)
	extra := ""
	if c.tls != nil {
		extra = l.s.hstsLine()
	}
	if uerr != nil || cerr != nil {
		for _, x := range []net.Conn{uc, cc} {
			if x != nil {
				x.Close()
			}
		}
		return
	}
	l.s.wg.Add(1)
	go func() {
		defer l.s.wg.Done()
		status, ok := l.s.copyUnsized(cc, uc, answer, req, rt, worker, keep, extra, b.rm.cfg.ResponseTimeout)
		l.s.count(rt, status, start)
		switch {
		case ok && keep && len(l.s.loops) > 0 && !l.s.closing.Load():
			// Back to a loop (this one, or another) for its next requests.
			if !l.s.toLoop(cc, tc, tio, p, clientRest) {
				l.s.fallback.push(l.s.screen(cc, clientRest))
			}
		case ok && keep:
			l.s.fallback.push(l.s.screen(cc, clientRest))
		default:
			cc.Close()
		}
	}()
}

// copyUnsized copies a worker's answer of unknown length (read from uc
// after pre) to the client, chunked, with the header line extra (HSTS on
// TLS, or ""), and reports whether it went out whole. The worker's
// connection is closed after.
func (s *FastServer) copyUnsized(cc, uc net.Conn, pre []byte, req *fastReq, rt *route, worker string, keep bool, extra string, timeout time.Duration) (int, bool) {
	defer uc.Close()
	br := bufio.NewReaderSize(&prefixReader{pre: pre, r: uc}, connBuffer)
	var a answer
	_ = uc.SetReadDeadline(time.Now().Add(timeout))
	res, err := a.read(br, req.method)
	if err != nil {
		return http.StatusBadGateway, false
	}
	bw := bufio.NewWriterSize(cc, loopClientBuffer)
	bw.Write(withLine(appendAnswerHead(bw.AvailableBuffer(), &a, rt, worker, keep, req), 0, extra))
	_, _ = br.Discard(a.headLen)
	var src io.Reader = br
	if res.chunked {
		src = &chunkedBody{br: br}
	}
	cw := httputil.NewChunkedWriter(bw)
	buf := make([]byte, connBuffer)
	for {
		n, err := src.Read(buf)
		_ = uc.SetReadDeadline(time.Now().Add(timeout))
		_ = cc.SetWriteDeadline(time.Now().Add(s.IdleTimeout))
		if n > 0 {
			if _, werr := cw.Write(buf[:n]); werr != nil || bw.Flush() != nil {
				return res.status, false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return res.status, false
		}
	}
	cw.Close()
	bw.WriteString("\r\n")
	_ = cc.SetWriteDeadline(time.Time{})
	return res.status, bw.Flush() == nil
}

// sweep closes connections past their deadlines.
func (l *loop) sweep() {
	for _, x := range l.fds {
		switch x := x.(type) {
		case *loopConn:
			switch idle := l.s.IdleTimeout; {
			case x.pending() > 0:
				if !x.outSince.IsZero() && l.now.Sub(x.outSince) > idle {
					l.closeClient(x) // not reading its answer
				}
			case x.busy:
			case x.n > 0:
				if !x.headSince.IsZero() && l.now.Sub(x.headSince) > l.s.HeadTimeout {
					l.closeClient(x)
				}
			case l.now.Sub(x.idleSince) > idle:
				l.closeClient(x)
			}
		case *upConn:
			switch {
			case x.c == nil:
				if l.now.Sub(x.lastUsed) > x.b.rm.cfg.IdleTimeout {
					l.closeUp(x)
				}
			case l.now.After(x.deadline):
				l.upFailed(x, fmt.Errorf("read answer: %w", os.ErrDeadlineExceeded))
			}
		}
	}
	// Idle lists drop the connections closed since (by the worker, or
	// idle too long), and the lists of workers no longer used.
	for b, list := range l.idle {
		list = slices.DeleteFunc(list, func(u *upConn) bool { return u.closed })
		if len(list) == 0 {
			delete(l.idle, b)
		} else {
			l.idle[b] = list
		}
	}
}
