package shell

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// IsUpgrade reports whether r asks to upgrade to Protocol.
func IsUpgrade(r *http.Request) bool {
	return headerHas(r.Header, "Connection", "upgrade") && strings.EqualFold(strings.TrimSpace(r.Header.Get("Upgrade")), Protocol)
}

func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Upgrade answers r, an upgrade request for Protocol (see IsUpgrade), with
// 101 Switching Protocols and returns the connection, which the caller
// must close. The server's deadlines on it are cleared: a session lasts
// as long as its command.
func Upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, error) {
	if !IsUpgrade(r) {
		return nil, fmt.Errorf("not an upgrade to %s", Protocol)
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, fmt.Errorf("take over the connection: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + Protocol + "\r\n\r\n"); err != nil {
		conn.Close()
		return nil, err
	}
	if err := brw.Flush(); err != nil {
		conn.Close()
		return nil, err
	}
	if brw.Reader.Buffered() > 0 {
		return &bufferedConn{Conn: conn, r: brw.Reader}, nil
	}
	return conn, nil
}

// bufferedConn reads first what net/http had read ahead.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ErrNotUpgraded is an answer other than 101: the session did not start.
var ErrNotUpgraded = errors.New("the server did not start a shell session")

// Dial sends an upgrade request for Protocol to url (POST, with header's
// fields, Authorization among them) through hc and returns the
// connection once the server answered 101; it is closed when ctx ends. Any
// other answer is returned with its body open, for the caller to read the
// error from, and ErrNotUpgraded. hc must have no Timeout: it would cut
// the session off.
func Dial(ctx context.Context, hc *http.Client, url string, header http.Header) (io.ReadWriteCloser, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", Protocol)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, resp, ErrNotUpgraded
	}
	conn, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || !strings.EqualFold(resp.Header.Get("Upgrade"), Protocol) {
		resp.Body.Close()
		return nil, nil, fmt.Errorf("the server switched to %q, not %s", resp.Header.Get("Upgrade"), Protocol)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return &dialed{ReadWriteCloser: conn, stop: stop}, resp, nil
}

type dialed struct {
	io.ReadWriteCloser
	stop func() bool
}

func (d *dialed) Close() error {
	d.stop()
	return d.ReadWriteCloser.Close()
}

// Error is why a shell could not start, with the HTTP status that says so
// (the worker's answer before the upgrade).
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// The deploymgr → worker hop: the worker's endpoint, and the headers that
// name the deployment and the user who asked (besides the cluster token in
// Authorization).
const (
	WorkerPath       = "/internal/v1/shell"
	HeaderDeployment = "X-Velo-Shell-Deployment"
	HeaderUser       = "X-Velo-Shell-User"
)

// Unsupported explains why a runtime's components have no shell.
func Unsupported(runtime string) string {
	if runtime == "wasm" {
		return "a WebAssembly component has no shell: each call runs in a fresh sandboxed instance that ends with the call, " +
			"with no processes or filesystem to enter; velo shell is for Docker components (velo logs shows what it prints)"
	}
	return fmt.Sprintf("components of runtime %q have no shell; velo shell is for Docker components", runtime)
}
