package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/velo-run/velo/internal/api"
)

// Secrets lists a component's secrets: names and when they were set.
func (c *Client) Secrets(ctx context.Context, name string) ([]api.Secret, error) {
	var out []api.Secret
	err := c.do(ctx, http.MethodGet, componentPath(name, "/secrets"), nil, "", &out)
	return out, err
}

// SetSecret sets (creates or replaces) the secret key of a component.
func (c *Client) SetSecret(ctx context.Context, name, key, value string) (api.Secret, error) {
	var out api.Secret
	err := c.do(ctx, http.MethodPut, componentPath(name, "/secrets/"+url.PathEscape(key)), strings.NewReader(value), "text/plain; charset=utf-8", &out)
	return out, err
}

// DeleteSecret removes the secret key of a component.
func (c *Client) DeleteSecret(ctx context.Context, name, key string) error {
	return c.do(ctx, http.MethodDelete, componentPath(name, "/secrets/"+url.PathEscape(key)), nil, "", nil)
}

// RotateKey re-encrypts every secret under the server's sealing key.
func (c *Client) RotateKey(ctx context.Context) (api.RotateKey, error) {
	var out api.RotateKey
	err := c.do(ctx, http.MethodPost, "/secrets/rotate-key", nil, "", &out)
	return out, err
}
