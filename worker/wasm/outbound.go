package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// This file is the executor of one more ABI beside WAGI: outbound HTTP
// through the wasi_experimental_http host module of
// deislabs/wasi-experimental-http (v0.10, as WAGI and early Spin link it),
// so that modules built with its Rust crate or AssemblyScript library run
// unchanged. Its five functions take pointers and lengths into the module's
// memory and return an http_error number; results go through out-pointers:
//
//	req(url, url_len, method, method_len, headers, headers_len, body, body_len, *status u16, *handle u32)
//	close(handle)
//	header_get(handle, name, name_len, buf, buf_len, *written u32)
//	headers_get_all(handle, buf, buf_len, *written u32)
//	body_read(handle, buf, buf_len, *written u32)  // 0 written: end of body
//
// Headers travel as "name:value\n" lines. A handle is the lowest free slot
// of the request's table (the reference starts at 0 and reuses closed ones).
// req reads the whole answer before it returns, as the reference does, so
// the deadline and the size cap apply to the call, not to later reads.
//
// Velo differs from the reference on purpose where it is unsafe: allowed
// hosts are origins (scheme, host and port, not the host alone), there is
// no "insecure:allow-all", redirects are followed only to allowed origins,
// and a host name never leads to a loopback, private, link-local or other
// special address nor to this cluster's own (see guard.go). Where the
// reference panics (body_read on an unknown handle, a header line without
// a colon) Velo returns an error number.

// outboundModule is the host module's import name.
const outboundModule = "wasi_experimental_http"

// http_error values of wasi-experimental-http's witx, which the guest
// libraries decode by number.
const (
	httpSuccess               = 0
	httpInvalidHandle         = 1
	httpMemoryNotFound        = 2
	httpMemoryAccessError     = 3
	httpBufferTooSmall        = 4
	httpHeaderNotFound        = 5
	httpUTF8Error             = 6
	httpDestinationNotAllowed = 7
	httpInvalidMethod         = 8
	httpInvalidEncoding       = 9
	httpInvalidURL            = 10
	httpRequestError          = 11
	httpRuntimeError          = 12
	httpTooManySessions       = 13
)

// Defaults and bounds of outbound calls.
const (
	// DefaultOutboundMaxResponse is how many bytes of answers one request
	// may hold at once (the bodies of its open responses together).
	DefaultOutboundMaxResponse = 8 << 20
	// DefaultHTTPMaxConcurrency is how many responses a request may hold
	// open at once when the manifest does not say.
	DefaultHTTPMaxConcurrency = 8
	maxRedirects              = 10
	maxOutboundHeaderBytes    = 64 << 10
	// maxDeadlineMargin is the most a call's deadline keeps back from the
	// request's, so that the module still has time to answer after a call
	// was cut (a tenth of the timeout when that is less).
	maxDeadlineMargin = time.Second
)

// outboundABI lists the functions of the host module and their parameter
// counts; every parameter and the result are i32.
var outboundABI = map[string]int{
	"req":             10,
	"close":           1,
	"header_get":      6,
	"headers_get_all": 4,
	"body_read":       4,
}

// checkOutboundImport reports why an import from wasi_experimental_http
// would not link, at deploy time rather than on the first request.
func checkOutboundImport(f api.FunctionDefinition) error {
	_, name, _ := f.Import()
	n, ok := outboundABI[name]
	if !ok {
		return fmt.Errorf("imports %s.%s: not a function of %s (it has close, req, header_get, headers_get_all, body_read)", outboundModule, name, outboundModule)
	}
	sig := func(ts []api.ValueType) bool {
		return !slices.ContainsFunc(ts, func(t api.ValueType) bool { return t != api.ValueTypeI32 })
	}
	if len(f.ParamTypes()) != n || !sig(f.ParamTypes()) || len(f.ResultTypes()) != 1 || !sig(f.ResultTypes()) {
		return fmt.Errorf("imports %s.%s with a signature other than %d i32 parameters and an i32 result", outboundModule, name, n)
	}
	return nil
}

// importsOutbound reports whether mod imports the host module.
func importsOutbound(mod wazero.CompiledModule) bool {
	for _, f := range mod.ImportedFunctions() {
		if m, _, _ := f.Import(); m == outboundModule {
			return true
		}
	}
	return false
}

// outbound is a Runtime's outbound HTTP client, shared by every module.
type outbound struct {
	guard     *guard
	transport *http.Transport
	log       *slog.Logger

	mu       sync.Mutex
	counters map[string]*outboundCounters // by component prepared here; see release

	flushMu sync.Mutex              // serializes FlushStats
	flushed map[string]flushedCount // what FlushStats wrote, by component; guarded by flushMu
}

func newOutbound(cfg Config) *outbound {
	g := newGuard(cfg.OutboundForbidden)
	t := &http.Transport{
		Proxy:                  nil, // a proxy would be dialed instead of the checked address
		DialContext:            g.dialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: maxOutboundHeaderBytes,
		// The module sees the bytes and headers the server sent, as with
		// the reference; Go would otherwise ask for gzip and unpack it.
		DisableCompression: true,
	}
	return &outbound{guard: g, transport: t, log: cfg.Logger, counters: make(map[string]*outboundCounters),
		flushed: make(map[string]flushedCount)}
}

func (o *outbound) close() { o.transport.CloseIdleConnections() }

// outboundCounters count one component's calls for stats and /metrics.
type outboundCounters struct {
	ok, refused, failed atomic.Int64
	nanos               atomic.Int64 // time spent in calls, all outcomes
	// users counts the instances whose policy holds these counters
	// (guarded by outbound.mu). At 0 the component is no longer served
	// here (deleted, or moved away) and the counters go once FlushStats
	// has written what they hold: the map does not grow with every
	// component ever prepared.
	users int
}

// OutboundTotals are a component's outbound HTTP calls on this worker since
// it started.
type OutboundTotals struct {
	OK      int64 // answered (any status)
	Refused int64 // not allowed: origin not listed, redirect or address refused
	Failed  int64 // allowed but failed: connection, deadline, answer too large
	Seconds float64
}

// OutboundTotals returns the outbound call counts of every component that
// made calls on this runtime.
func (rt *Runtime) OutboundTotals() map[string]OutboundTotals {
	o := rt.out
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[string]OutboundTotals, len(o.counters))
	for name, c := range o.counters {
		m[name] = OutboundTotals{OK: c.ok.Load(), Refused: c.refused.Load(), Failed: c.failed.Load(),
			Seconds: time.Duration(c.nanos.Load()).Seconds()}
	}
	return m
}

func (o *outbound) countersFor(component string) *outboundCounters {
	o.mu.Lock()
	defer o.mu.Unlock()
	c, ok := o.counters[component]
	if !ok {
		c = new(outboundCounters)
		o.counters[component] = c
	}
	c.users++
	return c
}

// release drops the instance's hold on its component's counters, once no
// call of it runs any more.
func (p *outboundPolicy) release() {
	if p == nil {
		return
	}
	o := p.out
	o.mu.Lock()
	p.counters.users--
	o.mu.Unlock()
}

// pruneFlushed forgets the counters of components no instance here holds
// any more whose counts are all written (totals is what the flush that
// wrote them read); flushMu must be held.
func (o *outbound) pruneFlushed(totals map[string]OutboundTotals) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for name, c := range o.counters {
		t, read := totals[name]
		if c.users > 0 || !read || c.ok.Load()+c.refused.Load()+c.failed.Load() != t.OK+t.Refused+t.Failed {
			continue
		}
		delete(o.counters, name)
		delete(o.flushed, name)
	}
}

// outboundPolicy is what one deployment may do: fixed at Prepare.
type outboundPolicy struct {
	out      *outbound
	allowed  []manifest.Origin
	maxOpen  int
	counters *outboundCounters
	logs     worker.LogSink
	margin   time.Duration
	maxBytes int64
}

// newOutboundPolicy returns the policy of a deployment whose module imports
// wasi_experimental_http, or nil when it does not (its requests then carry
// no outbound state at all).
func newOutboundPolicy(rt *Runtime, mod wazero.CompiledModule, spec worker.Spec, timeout time.Duration) (*outboundPolicy, error) {
	m := spec.Manifest
	var logs worker.LogSink = discardSink{}
	if spec.Logs != nil {
		logs = spec.Logs
	}
	if !importsOutbound(mod) {
		if len(m.AllowedHosts) > 0 && spec.BuildLog != nil {
			fmt.Fprintf(spec.BuildLog, "allowed_hosts: the module does not import %s, so it makes no calls\n", outboundModule)
		}
		return nil, nil
	}
	p := &outboundPolicy{
		out:      rt.out,
		maxOpen:  m.HTTPMaxConcurrency,
		logs:     logs,
		margin:   min(timeout/10, maxDeadlineMargin),
		maxBytes: rt.cfg.OutboundMaxResponse,
	}
	if p.maxOpen <= 0 {
		p.maxOpen = DefaultHTTPMaxConcurrency
	}
	for _, s := range m.AllowedHosts {
		o, err := manifest.ParseOrigin(s)
		if err != nil {
			return nil, fmt.Errorf("allowed_hosts: %w", err)
		}
		p.allowed = append(p.allowed, o)
	}
	p.counters = rt.out.countersFor(spec.Component) // held until release
	if spec.BuildLog != nil {
		if len(p.allowed) == 0 {
			fmt.Fprintf(spec.BuildLog, "%s: imported, but allowed_hosts is empty: every call will be refused\n", outboundModule)
		} else {
			fmt.Fprintf(spec.BuildLog, "%s: calls allowed to %s\n", outboundModule, strings.Join(m.AllowedHosts, ", "))
		}
	}
	return p, nil
}

// allows reports whether u's origin is listed.
func (p *outboundPolicy) allows(u *url.URL) bool {
	o, ok := originOf(u)
	return ok && slices.Contains(p.allowed, o)
}

// originOf is the scheme, host and port a URL is sent to.
func originOf(u *url.URL) (manifest.Origin, bool) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" || u.Host == "" {
		return manifest.Origin{}, false
	}
	o, err := manifest.ParseOrigin(scheme + "://" + u.Host)
	return o, err == nil
}

// outboundKey is the context key of a request's session.
type outboundKey struct{}

// session is one request's outbound state: its open responses. A module
// instance runs on one goroutine, so a session needs no lock.
type session struct {
	p        *outboundPolicy
	deadline time.Time // of every call; zero: none
	open     []*response
	nOpen    int
	held     int64 // body bytes of the open responses
	method   string
	path     string
}

type response struct {
	header http.Header
	body   []byte
	pos    int
}

// withOutbound gives a request's module context its outbound session when
// the module imports wasi_experimental_http; otherwise it returns ctx.
func (in *instance) withOutbound(ctx context.Context, r *http.Request) context.Context {
	p := in.http
	if p == nil {
		return ctx
	}
	s := &session{p: p, method: r.Method, path: r.URL.Path}
	if d, ok := ctx.Deadline(); ok {
		s.deadline = d.Add(-p.margin)
	}
	return context.WithValue(ctx, outboundKey{}, s)
}

func sessionFrom(ctx context.Context) *session {
	s, _ := ctx.Value(outboundKey{}).(*session)
	return s
}

// instantiateOutbound instantiates the wasi_experimental_http host module
// in r. Its functions find the request's session in the context, so the
// module is instantiated once per wazero runtime.
func (o *outbound) instantiate(ctx context.Context, r wazero.Runtime) error {
	b := r.NewHostModuleBuilder(outboundModule)
	fn := func(name string, f hostFunc, params ...string) {
		ts := make([]api.ValueType, len(params))
		for i := range ts {
			ts[i] = api.ValueTypeI32
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(hostCall(f, len(params)), ts, []api.ValueType{api.ValueTypeI32}).
			WithParameterNames(params...).
			Export(name)
	}
	fn("req", o.req, "url_ptr", "url_len", "method_ptr", "method_len",
		"headers_ptr", "headers_len", "body_ptr", "body_len", "status_code_ptr", "res_handle_ptr")
	fn("close", closeResponse, "response_handle")
	fn("header_get", headerGet, "response_handle", "name_ptr", "name_len",
		"value_ptr", "value_len", "value_written_ptr")
	fn("headers_get_all", headersGetAll, "response_handle", "buf_ptr", "buf_len", "buf_written_ptr")
	fn("body_read", bodyRead, "response_handle", "buf_ptr", "buf_len", "buf_read_ptr")
	_, err := b.Instantiate(ctx)
	return err
}

// hostFunc is a function of the ABI: its arguments are the i32 parameters,
// zero-extended; it returns an http_error number.
type hostFunc func(ctx context.Context, s *session, mem api.Memory, args []uint64) uint32

// hostCall adapts a function of the ABI with n parameters: it finds the
// session and the module's memory, clears the upper halves of the stack
// slots (wazero leaves whatever was there above an i32) and puts the
// returned error number on the stack.
func hostCall(f hostFunc, n int) api.GoModuleFunc {
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		for i := range stack[:n] {
			stack[i] = uint64(uint32(stack[i]))
		}
		s := sessionFrom(ctx)
		mem := mod.Memory()
		switch {
		case s == nil:
			stack[0] = httpRuntimeError
		case mem == nil:
			stack[0] = httpMemoryNotFound
		default:
			stack[0] = uint64(f(ctx, s, mem, stack))
		}
	}
}

// readBytes reads len bytes at ptr. Out of range is BUFFER_TOO_SMALL, as
// the reference reports it.
func readBytes(mem api.Memory, ptr, n uint64) ([]byte, uint32) {
	b, ok := mem.Read(uint32(ptr), uint32(n))
	if !ok {
		return nil, httpBufferTooSmall
	}
	return b, httpSuccess
}

func readString(mem api.Memory, ptr, n uint64) (string, uint32) {
	b, e := readBytes(mem, ptr, n)
	if e != httpSuccess {
		return "", e
	}
	if !utf8.Valid(b) {
		return "", httpUTF8Error
	}
	return string(b), httpSuccess
}

// callOutcome is what a call's log line and counters say.
type callOutcome struct {
	origin  string
	status  int
	refused string // why the call was refused
	failed  string // why an allowed call failed
}

// req sends a request and stores its answer under a new handle.
func (o *outbound) req(ctx context.Context, s *session, mem api.Memory, a []uint64) uint32 {
	start := time.Now()
	if s.nOpen >= s.p.maxOpen {
		s.log(start, "", callOutcome{refused: fmt.Sprintf("%d responses already open (http_max_concurrency)", s.p.maxOpen)})
		return httpTooManySessions
	}
	rawURL, e := readString(mem, a[0], a[1])
	if e != httpSuccess {
		return e
	}
	u, err := url.Parse(rawURL)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return httpInvalidURL
	}
	method, e := readString(mem, a[2], a[3])
	if e != httpSuccess {
		return e
	}
	if !validMethod(method) {
		return httpInvalidMethod
	}
	out := callOutcome{origin: originString(u)}
	if !s.p.allows(u) {
		out.refused = "not in allowed_hosts"
		s.log(start, method, out)
		return httpDestinationNotAllowed
	}
	rawHeaders, e := readString(mem, a[4], a[5])
	if e != httpSuccess {
		return e
	}
	header, ok := parseHeaderLines(rawHeaders)
	if !ok {
		return httpInvalidEncoding
	}
	body, e := readBytes(mem, a[6], a[7])
	if e != httpSuccess {
		return e
	}

	resp, code := o.send(ctx, s, u, method, header, body, &out)
	s.log(start, method, out)
	if code != httpSuccess {
		return code
	}
	if !mem.WriteUint16Le(uint32(a[8]), uint16(out.status)) {
		return httpMemoryAccessError
	}
	handle := slices.Index(s.open, nil)
	if handle < 0 {
		handle = len(s.open)
		s.open = append(s.open, nil)
	}
	if !mem.WriteUint32Le(uint32(a[9]), uint32(handle)) {
		return httpMemoryAccessError
	}
	s.open[handle] = resp
	s.nOpen++
	s.held += int64(len(resp.body))
	return httpSuccess
}

// send makes the call within the session's deadline and reads the whole
// answer, at most what is left of the session's byte budget.
func (o *outbound) send(ctx context.Context, s *session, u *url.URL, method string, header http.Header, body []byte, out *callOutcome) (*response, uint32) {
	if !s.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, s.deadline)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, httpInvalidURL
	}
	if len(body) == 0 {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	host := header.Get("Host")
	header.Del("Host")
	req.Header = header
	if host != "" {
		req.Host = host
	}
	client := &http.Client{
		Transport: o.transport,
		CheckRedirect: func(next *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			if !s.p.allows(next.URL) {
				return &refusedError{reason: "redirect to " + originString(next.URL) + ", not in allowed_hosts"}
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, failure(ctx, err, out)
	}
	defer resp.Body.Close()
	left := s.p.maxBytes - s.held
	b, err := io.ReadAll(io.LimitReader(resp.Body, left+1))
	if err != nil {
		return nil, failure(ctx, err, out)
	}
	if int64(len(b)) > left {
		out.failed = fmt.Sprintf("answer cut: larger than %d bytes", left)
		if left != s.p.maxBytes {
			out.failed += fmt.Sprintf(" (what is left of the %d bytes a request may hold)", s.p.maxBytes)
		}
		return nil, httpRequestError
	}
	out.status = resp.StatusCode
	return &response{header: resp.Header, body: b}, httpSuccess
}

// failure sorts a call's error into refused or failed and returns its
// error number.
func failure(ctx context.Context, err error, out *callOutcome) uint32 {
	var ref *refusedError
	switch {
	case errors.As(err, &ref):
		out.refused = ref.reason
		return httpDestinationNotAllowed
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		out.failed = "cut at the deadline"
	default:
		out.failed = oneLine(err.Error())
	}
	return httpRequestError
}

// log writes the call's line in the component's logs and counts it.
func (s *session) log(start time.Time, method string, out callOutcome) {
	d := time.Since(start)
	c := s.p.counters
	c.nanos.Add(int64(d))
	var what string
	switch {
	case out.refused != "":
		c.refused.Add(1)
		what = "refused: " + out.refused
	case out.failed != "":
		c.failed.Add(1)
		what = "failed: " + out.failed
	default:
		c.ok.Add(1)
		what = strconv.Itoa(out.status)
	}
	s.p.logs.Log(worker.System, time.Now(), fmt.Sprintf("%s %s: outbound %s %s: %s (%s)",
		s.method, s.path, method, out.origin, what, d.Round(time.Microsecond)))
}

// originString names where a URL goes without its path and query, which
// may hold secrets.
func originString(u *url.URL) string {
	if o, ok := originOf(u); ok {
		return o.String()
	}
	return strings.ToLower(u.Scheme) + "://" + u.Host
}

// validMethod reports whether m is an HTTP token (RFC 9110 §9.1).
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !tokenChar(m[i]) {
			return false
		}
	}
	return true
}

func tokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, rune(c))
}

// parseHeaderLines reads the request headers a module passes:
// "name:value" lines separated by "\n" (a "\r" before it dropped), the
// value's leading blanks ignored; a repeated name keeps the last value, as
// the reference's HeaderMap::insert does.
func parseHeaderLines(s string) (http.Header, bool) {
	h := make(http.Header)
	for line := range strings.Lines(s) {
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		name, value, ok := strings.Cut(line, ":")
		if !ok || !validMethod(name) {
			return nil, false
		}
		value = strings.TrimLeft(value, " \t")
		for i := 0; i < len(value); i++ {
			if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
				return nil, false
			}
		}
		h.Set(name, value)
	}
	return h, true
}

func (s *session) response(handle uint64) *response {
	if handle >= uint64(len(s.open)) {
		return nil
	}
	return s.open[handle]
}

// closeResponse frees a handle. Closing a free handle succeeds, as in the
// reference (the Rust crate closes every response when it is dropped).
func closeResponse(_ context.Context, s *session, _ api.Memory, a []uint64) uint32 {
	if r := s.response(a[0]); r != nil {
		s.held -= int64(len(r.body))
		s.open[a[0]] = nil
		s.nOpen--
	}
	return httpSuccess
}

// headerGet writes the first value of a response header.
func headerGet(_ context.Context, s *session, mem api.Memory, a []uint64) uint32 {
	r := s.response(a[0])
	if r == nil {
		return httpInvalidHandle
	}
	name, e := readString(mem, a[1], a[2])
	if e != httpSuccess {
		return e
	}
	vs := r.header.Values(name)
	if len(vs) == 0 {
		return httpHeaderNotFound
	}
	return writeOut(mem, []byte(vs[0]), a[3], a[4], a[5])
}

// headersGetAll writes every response header as "name:value\n" lines,
// names in lower case and sorted, a repeated header on one line per value.
func headersGetAll(_ context.Context, s *session, mem api.Memory, a []uint64) uint32 {
	r := s.response(a[0])
	if r == nil {
		return httpInvalidHandle
	}
	var b []byte
	for _, k := range slices.Sorted(maps.Keys(r.header)) {
		name := strings.ToLower(k)
		for _, v := range r.header[k] {
			if strings.ContainsFunc(v, func(c rune) bool { return c < ' ' || c == 0x7f }) || !utf8.ValidString(v) {
				return httpRuntimeError // the reference refuses to encode such a value
			}
			b = append(b, name...)
			b = append(b, ':')
			b = append(b, v...)
			b = append(b, '\n')
		}
	}
	return writeOut(mem, b, a[1], a[2], a[3])
}

// writeOut writes b into the buffer at ptr of size n and its length at
// written; BUFFER_TOO_SMALL when it does not fit.
func writeOut(mem api.Memory, b []byte, ptr, n, written uint64) uint32 {
	if uint64(len(b)) > n {
		return httpBufferTooSmall
	}
	if !mem.Write(uint32(ptr), b) || !mem.WriteUint32Le(uint32(written), uint32(len(b))) {
		return httpMemoryAccessError
	}
	return httpSuccess
}

// bodyRead copies the next part of a response body; 0 bytes written means
// the body is done.
func bodyRead(_ context.Context, s *session, mem api.Memory, a []uint64) uint32 {
	r := s.response(a[0])
	if r == nil {
		return httpInvalidHandle
	}
	n := min(uint64(len(r.body)-r.pos), a[2])
	if !mem.Write(uint32(a[1]), r.body[r.pos:uint64(r.pos)+n]) || !mem.WriteUint32Le(uint32(a[3]), uint32(n)) {
		return httpMemoryAccessError
	}
	r.pos += int(n)
	return httpSuccess
}
