package router

import (
	"bytes"
	"net"
	"sync/atomic"
	"time"
)

// connLoop is a connection served by the fast path's request loop on a
// goroutine of its own, not on an event loop: the in-process path's plain
// connections (localClient, velo up) and TLS connections no event loop
// takes (tlsClient). It keeps what the loop needs; its owner, a
// connServer, parses, answers and refuses.
type connLoop struct {
	s    *FastServer
	c    net.Conn // requests are read from it, answers written to it
	raw  net.Conn // the socket under c, which Shutdown closes
	in   []byte   // in[:n] read, not yet served
	n    int
	req  fastReq
	idle atomic.Bool // waiting for a request's first bytes

	// The read and write deadlines last set on c, zero when not known
	// (see deadline).
	rdl, wdl time.Time
}

// deadline sets one of c's deadlines (set, its last value at *last) to
// now+d, unless the one set is no later than that and no more than d/16
// earlier: each wait is held to d less a sixteenth at worst, and a
// connection's answers and idle waits, which follow each other far faster
// than that, do not each reset a timer of the runtime's.
func (l *connLoop) deadline(last *time.Time, now time.Time, d time.Duration, set func(time.Time) error) {
	t := now.Add(d)
	if !last.IsZero() && !last.After(t) && t.Sub(*last) <= d>>4 {
		return
	}
	*last = t
	_ = set(t)
}

// connServer is what a connLoop's owner does with the requests read.
type connServer interface {
	// parse parses the request at in[:n] into req.
	parse() (verdict, error)
	// exchange answers req; false when the connection is to be closed.
	exchange() bool
	// next readies req for the next request once in holds what follows
	// the answered one.
	next()
	// refusal is the answer that refuses a bad request, err saying why.
	refusal(err error) []byte
}

// serve runs the request loop on l for cs; true when the connection is to
// be closed, false when it went to net/http.
func (l *connLoop) serve(cs connServer) bool {
	s := l.s
	var headSince time.Time
	for {
		if l.n > 0 {
			switch v, err := cs.parse(); v {
			case takeFast:
				headSince = time.Time{}
				if !cs.exchange() {
					return true
				}
				l.n = copy(l.in, l.in[l.req.size():l.n])
				cs.next()
				if len(l.in) > loopClientBuffer && l.n <= loopClientBuffer {
					nb := make([]byte, loopClientBuffer)
					copy(nb, l.in[:l.n])
					l.in = nb
				}
				continue
			case leaveFast:
				// A body the fast path takes (maxFastBody) but the
				// buffer does not hold: the buffer grows for this one.
				if need := len(l.req.head) + int(l.req.length); l.req.rt != nil && l.req.length > 0 && need > len(l.in) {
					l.in = append(l.in[:l.n:l.n], make([]byte, need-l.n)...)
					continue
				}
				l.handoff()
				return false
			case refuse:
				_ = l.c.SetWriteDeadline(time.Now().Add(s.HeadTimeout))
				_, _ = l.c.Write(cs.refusal(err))
				return true
			}
			if l.n == len(l.in) {
				l.handoff() // not reached: parse leaves full buffers
				return false
			}
		}
		now := time.Now()
		if l.n == 0 {
			l.idle.Store(true)
			if s.closing.Load() {
				return true
			}
			l.deadline(&l.rdl, now, s.IdleTimeout, l.c.SetReadDeadline)
		} else if headSince.IsZero() {
			headSince = now
			l.deadline(&l.rdl, now, s.HeadTimeout, l.c.SetReadDeadline)
		}
		m, err := l.c.Read(l.in[l.n:])
		l.idle.Store(false)
		if m == 0 && err != nil {
			return true
		}
		l.n += m
	}
}

// handoff gives the connection to net/http with the bytes read so far.
func (l *connLoop) handoff() {
	_ = l.c.SetDeadline(time.Time{})
	l.s.fallback.push(l.s.screen(l.c, bytes.Clone(l.in[:l.n])))
}

// track adds l to the connections Shutdown closes when idle (add), or
// takes it out; false when the server is closing already.
func (s *FastServer) track(l *connLoop, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.connLoops, l)
		return true
	}
	if s.closing.Load() {
		return false
	}
	if s.connLoops == nil {
		s.connLoops = map[*connLoop]struct{}{}
	}
	s.connLoops[l] = struct{}{}
	return true
}

// closeConnLoops closes the connections of request loops waiting for a
// request (all of them when force is set); the others close after their
// answer.
func (s *FastServer) closeConnLoops(force bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for l := range s.connLoops {
		if force || l.idle.Load() {
			l.raw.Close()
		}
	}
}
