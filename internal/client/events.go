package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/velo-run/velo/internal/api"
)

// Invocations lists a component's newest queued calls, in state when it
// is not "" (queued, running, succeeded, failed, dead).
func (c *Client) Invocations(ctx context.Context, name, state string) ([]api.Invocation, error) {
	var out []api.Invocation
	path := componentPath(name, "/invocations")
	if state != "" {
		path += "?state=" + url.QueryEscape(state)
	}
	err := c.do(ctx, http.MethodGet, path, nil, "", &out)
	return out, err
}

// Invocation returns one queued call with its attempts and answer.
func (c *Client) Invocation(ctx context.Context, id int64) (api.Invocation, error) {
	var out api.Invocation
	err := c.do(ctx, http.MethodGet, "/invocations/"+strconv.FormatInt(id, 10), nil, "", &out)
	return out, err
}

// Replay runs a queued call again.
func (c *Client) Replay(ctx context.Context, id int64) (api.Invocation, error) {
	var out api.Invocation
	err := c.do(ctx, http.MethodPost, "/invocations/"+strconv.FormatInt(id, 10)+"/replay", nil, "", &out)
	return out, err
}

// Discard drops a queued call.
func (c *Client) Discard(ctx context.Context, id int64) error {
	return c.do(ctx, http.MethodDelete, "/invocations/"+strconv.FormatInt(id, 10), nil, "", nil)
}
