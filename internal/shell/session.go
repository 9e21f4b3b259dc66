package shell

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Process is a command started for a shell by what runs it (the docker
// runtime: an exec in a container). Serve calls Write, CloseStdin and
// Resize from one goroutine and Output from another, then Wait, then Close;
// Close may also come at any time, from any goroutine, to cut the session
// off, and must make Output return.
type Process interface {
	// Write sends p to the command's stdin.
	Write(p []byte) (int, error)
	// CloseStdin ends the command's stdin.
	CloseStdin() error
	// Resize sets the size of the command's terminal.
	Resize(ctx context.Context, s Size) error
	// Output copies what the command writes until it is done: with a TTY
	// everything to stdout, else stdout and stderr apart.
	Output(stdout, stderr io.Writer) error
	// Wait returns the command's exit status once Output is done.
	Wait(ctx context.Context) (int, error)
	// Close ends the session: stdin and the terminal are closed, which
	// ends an interactive shell (it gets SIGHUP or EOF).
	Close() error
}

// ErrClientGone ends a session whose client went away or broke the
// protocol before the command ended.
var ErrClientGone = errors.New("the client went away")

// Serve runs the server side of a session on conn for p until the command
// ends, the client goes away or ctx is done, and closes both. It returns
// the command's exit status, or -1 and why there was none: the client
// went away (ErrClientGone), ctx ended, or Output or Wait failed, which
// the client was told in an Error frame.
func Serve(ctx context.Context, conn io.ReadWriteCloser, p Process) (int, error) {
	defer conn.Close()
	out := &frames{w: conn}
	var mu sync.Mutex
	var cut error // why the session was cut off before the command's output ended
	finished, closed := false, false
	closeP := func() {
		mu.Lock()
		c := !closed
		closed = true
		mu.Unlock()
		if c {
			p.Close()
		}
	}
	stop := func(why error) {
		mu.Lock()
		if !finished && cut == nil {
			cut = why
		}
		mu.Unlock()
		closeP()
	}
	defer closeP()
	unwatch := context.AfterFunc(ctx, func() { stop(fmt.Errorf("session ended: %w", context.Cause(ctx))) })
	defer unwatch()

	go func() {
		fr := NewReader(conn)
		for {
			kind, payload, err := fr.Next()
			if err != nil {
				stop(fmt.Errorf("%w: %v", ErrClientGone, err))
				return
			}
			switch kind {
			case KindStdin:
				_, err = p.Write(payload)
			case KindEOF:
				err = p.CloseStdin()
			case KindResize:
				err = p.Resize(ctx, sizeOf(payload))
			default:
				stop(fmt.Errorf("%w: it sent a %q frame", ErrClientGone, kind))
				return
			}
			if err != nil {
				// The command no longer reads (it exited, or closed its
				// stdin): what follows is the exit status.
				continue
			}
		}
	}()

	oerr := p.Output(out.writer(KindStdout), out.writer(KindStderr))
	mu.Lock()
	finished = true
	why := cut
	mu.Unlock()
	if why != nil {
		if !errors.Is(why, ErrClientGone) {
			_ = WriteFrame(out, KindError, []byte(why.Error()))
		}
		return -1, why
	}
	if oerr != nil {
		_ = WriteFrame(out, KindError, []byte(oerr.Error()))
		return -1, oerr
	}
	status, err := p.Wait(ctx)
	if err != nil {
		_ = WriteFrame(out, KindError, []byte(err.Error()))
		return -1, err
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(status)))
	_ = WriteFrame(out, KindExit, b[:])
	return status, nil
}

// frames writes whole frames to w, one at a time.
type frames struct {
	mu sync.Mutex
	w  io.Writer
}

func (f *frames) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.w.Write(p)
}

// writer is an io.Writer that sends what it is given as frames of kind.
func (f *frames) writer(kind byte) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		n := 0
		for len(p) > 0 {
			k := min(len(p), MaxPayload)
			if err := WriteFrame(f, kind, p[:k]); err != nil {
				return n, err
			}
			n += k
			p = p[k:]
		}
		return n, nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// RemoteError is the server's Error frame: why the command could not run
// or was cut off.
type RemoteError struct{ Message string }

func (e *RemoteError) Error() string { return e.Message }

// Attach runs the terminal side of a session on conn until the server's
// Exit or Error frame, and closes conn: what is read from in goes to the
// command's stdin (its end as an EOF frame), each size received on resize
// is sent as a Resize frame, and the command's output goes to stdout and
// stderr. It returns the exit status, or a *RemoteError from the server,
// or the connection's failure. Reading in may go on in a goroutine after
// Attach returns, until in ends.
func Attach(conn io.ReadWriteCloser, in io.Reader, stdout, stderr io.Writer, resize <-chan Size) (int, error) {
	defer conn.Close()
	out := &frames{w: conn}
	done := make(chan struct{})
	defer close(done)
	if in != nil {
		go func() {
			buf := make([]byte, MaxPayload)
			for {
				n, err := in.Read(buf)
				if n > 0 {
					if WriteFrame(out, KindStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					select {
					case <-done:
					default:
						_ = WriteFrame(out, KindEOF, nil)
					}
					return
				}
			}
		}()
	}
	if resize != nil {
		go func() {
			for {
				select {
				case <-done:
					return
				case s := <-resize:
					if WriteFrame(out, KindResize, s.payload()) != nil {
						return
					}
				}
			}
		}()
	}
	fr := NewReader(conn)
	for {
		kind, payload, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the connection ended before the command's exit status")
			}
			return -1, err
		}
		switch kind {
		case KindStdout:
			_, err = stdout.Write(payload)
		case KindStderr:
			_, err = stderr.Write(payload)
		case KindExit:
			return int(int32(binary.BigEndian.Uint32(payload))), nil
		case KindError:
			return -1, &RemoteError{Message: string(payload)}
		default:
			return -1, fmt.Errorf("%w: the server sent a %q frame", ErrFrame, kind)
		}
		if err != nil {
			return -1, fmt.Errorf("write output: %w", err)
		}
	}
}

// Splice relays a session between two connections, byte for byte, until
// either side ends, then closes both; it is deploymgr between the client
// and the worker. It returns when both directions are done.
func Splice(a, b io.ReadWriteCloser) {
	var wg sync.WaitGroup
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	wg.Go(func() {
		_, _ = io.Copy(a, b)
		closeBoth()
	})
	wg.Go(func() {
		_, _ = io.Copy(b, a)
		closeBoth()
	})
	wg.Wait()
}
