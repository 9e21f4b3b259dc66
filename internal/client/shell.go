package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"

	"github.com/velo-run/velo/internal/shell"
)

// Shell starts req's command in a running container of component name and
// returns the session's connection (package shell's frames; run it with
// shell.Attach). A refusal — no such component, a WebAssembly one, no
// running instance — is an *Error with the server's reason. The session
// ends when ctx does; the http.Client's Timeout, if any, bounds it too.
func (c *Client) Shell(ctx context.Context, name string, req shell.Request) (io.ReadWriteCloser, error) {
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	h.Set("User-Agent", "velo-cli")
	u := c.server + "/api/v1" + componentPath(name, "/shell")
	if q := req.Query().Encode(); q != "" {
		u += "?" + q
	}
	conn, resp, err := shell.Dial(ctx, c.http, u, h)
	switch {
	case errors.Is(err, shell.ErrNotUpgraded):
		defer resp.Body.Close()
		return nil, readError(resp)
	case err != nil && errors.Is(err, syscall.ECONNREFUSED):
		return nil, &UnreachableError{Server: c.server, Err: err}
	case err != nil:
		return nil, fmt.Errorf("shell %s: %w", name, err)
	}
	return conn, nil
}
