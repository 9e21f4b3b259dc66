package wasm

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// keepBuffer is the largest buffer a pooled call keeps for the next request;
// a rare huge response should not pin its memory.
const keepBuffer = 1 << 20

var errBodyTooLarge = errors.New("request body too large")

// errResponseTooLarge is what a module sees when it writes past the cap.
var errResponseTooLarge = errors.New("response too large")

// call holds one request's buffers. Calls are pooled so that a request
// allocates no buffers in the steady state.
type call struct {
	body   []byte
	stdin  bytes.Reader
	stdout capWriter
	stderr lineWriter
	args   []string
	env    environ
}

// pools holds a Runtime's reusable per-request state.
type pools struct {
	calls sync.Pool
}

func (p *pools) get(maxResponse int64) *call {
	c, _ := p.calls.Get().(*call)
	if c == nil {
		c = new(call)
	}
	c.stdout.max = maxResponse
	return c
}

func (p *pools) put(c *call) {
	if cap(c.body) > keepBuffer {
		c.body = nil
	}
	if cap(c.stdout.buf) > keepBuffer {
		c.stdout.buf = nil
	}
	if cap(c.stderr.buf) > keepBuffer {
		c.stderr.buf = nil
	}
	c.body = c.body[:0]
	c.stdin.Reset(nil)
	c.stdout.buf, c.stdout.over = c.stdout.buf[:0], false
	c.stderr.sink = nil
	clear(c.args)
	c.args = c.args[:0]
	if cap(c.env.buf) > keepBuffer {
		c.env = environ{}
	}
	c.env.reset()
	p.calls.Put(c)
}

// readBody reads r's body into c.body, at most max bytes, and points stdin
// at it.
func (c *call) readBody(r *http.Request, max int64) error {
	c.stdin.Reset(nil)
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if r.ContentLength > max {
		return errBodyTooLarge
	}
	if r.ContentLength > 0 && int64(cap(c.body)) < r.ContentLength+1 {
		c.body = make([]byte, 0, r.ContentLength+1) // +1 to see EOF without growing
	}
	b := c.body[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > max {
			c.body = b[:0]
			return errBodyTooLarge
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			c.body = b[:0]
			return err
		}
	}
	c.body = b
	c.stdin.Reset(b)
	return nil
}

// capWriter collects a module's stdout up to max bytes.
type capWriter struct {
	buf  []byte
	max  int64
	over bool
}

// Write implements io.Writer; past max it keeps nothing more and fails, so
// the module sees EIO and the request gets a 502.
func (w *capWriter) Write(p []byte) (int, error) {
	if room := w.max - int64(len(w.buf)); int64(len(p)) > room {
		w.over = true
		return 0, errResponseTooLarge
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// headerEnv names the CGI variable for a request header: HTTP_ and the name
// upper-cased with '-' as '_'. Authorization, Proxy-Authorization and
// Connection are not passed (RFC 3875 §4.1.18: credentials and hop-by-hop
// fields are the server's business).
func (rt *Runtime) headerEnv(key string) (string, bool) {
	if name, ok := rt.headerNames[key]; ok {
		return name, name != ""
	}
	switch http.CanonicalHeaderKey(key) {
	case "Authorization", "Proxy-Authorization", "Connection":
		return "", false
	}
	return headerEnvName(key), true
}

func headerEnvName(key string) string {
	var b strings.Builder
	b.Grow(5 + len(key))
	b.WriteString("HTTP_")
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case c == '-':
			c = '_'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// commonHeaders are request headers whose CGI names are computed once per
// Runtime rather than per request.
func commonHeaders() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{
		"Accept", "Accept-Encoding", "Accept-Language", "Cache-Control",
		"Content-Length", "Content-Type", "Cookie", "Dnt", "If-Modified-Since",
		"If-None-Match", "Origin", "Pragma", "Priority", "Range", "Referer",
		"Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform", "Sec-Fetch-Dest",
		"Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User", "Te",
		"Upgrade-Insecure-Requests", "User-Agent", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "X-Request-Id",
	} {
		m[k] = headerEnvName(k)
	}
	for _, k := range []string{"Authorization", "Proxy-Authorization", "Connection"} {
		m[k] = "" // never passed
	}
	return m
}
