package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/velo-run/velo/internal/shell"
	"github.com/velo-run/velo/worker"
)

// MaxShells bounds the shells open at once on one runtime (one worker).
const MaxShells = 32

// exitWait bounds how long the engine may take to report an exec's exit
// status once its output ended.
const exitWait = 10 * time.Second

// Shell runs req's command in one of the instance's running containers —
// waking or starting one first, as a request would — through the Engine
// API's exec (create, then start attached, with a TTY when req asks), and
// returns it. The command runs as the container's user, with the
// container's environment plus req.Env(), under the container's
// hardening (no capabilities, no-new-privileges, read-only root). While
// it runs the container is not paused or stopped for being idle; when the
// instance closes (a new version, the worker stopping) the shell is cut
// off. who opened it and how it ended go to the component's logs.
func (i *Instance) Shell(ctx context.Context, req shell.Request, who string) (shell.Process, error) {
	c, err := i.acquireShell(ctx)
	if err != nil {
		return nil, err
	}
	p, err := i.exec(ctx, c, req, who)
	if err != nil {
		i.releaseShell(c, nil)
		return nil, err
	}
	return p, nil
}

func (i *Instance) exec(ctx context.Context, c *ctr, req shell.Request, who string) (*execProcess, error) {
	i.mu.Lock()
	id, name := c.id, c.name
	i.mu.Unlock()
	opts := container.ExecOptions{
		Tty:          req.TTY,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: !req.TTY,
		Env:          req.Env(),
		Cmd:          req.Command(),
	}
	if req.TTY && req.Size.Rows > 0 {
		opts.ConsoleSize = &[2]uint{uint(req.Size.Rows), uint(req.Size.Cols)}
	}
	created, err := i.rt.cli.ContainerExecCreate(ctx, id, opts)
	if err != nil {
		return nil, fmt.Errorf("exec in container %s: %w", name, err)
	}
	hj, err := i.rt.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{Tty: req.TTY, ConsoleSize: opts.ConsoleSize})
	if err != nil {
		return nil, fmt.Errorf("start exec in container %s: %w", name, err)
	}
	p := &execProcess{i: i, c: c, id: created.ID, hj: hj, tty: req.TTY, who: who, container: name, start: time.Now(), status: -1}
	if req.TTY && req.Size.Rows > 0 {
		// Engines before API 1.42 ignore ConsoleSize.
		_ = p.Resize(ctx, req.Size)
	}
	i.mu.Lock()
	closed := i.closed
	if !closed {
		i.shells[p] = struct{}{}
	}
	i.mu.Unlock()
	if closed {
		hj.Close()
		return nil, errClosed
	}
	mode := "no TTY"
	if req.TTY {
		mode = fmt.Sprintf("TTY %d×%d", req.Size.Cols, req.Size.Rows)
	}
	i.event("shell opened by %s in container %s (%s): %s", who, name, mode, req)
	i.log.Info("shell opened", "user", who, "container", name, "command", req.String())
	return p, nil
}

// acquireShell returns a running container for a shell, counted in its
// shells rather than its requests: Close does not wait for shells, it
// cuts them off.
func (i *Instance) acquireShell(ctx context.Context) (*ctr, error) {
	r := i.rt
	r.mu.Lock()
	if r.shells >= MaxShells {
		r.mu.Unlock()
		return nil, fmt.Errorf("%d shells are open on this worker, the most it allows", MaxShells)
	}
	r.shells++
	r.mu.Unlock()
	c, _, err := i.acquire(ctx)
	if err != nil {
		r.mu.Lock()
		r.shells--
		r.mu.Unlock()
		return nil, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	c.shells++
	c.inflight--
	i.inflight--
	if i.closed && i.inflight == 0 {
		close(i.drained)
	}
	return c, nil
}

func (i *Instance) releaseShell(c *ctr, p *execProcess) {
	i.mu.Lock()
	c.shells--
	c.lastUsed = time.Now()
	if p != nil {
		delete(i.shells, p)
	}
	i.mu.Unlock()
	i.rt.mu.Lock()
	i.rt.shells--
	i.rt.mu.Unlock()
}

// cutShells ends every open shell of the instance, for Close.
func (i *Instance) cutShells(why string) {
	i.mu.Lock()
	open := make([]*execProcess, 0, len(i.shells))
	for p := range i.shells {
		open = append(open, p)
	}
	i.mu.Unlock()
	for _, p := range open {
		p.cut(why)
		p.Close()
	}
}

// execProcess is a shell's command: an exec attached over a hijacked
// connection to the engine.
type execProcess struct {
	i         *Instance
	c         *ctr
	id        string
	hj        types.HijackedResponse
	tty       bool
	who       string
	container string
	start     time.Time

	mu     sync.Mutex
	status int    // -1 until Wait knows it
	why    string // why it was cut off, if it was
	closed bool
}

var (
	_ shell.Process  = (*execProcess)(nil)
	_ worker.Sheller = (*Instance)(nil)
)

func (p *execProcess) Write(b []byte) (int, error) { return p.hj.Conn.Write(b) }

// CloseStdin ends the command's input. On a terminal that is the EOF
// character (Ctrl-D), as typed: closing the engine's stdin would hang the
// terminal up, and output still on its way would be lost.
func (p *execProcess) CloseStdin() error {
	if p.tty {
		_, err := p.hj.Conn.Write([]byte{0x04})
		return err
	}
	return p.hj.CloseWrite()
}

func (p *execProcess) Resize(ctx context.Context, s shell.Size) error {
	if !p.tty {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return p.i.rt.cli.ContainerExecResize(ctx, p.id, container.ResizeOptions{Height: uint(s.Rows), Width: uint(s.Cols)})
}

func (p *execProcess) Output(stdout, stderr io.Writer) error {
	var err error
	if p.tty {
		_, err = io.Copy(stdout, p.hj.Reader)
	} else {
		_, err = stdcopy.StdCopy(stdout, stderr, p.hj.Reader)
	}
	p.mu.Lock()
	closed, why := p.closed, p.why
	p.mu.Unlock()
	switch {
	case why != "":
		return errors.New("shell cut off: " + why)
	case closed || errors.Is(err, io.EOF):
		return nil
	}
	return err
}

// Wait asks the engine for the exit status, which it knows shortly after
// the output ends.
func (p *execProcess) Wait(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, exitWait)
	defer cancel()
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		info, err := p.i.rt.cli.ContainerExecInspect(ctx, p.id)
		if err != nil {
			return -1, fmt.Errorf("exit status: %w", err)
		}
		if !info.Running {
			p.mu.Lock()
			p.status = info.ExitCode
			p.mu.Unlock()
			return info.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("exit status: the engine still reports the command running after %s", exitWait)
		case <-time.After(delay):
		}
	}
}

// cut records why the session is being cut off, for the log line Close
// writes.
func (p *execProcess) cut(why string) {
	p.mu.Lock()
	if p.why == "" {
		p.why = why
	}
	p.mu.Unlock()
}

// Close closes the connection to the engine (the command's stdin and
// terminal with it), gives the container back and logs how the shell
// ended. Only the first call does anything.
func (p *execProcess) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	status, why := p.status, p.why
	p.mu.Unlock()
	p.hj.Close()
	p.i.releaseShell(p.c, p)
	took := time.Since(p.start).Round(time.Second)
	switch {
	case why != "":
		p.i.event("shell of %s in container %s cut off after %s: %s", p.who, p.container, took, why)
	case status >= 0:
		p.i.event("shell of %s in container %s ended after %s: exit status %d", p.who, p.container, took, status)
	default:
		p.i.event("shell of %s in container %s closed after %s, before the command ended (the client went away)", p.who, p.container, took)
	}
	p.i.log.Info("shell closed", "user", p.who, "container", p.container, "status", status)
	return nil
}
