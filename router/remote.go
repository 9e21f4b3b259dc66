package router

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// Headers of the router → worker hop. The worker's internal endpoint
// (worker.Handler) reads them; they never reach a component.
const (
	// HeaderInvokeDeployment names the deployment the request is for.
	HeaderInvokeDeployment = "X-Velo-Invoke-Deployment"
	// HeaderInvokeMount is the path prefix the component is mounted at.
	HeaderInvokeMount = "X-Velo-Invoke-Mount"
	// HeaderClientAuthorization carries the caller's own Authorization
	// header while Authorization holds the cluster token.
	HeaderClientAuthorization = "X-Velo-Client-Authorization"
	// HeaderNotServed marks a worker's answer "I do not serve this
	// deployment": the request never reached a component and may be sent
	// to another worker.
	HeaderNotServed = "X-Velo-Not-Served"
)

// StatusNotServed is the status a worker answers with when it does not hold
// the deployment asked for (421 Misdirected Request).
const StatusNotServed = http.StatusMisdirectedRequest

// RemoteConfig configures how the router reaches workers over HTTP.
type RemoteConfig struct {
	// Token is the cluster token sent as a bearer token on every call.
	Token string
	// DownFor is how long a worker that refused a connection is skipped
	// before it is tried again (default 1s).
	DownFor time.Duration
	// DialTimeout bounds connecting to a worker (default 500ms).
	DialTimeout time.Duration
	// MaxIdlePerWorker is how many keep-alive connections are kept per
	// worker (default 256).
	MaxIdlePerWorker int
	// MaxBufferedBody is the largest request body buffered so that the
	// request can be retried on another worker after a "not served"
	// answer (default 64 KiB). Larger bodies are streamed.
	MaxBufferedBody int64
}

// Remote reaches workers over HTTP/1.1 through one shared, tuned transport
// with pooled keep-alive connections. Its Backend method is what
// Config.Backend wants. It is safe for concurrent use.
type Remote struct {
	cfg  RemoteConfig
	tr   *http.Transport
	auth []string
	// now is time.Now; tests replace it.
	now func() time.Time
}

// NewRemote returns a Remote.
func NewRemote(cfg RemoteConfig) *Remote {
	if cfg.DownFor <= 0 {
		cfg.DownFor = time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 500 * time.Millisecond
	}
	if cfg.MaxIdlePerWorker <= 0 {
		cfg.MaxIdlePerWorker = 256
	}
	if cfg.MaxBufferedBody <= 0 {
		cfg.MaxBufferedBody = 64 << 10
	}
	d := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          0, // no global cap; MaxIdleConnsPerHost bounds each worker
		MaxIdleConnsPerHost:   cfg.MaxIdlePerWorker,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
		WriteBufferSize:       64 << 10,
		ReadBufferSize:        64 << 10,
		ExpectContinueTimeout: 0,
	}
	return &Remote{cfg: cfg, tr: tr, auth: []string{"Bearer " + cfg.Token}, now: time.Now}
}

// Close closes the idle connections.
func (rm *Remote) Close() { rm.tr.CloseIdleConnections() }

// Backend returns the backend reaching worker w at w.Addr, a base URL like
// http://10.0.0.5:8080. A worker without a usable address gets a backend
// that never serves, so the router tries the others.
func (rm *Remote) Backend(w store.Worker) Backend {
	u, err := url.Parse(w.Addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return refusing{}
	}
	return &remoteBackend{rm: rm, scheme: u.Scheme, host: u.Host}
}

type refusing struct{}

func (refusing) Serve(http.ResponseWriter, *http.Request, int64, string) bool { return false }

// remoteBackend is one worker.
type remoteBackend struct {
	rm           *Remote
	scheme, host string
	// downUntil is when a worker that refused a connection may be tried
	// again (unix ns); 0 when it is up.
	downUntil atomic.Int64
	// last caches the invoke header values of the last call: most
	// calls repeat them, and caching saves their allocations.
	last atomic.Pointer[invokeHeaders]
}

type invokeHeaders struct {
	d          int64
	m          string
	dep, mount []string
}

func (b *remoteBackend) invokeHeaders(d int64, mount string) *invokeHeaders {
	if ih := b.last.Load(); ih != nil && ih.d == d && ih.m == mount {
		return ih
	}
	ih := &invokeHeaders{d: d, m: mount, dep: []string{strconv.FormatInt(d, 10)}, mount: []string{mount}}
	b.last.Store(ih)
	return ih
}

// hopHeaders are not forwarded (RFC 9110 7.6.1), in canonical form.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// outbound is the request sent to the worker, allocated in one piece.
type outbound struct {
	req http.Request
	url url.URL
}

// Serve forwards r to the worker. It returns false, having written nothing
// and with r's body still unread, when the worker could not be reached or
// answered that it does not serve deployment d.
func (b *remoteBackend) Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	if until := b.downUntil.Load(); until != 0 {
		now := b.rm.now().UnixNano()
		// Past the down period one request probes the worker; the
		// others keep skipping it until the probe has answered.
		if now < until || !b.downUntil.CompareAndSwap(until, now+int64(b.rm.cfg.DownFor)) {
			return false
		}
	}
	h := r.Header
	if _, ok := h["Connection"]; ok {
		for _, f := range h["Connection"] {
			for name := range strings.SplitSeq(f, ",") {
				if name = strings.TrimSpace(name); name != "" {
					delete(h, http.CanonicalHeaderKey(name))
				}
			}
		}
	}
	for _, k := range hopHeaders {
		if _, ok := h[k]; ok {
			delete(h, k)
		}
	}
	if a, ok := h["Authorization"]; ok && (len(a) != 1 || a[0] != b.rm.auth[0]) {
		h[HeaderClientAuthorization] = a
	}
	h["Authorization"] = b.rm.auth
	ih := b.invokeHeaders(d, mount)
	h[HeaderInvokeDeployment] = ih.dep
	h[HeaderInvokeMount] = ih.mount
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior, ok := h["X-Forwarded-For"]; ok && len(prior) > 0 && !strings.HasSuffix(prior[len(prior)-1], ip) {
			h["X-Forwarded-For"] = []string{strings.Join(prior, ", ") + ", " + ip}
		} else if !ok {
			h["X-Forwarded-For"] = []string{ip}
		}
	}

	// The body: empty, in memory (replayable if the worker says "not
	// here"), or streamed through a reader that records whether it was
	// read at all.
	var (
		body    io.ReadCloser
		tracked *trackedBody
	)
	switch rb, isReplay := r.Body.(*replayBody); {
	case isReplay:
		body = io.NopCloser(bytes.NewReader(rb.data))
	case r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0:
	case r.ContentLength > 0 && r.ContentLength <= b.rm.cfg.MaxBufferedBody:
		// Not pooled: the transport may still be reading it after
		// RoundTrip returned.
		data := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, data); err != nil {
			plain(w, http.StatusBadRequest, "reading request body: "+err.Error())
			return true
		}
		r.Body = &replayBody{data: data}
		body = io.NopCloser(bytes.NewReader(data))
	default:
		tracked = &trackedBody{r: r.Body}
		body = tracked
	}

	out := new(outbound)
	out.url = url.URL{Scheme: b.scheme, Host: b.host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	out.req = *r // keeps r's context: the call ends when the caller goes away
	out.req.URL = &out.url
	out.req.Proto, out.req.ProtoMajor, out.req.ProtoMinor = "HTTP/1.1", 1, 1
	out.req.Header = h
	out.req.Body = body
	out.req.RequestURI = ""
	out.req.Close = false
	out.req.TransferEncoding = nil
	out.req.Trailer = nil
	if body == nil {
		out.req.ContentLength = 0
	}
	res, err := b.rm.tr.RoundTrip(&out.req)
	if err != nil {
		if isDialError(err) {
			b.downUntil.Store(b.rm.now().Add(b.rm.cfg.DownFor).UnixNano())
			if tracked == nil || !tracked.read.Load() {
				return false
			}
		}
		if r.Context().Err() != nil {
			// The caller went away; nobody reads the answer.
			w.WriteHeader(499)
			return true
		}
		plain(w, http.StatusBadGateway, "worker unreachable: "+errorText(err))
		return true
	}
	b.downUntil.Store(0)
	defer res.Body.Close()
	if res.StatusCode == StatusNotServed && res.Header.Get(HeaderNotServed) != "" &&
		(tracked == nil || !tracked.read.Load()) {
		// Drain the short answer so the connection is reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4<<10))
		return false
	}

	dst := w.Header()
	for k, v := range res.Header {
		dst[k] = v
	}
	for _, k := range hopHeaders {
		delete(dst, k)
	}
	if c, ok := res.Header["Connection"]; ok {
		for _, f := range c {
			for name := range strings.SplitSeq(f, ",") {
				if name = strings.TrimSpace(name); name != "" {
					delete(dst, http.CanonicalHeaderKey(name))
				}
			}
		}
	}
	w.WriteHeader(res.StatusCode)
	copyBody(w, res.Body, res.ContentLength < 0)
	return true
}

// copyBody copies src to w with a pooled buffer, flushing after every read
// when the length is unknown (streamed responses).
func copyBody(w http.ResponseWriter, src io.Reader, flush bool) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var f http.Flusher
	if flush {
		f, _ = w.(http.Flusher)
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if f != nil {
				f.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// replayBody is a request body already read into memory, kept so that a
// retry on another worker can send it again.
type replayBody struct{ data []byte }

func (*replayBody) Read([]byte) (int, error) { return 0, io.EOF }
func (*replayBody) Close() error             { return nil }

// trackedBody forwards a streamed body, recording whether any of it was
// read; the transport's Close does not close the caller's body.
type trackedBody struct {
	r    io.Reader
	read atomic.Bool
}

func (t *trackedBody) Read(p []byte) (int, error) {
	t.read.Store(true)
	return t.r.Read(p)
}

func (t *trackedBody) Close() error { return nil }

// isDialError reports whether err means the connection to the worker could
// not be made, so the request never reached it.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) && strings.Contains(err.Error(), "dial")
}

func errorText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
