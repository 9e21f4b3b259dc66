package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
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

// SetSecretMarked sets the secret key of a component and marks it for the
// component's previews (NAME--pr-N) or unmarks it; SetSecret keeps the mark
// a replaced value had.
func (c *Client) SetSecretMarked(ctx context.Context, name, key, value string, preview bool) (api.Secret, error) {
	var out api.Secret
	p := componentPath(name, "/secrets/"+url.PathEscape(key)) + "?preview=" + strconv.FormatBool(preview)
	err := c.do(ctx, http.MethodPut, p, strings.NewReader(value), "text/plain; charset=utf-8", &out)
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

// APIKeys lists a component's API keys (never their secrets).
func (c *Client) APIKeys(ctx context.Context, name string) ([]api.APIKey, error) {
	var out []api.APIKey
	err := c.do(ctx, http.MethodGet, componentPath(name, "/keys"), nil, "", &out)
	return out, err
}

// CreateAPIKey makes an API key for a component; the answer holds its
// secret, which is never shown again.
func (c *Client) CreateAPIKey(ctx context.Context, name, label string) (api.NewAPIKey, error) {
	var out api.NewAPIKey
	body, _ := json.Marshal(map[string]string{"label": label})
	err := c.do(ctx, http.MethodPost, componentPath(name, "/keys"), bytes.NewReader(body), "application/json", &out)
	return out, err
}

// DeleteAPIKey revokes a component's API key.
func (c *Client) DeleteAPIKey(ctx context.Context, name, id string) error {
	return c.do(ctx, http.MethodDelete, componentPath(name, "/keys/"+url.PathEscape(id)), nil, "", nil)
}
