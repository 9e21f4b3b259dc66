package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/velo-run/velo/internal/api"
)

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Client calls one Velo server. It is safe for concurrent use.
type Client struct {
	server string // base URL without trailing slash, e.g. http://127.0.0.1:8080
	token  string
	http   *http.Client
}

// New returns a client for the Velo server at server (e.g.
// "http://127.0.0.1:8080"), authenticating with the bearer token when it is
// not empty. A nil httpClient means a plain &http.Client{}; its Timeout, if
// any, also bounds FollowLogs connections, so leave it zero for streaming.
func New(server, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	return &Client{server: strings.TrimRight(server, "/"), token: token, http: httpClient}
}

// Server is the base URL the client talks to.
func (c *Client) Server() string { return c.server }

// Error is a non-2xx answer from the server.
type Error struct {
	Status  int    // HTTP status code
	Message string // the server's {"error": …} message, or the status text
}

// Error returns the server's message as is.
func (e *Error) Error() string { return e.Message }

// UnreachableError means the server refused the connection: most likely
// nothing listens at that address.
type UnreachableError struct {
	Server string
	Err    error
}

// Error says what to check, without the dial details.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach Velo at %s (is \"velo up\" running?)", e.Server)
}

// Unwrap returns the underlying dial error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// Components lists every component.
func (c *Client) Components(ctx context.Context) ([]api.Component, error) {
	var out []api.Component
	err := c.do(ctx, http.MethodGet, "/components", nil, "", &out)
	return out, err
}

// Component returns one component with its live deployment and instances.
func (c *Client) Component(ctx context.Context, name string) (api.Component, error) {
	var out api.Component
	err := c.do(ctx, http.MethodGet, componentPath(name, ""), nil, "", &out)
	return out, err
}

// Deploy uploads archive, a .tar.gz of the component's tree, as a new
// deployment of the component called name. The server answers as soon as
// the deployment is recorded; poll Deployment to follow it.
func (c *Client) Deploy(ctx context.Context, name string, archive io.Reader) (api.Deployment, error) {
	var out api.Deployment
	err := c.do(ctx, http.MethodPost, componentPath(name, "/deployments"), archive, "application/gzip", &out)
	return out, err
}

// Deployments lists a component's deployments.
func (c *Client) Deployments(ctx context.Context, name string) ([]api.Deployment, error) {
	var out []api.Deployment
	err := c.do(ctx, http.MethodGet, componentPath(name, "/deployments"), nil, "", &out)
	return out, err
}

// Deployment returns one deployment, build log included.
func (c *Client) Deployment(ctx context.Context, id int64) (api.Deployment, error) {
	var out api.Deployment
	err := c.do(ctx, http.MethodGet, "/deployments/"+strconv.FormatInt(id, 10), nil, "", &out)
	return out, err
}

// WaitDeployment returns deployment id once its status or liveness
// differs from seen's, or as it is after wait (at most a minute): the
// server holds the request until then (GET /deployments/{id}?wait=), so
// following a deployment costs a request per change rather than one per
// poll. A server without the wait answers at once.
func (c *Client) WaitDeployment(ctx context.Context, id int64, seen api.Deployment, wait time.Duration) (api.Deployment, error) {
	q := url.Values{"wait": {wait.String()}, "status": {seen.Status}, "live": {strconv.FormatBool(seen.Live)}}
	var out api.Deployment
	err := c.do(ctx, http.MethodGet, "/deployments/"+strconv.FormatInt(id, 10)+"?"+q.Encode(), nil, "", &out)
	return out, err
}

// Pause stops routing requests to a component.
func (c *Client) Pause(ctx context.Context, name string) (api.Component, error) {
	var out api.Component
	err := c.do(ctx, http.MethodPost, componentPath(name, "/pause"), nil, "", &out)
	return out, err
}

// Resume routes requests to a paused component again.
func (c *Client) Resume(ctx context.Context, name string) (api.Component, error) {
	var out api.Component
	err := c.do(ctx, http.MethodPost, componentPath(name, "/resume"), nil, "", &out)
	return out, err
}

// Rollback makes an earlier deployment live again: the one numbered
// deployment, or with 0 the one live before the current one. It returns the
// deployment being rolled back to.
func (c *Client) Rollback(ctx context.Context, name string, deployment int64) (api.Deployment, error) {
	body, err := json.Marshal(api.Rollback{Deployment: deployment})
	if err != nil {
		return api.Deployment{}, fmt.Errorf("encode rollback: %w", err)
	}
	var out api.Deployment
	err = c.do(ctx, http.MethodPost, componentPath(name, "/rollback"), bytes.NewReader(body), "application/json", &out)
	return out, err
}

// Stats returns per-minute request statistics over the last since (a Go
// duration such as "1h"; empty means the server's default).
func (c *Client) Stats(ctx context.Context, name, since string) (api.Stats, error) {
	p := componentPath(name, "/stats")
	if since != "" {
		p += "?" + url.Values{"since": {since}}.Encode()
	}
	var out api.Stats
	err := c.do(ctx, http.MethodGet, p, nil, "", &out)
	return out, err
}

// Logs returns the last tail log lines of a component, oldest first; tail 0
// means the server's default.
func (c *Client) Logs(ctx context.Context, name string, tail int) ([]api.LogLine, error) {
	p := componentPath(name, "/logs")
	if tail > 0 {
		p += "?" + url.Values{"tail": {strconv.Itoa(tail)}}.Encode()
	}
	var out []api.LogLine
	err := c.do(ctx, http.MethodGet, p, nil, "", &out)
	return out, err
}

// Delete removes a component with its deployments.
func (c *Client) Delete(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, componentPath(name, ""), nil, "", nil)
}

// componentPath is /components/{name}{suffix} with name escaped.
func componentPath(name, suffix string) string {
	return "/components/" + url.PathEscape(name) + suffix
}

// newRequest builds a request to path under /api/v1, with the token.
func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.server+"/api/v1"+path, body)
	if err != nil {
		return nil, fmt.Errorf("new request: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("User-Agent", "velo-cli")
	return req, nil
}

// send performs req and maps transport errors and non-2xx answers. On
// success the caller owns the response body.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ctxErr)
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, &UnreachableError{Server: c.server, Err: err}
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}

// do sends one request and decodes a JSON answer into out, if out is not nil.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	req, err := c.newRequest(ctx, method, path, body, contentType)
	if err != nil {
		return err
	}
	if out != nil {
		req.Header.Set("Accept", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, req.URL.Path, err)
	}
	return nil
}

// readError turns a non-2xx answer into *Error: the {"error": …} message
// when there is one, else the body's first line, else the status text.
func readError(resp *http.Response) *Error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &Error{Status: resp.StatusCode}
	var body api.Error
	if json.Unmarshal(data, &body) == nil && body.Error != "" {
		e.Message = body.Error
		return e
	}
	text := strings.TrimSpace(string(data))
	if i := strings.IndexByte(text, '\n'); i >= 0 {
		text = strings.TrimSpace(text[:i])
	}
	if text == "" || strings.HasPrefix(text, "<") || strings.HasPrefix(text, "{") {
		text = fmt.Sprintf("%d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	e.Message = text
	return e
}

// CreateToken creates an API token named name acting as the caller; its
// secret (Token) is in this answer only.
func (c *Client) CreateToken(ctx context.Context, name string) (api.Token, error) {
	body, err := json.Marshal(api.TokenRequest{Name: name})
	if err != nil {
		return api.Token{}, fmt.Errorf("encode token request: %w", err)
	}
	var out api.Token
	err = c.do(ctx, http.MethodPost, "/tokens", bytes.NewReader(body), "application/json", &out)
	return out, err
}

// Tokens lists the caller's API tokens (the admin's: everyone's), without
// their secrets.
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var out []api.Token
	err := c.do(ctx, http.MethodGet, "/tokens", nil, "", &out)
	return out, err
}

// RevokeToken deletes the API token id; it stops working at once.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/tokens/"+url.PathEscape(id), nil, "", nil)
}
