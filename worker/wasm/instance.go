package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/velo-run/velo/worker"
)

// instance serves one prepared deployment: a compiled module, instantiated
// afresh for every request.
type instance struct {
	rt      *Runtime
	mod     *module
	path    string // the module's file, to load it again after an unload
	digest  string
	logs    worker.LogSink
	timeout time.Duration
	base    wazero.ModuleConfig // what every request's config starts from
	env     []envVar            // the manifest's [env], then the secrets, each sorted by name
	// fixed is env laid out once, the rest of every request's environment
	// (environ.rest); nil when a name of env starts with HTTP_ (a request
	// header of that name wins, so each is looked at per request).
	fixed       *environ
	timeoutBody string
	http        *outboundPolicy // nil unless the module imports wasi_experimental_http

	wagi *wagiSetup // entry point, sub-routes, files (routes.go)
	warm *warmPool  // idle instances for reuse; nil: fresh ones (warm.go)

	inflight  atomic.Int64
	closed    atomic.Bool
	drainOnce sync.Once
	drained   chan struct{}
}

type envVar struct{ name, value string }

// route caches the CGI variables derived from a mount, which is the same on
// every request of one deployment.
type route struct{ mount, matched string }

func newInstance(rt *Runtime, mod *module, path string, spec worker.Spec, timeout time.Duration) (*instance, error) {
	env := make([]envVar, 0, len(spec.Manifest.Env))
	for k, v := range spec.Manifest.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("env %q: names may not be empty or hold '=' or NUL, values may not hold NUL", k)
		}
		if cgiVariable(k) {
			if spec.BuildLog != nil {
				fmt.Fprintf(spec.BuildLog, "env %s: ignored, the request sets this CGI variable\n", k)
			}
			continue
		}
		if _, ok := spec.Secrets[k]; !ok {
			env = append(env, envVar{k, v})
		}
	}
	byName := func(a, b envVar) int { return strings.Compare(a.name, b.name) }
	slices.SortFunc(env, byName)
	// Secrets join [env] (deploymgr refuses a name in both), after it: a
	// module finds a variable by walking the environment from the start
	// (getenv), every entry before the one it asks for a turn of its loop,
	// so secrets placed before [env] would cost every lookup of an [env]
	// variable one turn each (and a turn of a loop is a termination check
	// out to the host). They are checked when set, but a value must never
	// break the environment.
	nenv := len(env)
	for k, v := range spec.Secrets {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) || cgiVariable(k) {
			return nil, fmt.Errorf("secret %q: not usable as an environment variable", k)
		}
		env = append(env, envVar{k, v})
	}
	slices.SortFunc(env[nenv:], byName)
	logs := spec.Logs
	if logs == nil {
		logs = discardSink{}
	}
	var fixed *environ
	if !slices.ContainsFunc(env, func(v envVar) bool { return strings.HasPrefix(v.name, "HTTP_") }) {
		fixed = &environ{}
		for _, v := range env {
			fixed.add(v.name, v.value)
		}
	}
	return &instance{
		fixed:   fixed,
		rt:      rt,
		mod:     mod,
		path:    path,
		digest:  spec.Digest,
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
		warm:        rt.newWarmPool(mod),
		timeoutBody: fmt.Sprintf("504 Gateway Timeout: the component did not answer within %s\n", timeout),
		drained:     make(chan struct{}),
	}, nil
}

// Serve runs the module once for r: the body streams to its stdin, and its
// CGI answer goes to w, whole when it is small, else streamed once its head
// is in (see call.go). An answer that fails after its head went out can no
// longer become a 502: the connection is cut (http.ErrAbortHandler), so
// the client sees it incomplete rather than taking it for whole.
func (in *instance) Serve(w http.ResponseWriter, r *http.Request, mount string) {
	start := time.Now()
	if !in.enter() {
		http.Error(w, "503 Service Unavailable: this deployment is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer in.leave()

	if strings.IndexByte(r.URL.Path, 0) >= 0 {
		http.Error(w, "400 Bad Request: NUL in path", http.StatusBadRequest)
		return
	}

	// The deadline counts from the start of Serve; the module is stopped
	// when it passes (stop.go), even inside an infinite loop, and reading
	// the body and sending the answer are held to it too.
	deadline := start.Add(in.timeout)
	ctx, cancel := context.WithDeadline(r.Context(), deadline)
	defer cancel()

	c := in.rt.pools.get()
	defer in.rt.pools.put(c)
	if r.ContentLength != 0 {
		_ = http.NewResponseController(w).SetReadDeadline(deadline)
	}
	if err := c.openBody(r, in.rt.cfg.MaxRequest, in.rt.cfg.SpoolDir); err != nil {
		switch {
		case errors.Is(err, errBodyTooLarge):
			http.Error(w, fmt.Sprintf("413 Content Too Large: the limit is %d bytes", in.rt.cfg.MaxRequest), http.StatusRequestEntityTooLarge)
		case r.Context().Err() != nil:
		case errors.Is(err, os.ErrDeadlineExceeded):
			in.logf(r, "reading the body took longer than %s", in.timeout)
			in.timedOut(w)
		default:
			http.Error(w, "400 Bad Request: reading the body failed", http.StatusBadRequest)
		}
		return
	}

	c.stdout.start(w, in.rt.cfg.MaxResponse, deadline, cancel)
	c.stderr.reset(in.logs)
	entry := in.moduleConfig(c, r, mount)
	runCtx := experimental.WithMemoryAllocator(context.WithValue(ctx, wasiKey{}, &c.wasi), &in.rt.mem)
	runCtx = in.withOutbound(runCtx, r)
	err := in.run(runCtx, entry, c)
	c.stderr.flush()
	out := &c.stdout
	defer in.logSkipped(r, out) // once the head is parsed, which may be below
	if !out.sent && errors.Is(c.stdin.err, os.ErrDeadlineExceeded) {
		// The client did not send the body in time; whatever the module
		// made of the missing rest is not an answer.
		in.logf(r, "reading the body took longer than %s", in.timeout)
		in.timedOut(w)
		return
	}
	if err == nil && out.err == nil {
		if err := out.finish(); err != nil {
			in.badGateway(w, r, err.Error())
		}
		return
	}
	if out.sent {
		in.cut(r, ctx, err, out)
	}
	switch {
	case out.err != nil && out.modFault:
		in.badGateway(w, r, out.err.Error())
	case out.err != nil:
		// The client stopped taking the answer: no one to answer.
	default:
		in.fail(w, r, ctx, err)
	}
}

// logSkipped logs the header lines the answer's head had that parseCGI
// skipped.
func (in *instance) logSkipped(r *http.Request, out *cgiWriter) {
	for _, line := range out.skipped {
		in.logf(r, "skipped CGI header line %q: not \"Name: value\"", line)
	}
}

// cut logs why an answer already under way failed and aborts it.
func (in *instance) cut(r *http.Request, ctx context.Context, err error, out *cgiWriter) {
	reason := out.err
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && (reason == nil || !out.modFault):
		reason = fmt.Errorf("timed out after %s", in.timeout)
	case reason == nil:
		reason = errors.New(in.exitReason(err))
	}
	in.logf(r, "answer cut off after %d bytes: %v", out.total, reason)
	panic(http.ErrAbortHandler)
}

// callOverhead is what a call takes in the worker besides its linear
// memory: stdout's buffer, a chunked body's start, stderr's line, the
// environment, wazero's instance of the module and net/http's buffers. It
// is a generous round figure (a call of the C test module takes about a
// tenth of it), not a measurement per module.
const callOverhead = 1 << 20

// CallMemory implements worker.Footprint: the most a call may take in the
// worker's memory, its linear memory cap and its buffers, which the
// worker's admission reserves while the call runs.
func (in *instance) CallMemory() int64 {
	return int64(in.mod.key.pages)*pageSize + callOverhead
}

// moduleConfig lays out the request's WASI arguments and environment in
// c: WAGI's argv (the request path, then the query string split at '&'),
// and the CGI variables, then the manifest's [env] (the CGI variables win
// on a clash). It returns the export to run: the one of the route the
// request matches (routes.go).
func (in *instance) moduleConfig(c *call, r *http.Request, mount string) string {
	escaped := r.URL.EscapedPath() // net/url builds it anew each time when the path has escapes
	c.args.reset()
	c.args.addRaw(escaped)
	if q := r.URL.RawQuery; q != "" {
		for arg := range strings.SplitSeq(q, "&") {
			c.args.addRaw(arg)
		}
	}

	t, pathInfo, rawPathInfo := in.routesFor(mount).resolve(escaped, r.URL.Path)
	scheme, defaultPort := "http", "80"
	if r.TLS != nil {
		scheme, defaultPort = "https", "443"
	}
	serverName, serverPort := splitHostPort(r.Host, defaultPort)
	remote, _ := splitHostPort(r.RemoteAddr, "")

	e := &c.env
	e.reset()
	e.add("GATEWAY_INTERFACE", "CGI/1.1")
	e.add("SERVER_SOFTWARE", "Velo")
	e.add("REQUEST_METHOD", r.Method)
	e.add("SCRIPT_NAME", t.scriptName)
	e.add("X_MATCHED_ROUTE", t.matched)
	e.add("PATH_INFO", pathInfo)
	e.add("PATH_TRANSLATED", pathInfo)
	e.add("X_RAW_PATH_INFO", rawPathInfo)
	e.add("QUERY_STRING", r.URL.RawQuery)
	e.add("CONTENT_TYPE", r.Header.Get("Content-Type"))
	e.add("CONTENT_LENGTH", strconv.FormatInt(c.length, 10))
	e.add("SERVER_NAME", serverName)
	e.add("SERVER_PORT", serverPort)
	e.add("SERVER_PROTOCOL", r.Proto)
	e.add("REMOTE_ADDR", remote)
	e.add("REMOTE_HOST", remote)
	e.add("AUTH_TYPE", "")
	e.add("REMOTE_USER", "")
	e.offs = append(e.offs, uint32(len(e.buf)))
	e.buf = append(e.buf, "X_FULL_URL="...)
	e.buf = append(e.buf, scheme...)
	e.buf = append(e.buf, "://"...)
	e.buf = append(e.buf, r.Host...)
	if u := r.URL; u.Opaque == "" {
		// As u.RequestURI(), without building the string.
		if escaped == "" {
			escaped = "/"
		}
		e.buf = append(e.buf, escaped...)
		if u.ForceQuery || u.RawQuery != "" {
			e.buf = append(e.buf, '?')
			e.buf = append(e.buf, u.RawQuery...)
		}
	} else {
		e.buf = append(e.buf, u.RequestURI()...)
	}
	e.buf = append(e.buf, 0)
	if r.Host != "" {
		e.add("HTTP_HOST", r.Host)
	}
	for k, vs := range r.Header {
		name, ok := in.rt.headerEnv(k)
		if !ok {
			continue
		}
		e.offs = append(e.offs, uint32(len(e.buf)))
		e.buf = append(e.buf, name...)
		e.buf = append(e.buf, '=')
		for i, v := range vs {
			if i > 0 {
				e.buf = append(e.buf, ", "...)
			}
			e.buf = append(e.buf, v...)
		}
		e.buf = append(e.buf, 0)
	}
	if in.fixed != nil {
		e.rest = in.fixed
	} else {
		for _, v := range in.env {
			if !strings.HasPrefix(v.name, "HTTP_") || !e.has(v.name) {
				e.add(v.name, v.value)
			}
		}
	}
	return t.entry
}

// freshConfig is the configuration of a fresh instance for c: in's, with
// c's stdio bound.
func (in *instance) freshConfig(c *call) wazero.ModuleConfig {
	if c.cfgOf != in {
		// The streams are c's own fields, the same objects on every use
		// of c, so the bound config holds for as long as c serves in.
		c.cfg = in.base.WithStdin(&c.stdin).WithStdout(&c.stdout).WithStderr(&c.stderr)
		c.cfgOf = in
	}
	return c.cfg
}

// fail answers a request whose module did not finish cleanly.
func (in *instance) fail(w http.ResponseWriter, r *http.Request, ctx context.Context, err error) {
	if r.Context().Err() != nil {
		return // the client went away; no one to answer
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		in.logf(r, "timed out after %s", in.timeout)
		in.timedOut(w)
		return
	}
	in.badGateway(w, r, in.exitReason(err))
}

// exitReason says how a module that did not finish cleanly ended.
func (in *instance) exitReason(err error) string {
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		return fmt.Sprintf("module exited with code %d", exit.ExitCode())
	}
	return oneLine(err.Error())
}

// timedOut answers 504.
func (in *instance) timedOut(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusGatewayTimeout)
	_, _ = w.Write([]byte(in.timeoutBody))
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
		in.wagi.close()
		in.http.release()
		if in.warm != nil {
			in.warm.close()
		}
		in.rt.drop(in.mod, in.digest)
		close(in.drained)
	})
}

// cgiVariable reports whether name is a variable Serve sets from the request.
func cgiVariable(name string) bool {
	switch name {
	case "GATEWAY_INTERFACE", "SERVER_SOFTWARE", "REQUEST_METHOD", "SCRIPT_NAME",
		"X_MATCHED_ROUTE", "PATH_INFO", "PATH_TRANSLATED", "X_RAW_PATH_INFO",
		"QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT",
		"SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_HOST", "AUTH_TYPE", "REMOTE_USER",
		"X_FULL_URL", "HTTP_HOST":
		return true
	}
	return false
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
	// net.SplitHostPort is not asked when it would fail (no port: a Host
	// header without one, the usual case), as its error is an allocation
	// on every request.
	colon := strings.LastIndexByte(hostport, ':')
	if colon >= 0 && (hostport[0] != '[' && strings.IndexByte(hostport, ':') == colon ||
		hostport[0] == '[' && colon > strings.LastIndexByte(hostport, ']')) {
		if h, p, err := net.SplitHostPort(hostport); err == nil {
			return h, p
		}
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
