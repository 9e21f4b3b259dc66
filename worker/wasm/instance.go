package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/sys"

	"github.com/velo-run/velo/worker"
)

// instance serves one prepared deployment: a compiled module, instantiated
// afresh for every request.
type instance struct {
	rt          *Runtime
	c           *compiled
	key         moduleKey
	logs        worker.LogSink
	timeout     time.Duration
	base        wazero.ModuleConfig // what every request's config starts from
	env         []envVar            // the manifest's [env], sorted by name
	timeoutBody string

	route atomic.Pointer[route] // SCRIPT_NAME and X_MATCHED_ROUTE of the last mount

	inflight  atomic.Int64
	closed    atomic.Bool
	drainOnce sync.Once
	drained   chan struct{}
}

type envVar struct{ name, value string }

// route caches the CGI variables derived from a mount, which is the same on
// every request of one deployment.
type route struct{ mount, matched string }

func newInstance(rt *Runtime, c *compiled, key moduleKey, spec worker.Spec, timeout time.Duration) (*instance, error) {
	env := make([]envVar, 0, len(spec.Manifest.Env))
	for k, v := range spec.Manifest.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("env %q: names may not be empty or hold '=' or NUL, values may not hold NUL", k)
		}
		env = append(env, envVar{k, v})
	}
	slices.SortFunc(env, func(a, b envVar) int { return strings.Compare(a.name, b.name) })
	logs := spec.Logs
	if logs == nil {
		logs = discardSink{}
	}
	return &instance{
		rt:      rt,
		c:       c,
		key:     key,
		logs:    logs,
		timeout: timeout,
		// Real clocks and a real random source: wazero's defaults are
		// deterministic fakes meant for tests. WithName("") lets any number
		// of instances of the module live at once.
		base: wazero.NewModuleConfig().
			WithName("").
			WithSysWalltime().
			WithSysNanotime().
			WithSysNanosleep().
			WithRandSource(rand.Reader),
		env:         env,
		timeoutBody: fmt.Sprintf("504 Gateway Timeout: the component did not answer within %s\n", timeout),
		drained:     make(chan struct{}),
	}, nil
}

// Serve runs the module once for r and writes its CGI response to w.
func (in *instance) Serve(w http.ResponseWriter, r *http.Request, mount string) {
	start := time.Now()
	if !in.enter() {
		http.Error(w, "503 Service Unavailable: this deployment is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer in.leave()

	c := in.rt.pools.get(in.rt.cfg.MaxResponse)
	defer in.rt.pools.put(c)

	if strings.IndexByte(r.URL.Path, 0) >= 0 {
		http.Error(w, "400 Bad Request: NUL in path", http.StatusBadRequest)
		return
	}
	if err := c.readBody(r, in.rt.cfg.MaxRequest); err != nil {
		if errors.Is(err, errBodyTooLarge) {
			http.Error(w, fmt.Sprintf("413 Content Too Large: the limit is %d bytes", in.rt.cfg.MaxRequest), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "400 Bad Request: reading the body failed", http.StatusBadRequest)
		return
	}

	// The deadline counts from the start of Serve; wazero closes the module
	// when it passes, even inside an infinite loop.
	ctx, cancel := context.WithDeadline(r.Context(), start.Add(in.timeout))
	defer cancel()

	c.stderr.reset(in.logs)
	cfg := in.moduleConfig(c, r, mount)
	mod, err := in.c.rt.InstantiateModule(ctx, in.c.mod, cfg)
	if mod != nil {
		_ = mod.Close(ctx)
	}
	c.stderr.flush()
	if err != nil {
		in.fail(w, r, ctx, err)
		return
	}
	if c.stdout.over {
		in.badGateway(w, r, fmt.Sprintf("response larger than %d bytes", c.stdout.max))
		return
	}
	h := w.Header()
	status, body, err := parseCGI(c.stdout.buf, h)
	if err != nil {
		in.badGateway(w, r, "invalid CGI response: "+err.Error())
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// moduleConfig builds the request's WASI configuration: stdio, WAGI's argv
// (the request path, then the query string split at '&') and environment
// (the manifest's [env], then the CGI variables, which win on a clash).
func (in *instance) moduleConfig(c *call, r *http.Request, mount string) wazero.ModuleConfig {
	c.args = append(c.args[:0], r.URL.EscapedPath())
	if q := r.URL.RawQuery; q != "" {
		for arg := range strings.SplitSeq(q, "&") {
			c.args = append(c.args, arg)
		}
	}
	cfg := in.base.
		WithArgs(c.args...).
		WithStdin(&c.stdin).
		WithStdout(&c.stdout).
		WithStderr(&c.stderr)

	for _, e := range in.env {
		cfg = cfg.WithEnv(e.name, e.value)
	}

	rn := in.route.Load()
	if rn == nil || rn.mount != mount {
		rn = &route{mount: mount, matched: mount + "/..."}
		in.route.Store(rn)
	}
	pathInfo := subPath(r.URL.Path, mount)
	rawPathInfo := subPath(r.URL.EscapedPath(), mount)
	scheme, defaultPort := "http", "80"
	if r.TLS != nil {
		scheme, defaultPort = "https", "443"
	}
	serverName, serverPort := splitHostPort(r.Host, defaultPort)
	remote, _ := splitHostPort(r.RemoteAddr, "")

	cfg = cfg.
		WithEnv("GATEWAY_INTERFACE", "CGI/1.1").
		WithEnv("SERVER_SOFTWARE", "Velo").
		WithEnv("REQUEST_METHOD", r.Method).
		WithEnv("SCRIPT_NAME", rn.mount).
		WithEnv("X_MATCHED_ROUTE", rn.matched).
		WithEnv("PATH_INFO", pathInfo).
		WithEnv("PATH_TRANSLATED", pathInfo).
		WithEnv("X_RAW_PATH_INFO", rawPathInfo).
		WithEnv("QUERY_STRING", r.URL.RawQuery).
		WithEnv("CONTENT_TYPE", r.Header.Get("Content-Type")).
		WithEnv("CONTENT_LENGTH", strconv.Itoa(len(c.body))).
		WithEnv("SERVER_NAME", serverName).
		WithEnv("SERVER_PORT", serverPort).
		WithEnv("SERVER_PROTOCOL", r.Proto).
		WithEnv("REMOTE_ADDR", remote).
		WithEnv("REMOTE_HOST", remote).
		WithEnv("AUTH_TYPE", "").
		WithEnv("REMOTE_USER", "").
		WithEnv("X_FULL_URL", scheme+"://"+r.Host+r.URL.RequestURI())
	if r.Host != "" {
		cfg = cfg.WithEnv("HTTP_HOST", r.Host)
	}
	for k, vs := range r.Header {
		name, ok := in.rt.headerEnv(k)
		if !ok {
			continue
		}
		v := ""
		if len(vs) == 1 {
			v = vs[0]
		} else {
			v = strings.Join(vs, ", ")
		}
		if strings.IndexByte(v, 0) >= 0 {
			continue // WASI cannot carry it; net/http never lets one through
		}
		cfg = cfg.WithEnv(name, v)
	}
	return cfg
}

// fail answers a request whose module did not finish cleanly.
func (in *instance) fail(w http.ResponseWriter, r *http.Request, ctx context.Context, err error) {
	if r.Context().Err() != nil {
		return // the client went away; no one to answer
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		in.logf(r, "timed out after %s", in.timeout)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusGatewayTimeout)
		_, _ = w.Write([]byte(in.timeoutBody))
		return
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		in.badGateway(w, r, fmt.Sprintf("module exited with code %d", exit.ExitCode()))
		return
	}
	in.badGateway(w, r, oneLine(err.Error()))
}

// badGateway logs why the module's answer was unusable and answers 502.
func (in *instance) badGateway(w http.ResponseWriter, r *http.Request, reason string) {
	in.logf(r, "%s", reason)
	http.Error(w, "502 Bad Gateway: the component failed; its logs say why", http.StatusBadGateway)
}

func (in *instance) logf(r *http.Request, format string, args ...any) {
	in.logs.Log(worker.System, time.Now(), r.Method+" "+r.URL.Path+": "+fmt.Sprintf(format, args...))
}

// Close stops new requests and waits until those in flight have finished or
// ctx is done. The compiled module is released when the last one finishes.
func (in *instance) Close(ctx context.Context) error {
	if in.closed.Swap(true) {
		return nil
	}
	if in.inflight.Load() == 0 {
		in.drain()
	}
	select {
	case <-in.drained:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close wasm instance: %w", ctx.Err())
	}
}

func (in *instance) enter() bool {
	in.inflight.Add(1)
	if in.closed.Load() {
		in.leave()
		return false
	}
	return true
}

func (in *instance) leave() {
	if in.inflight.Add(-1) == 0 && in.closed.Load() {
		in.drain()
	}
}

func (in *instance) drain() {
	in.drainOnce.Do(func() {
		in.rt.release(in.key, in.c)
		close(in.drained)
	})
}

// subPath is path below mount: "" or starting with "/".
func subPath(path, mount string) string {
	rest, ok := strings.CutPrefix(path, mount)
	if !ok {
		rest = path
	}
	if rest != "" && rest[0] != '/' {
		return "/" + rest
	}
	return rest
}

// splitHostPort splits "host:port", "[v6]:port" or a bare host.
func splitHostPort(hostport, defaultPort string) (host, port string) {
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), defaultPort
}

// oneLine folds a multi-line error (wazero adds a wasm stack trace) into one
// log line of bounded length.
func oneLine(s string) string {
	const max = 4 << 10
	s = strings.TrimSpace(s)
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ReplaceAll(s, "\n", " | ")
}

type discardSink struct{}

func (discardSink) Log(string, time.Time, string) {}
