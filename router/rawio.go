package router

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// rawIO reads and writes a TCP connection of the hot path with fewer trips
// through the kernel and the Go scheduler than net.Conn's methods:
//
//   - When armed, the next Write is made from inside the connection's
//     RawConn.Read and returns only once the connection is readable (or its
//     read deadline passes, or it closes). A proxy writes a request and
//     then reads the answer; a plain read right after the write nearly
//     always finds nothing yet, fails with EAGAIN and only then parks on
//     the poller. The write must happen inside the callback, after
//     RawConn.Read has reset the poller's readiness: an answer arriving
//     between a separate write and the wait would have its readiness
//     cleared and never be noticed.
//
//   - The read and write calls on the non-blocking socket are raw system
//     calls. They never block, but on loopback a write also delivers the
//     data to the receiver and takes tens of microseconds; as a regular
//     system call that long, the runtime hands the goroutine's P to
//     another thread and sysmon polls every 20µs, which cost more than a
//     tenth of the router's CPU.
//
// Deadlines and Close work as with the net.Conn: the waiting is the
// poller's.
type rawIO struct {
	c     net.Conn
	rc    syscall.RawConn // nil when the connection offers none
	armed bool

	// The state of the read and of the write under way (one of each may
	// run at a time, as with a net.Conn), and the callbacks handed to rc,
	// made once so that a call allocates nothing.
	rp, wp          []byte
	rn, wn          int
	rerr, werr      error
	waited          bool
	readFn, writeFn func(fd uintptr) bool
	writeAwaitFn    func(fd uintptr) bool
}

func newRawIO(c net.Conn) *rawIO {
	w := &rawIO{c: c}
	if sc, ok := c.(syscall.Conn); ok && rawSockets {
		if rc, err := sc.SyscallConn(); err == nil {
			w.rc = rc
		}
	}
	w.readFn, w.writeFn, w.writeAwaitFn = w.read, w.write, w.writeAwait
	return w
}

// flushAwait flushes bw, which writes to w, and returns once the answer is
// there to read: a request to a worker, or an answer to a client whose
// next request is awaited. The same holding of the read side as arm's.
func (w *rawIO) flushAwait(bw *bufio.Writer) error {
	w.arm()
	err := bw.Flush()
	w.armed = false // left armed if bw had nothing to write
	return err
}

// arm makes the next Write wait for the connection to become readable.
// That Write holds the connection's read side: arm only when no Read is
// under way (the router reads and writes a connection from one goroutine).
func (w *rawIO) arm() { w.armed = w.rc != nil }

func (w *rawIO) Read(p []byte) (int, error) {
	if w.rc == nil {
		return w.c.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.rp, w.rn, w.rerr = p, 0, nil
	err := w.rc.Read(w.readFn)
	n, rerr := w.rn, w.rerr
	w.rp, w.rerr = nil, nil
	if err != nil {
		return 0, w.opError("read", err)
	}
	return n, rerr
}

// read is RawConn.Read's callback: false to wait for readability.
func (w *rawIO) read(fd uintptr) bool {
	for {
		m, errno := rawRecv(fd, w.rp)
		switch errno {
		case 0:
			w.rn = m
			if m == 0 {
				w.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.rerr = w.opError("read", os.NewSyscallError("read", errno))
			return true
		}
	}
}

func (w *rawIO) Write(p []byte) (int, error) {
	armed := w.armed
	w.armed = false
	if w.rc == nil {
		return w.c.Write(p)
	}
	w.wp, w.wn, w.werr, w.waited = p, 0, nil, false
	defer func() { w.wp, w.werr = nil, nil }()
	if armed {
		err := w.rc.Read(w.writeAwaitFn)
		if w.werr != nil {
			return w.wn, w.werr
		}
		if w.wn == len(p) {
			// A failed wait (deadline, close) shows on the next read.
			_ = err
			return w.wn, nil
		}
	}
	if err := w.rc.Write(w.writeFn); err != nil {
		return w.wn, w.opError("write", err)
	}
	return w.wn, w.werr
}

// write is RawConn.Write's callback: false to wait for writability.
func (w *rawIO) write(fd uintptr) bool {
	for w.wn < len(w.wp) {
		m, errno := rawSend(fd, w.wp[w.wn:])
		switch errno {
		case 0:
			w.wn += m
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.werr = w.opError("write", os.NewSyscallError("write", errno))
			return true
		}
	}
	return true
}

// writeAwait is RawConn.Read's callback for an armed write: it writes,
// then waits for readability. Whatever it could not write (a full socket
// buffer, an error) is left to write.
func (w *rawIO) writeAwait(fd uintptr) bool {
	if w.waited {
		return true // woken: readable
	}
	w.waited = true
	w.write(fd)
	return w.werr != nil || w.wn < len(w.wp)
}

func (w *rawIO) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: w.c.LocalAddr(), Addr: w.c.RemoteAddr(), Err: err}
}
