package wasm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/worker"
)

// outboundModules are the three builds of the outbound test program, all
// checked in beside their sources (testdata/build.sh).
func outboundModules(t *testing.T) map[string]string {
	t.Helper()
	return map[string]string{
		"c":    filepath.Join("testdata", "outbound-c.wasm"),
		"rust": filepath.Join("testdata", "outbound-rust.wasm"),
		"go":   filepath.Join("testdata", "outbound-go.wasm"),
	}
}

// upstream is the local server the modules call.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", r.Header.Get("X-Lang"))
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		fmt.Fprintf(w, "method=%s auth=%q type=%s body=%q", r.Method, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), b)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write([]byte(strings.Repeat("x", n)))
	})
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) port() string {
	_, p, _ := net.SplitHostPort(u.Listener.Addr().String())
	return p
}

func outboundSpec(module string, logs worker.LogSink, allowed []string, timeout time.Duration, maxConc int) worker.Spec {
	return worker.Spec{
		Component: "outbound",
		Dir:       filepath.Dir(module),
		Manifest: manifest.Manifest{
			Name: "outbound", Runtime: manifest.WASM, Module: filepath.Base(module),
			Timeout: timeout, Memory: 32 << 20,
			AllowedHosts: allowed, HTTPMaxConcurrency: maxConc,
		},
		Logs: logs,
	}
}

// call runs one request through in with the test program's headers.
func callOut(in worker.Instance, hdr map[string]string, body string) string {
	r := httptest.NewRequest("POST", "/fn/echo/", strings.NewReader(body))
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	in.Serve(w, r, "/fn/echo")
	return fmt.Sprintf("%d %s", w.Code, w.Body.String())
}

func TestOutbound(t *testing.T) {
	up := newUpstream(t)
	other := newUpstream(t)
	self := "http://127.0.0.1:" + up.port()
	rt := newRuntime(t, Config{OutboundMaxResponse: 64 << 10})
	rt.out.guard.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "rebound.test": // a public-looking name that resolves to loopback
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "metadata.test":
			return []netip.Addr{netip.MustParseAddr("169.254.169.254")}, nil
		case "private.test":
			return []netip.Addr{netip.MustParseAddr("::ffff:10.1.2.3")}, nil
		}
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	allowed := []string{self, "http://localhost:" + up.port(), "http://rebound.test:" + up.port(),
		"http://metadata.test", "http://private.test"}

	for lang, module := range outboundModules(t) {
		t.Run(lang, func(t *testing.T) {
			logs := &sink{}
			in := prepare(t, rt, outboundSpec(module, logs, allowed, 2*time.Second, 2))
			run := func(hdr map[string]string, body string) string {
				t.Helper()
				return callOut(in, hdr, body)
			}
			want := func(got string, parts ...string) {
				t.Helper()
				for _, p := range parts {
					if !strings.Contains(got, p) {
						t.Errorf("answer %q lacks %q", got, p)
					}
				}
			}
			wantLog := func(substr string) {
				t.Helper()
				if !logs.has(worker.System, substr) {
					t.Errorf("logs %q lack %q", logs.all(), substr)
				}
			}

			t.Run("allowed", func(t *testing.T) {
				got := run(map[string]string{"X-Url": self + "/echo?k=secret", "X-Method": "PUT", "X-Auth": "Bearer k1"}, "hello")
				want(got, "200 ", "status=200\n", "x-echo="+lang+"\n",
					"all:\n", "set-cookie:a=1\nset-cookie:b=2\n", "x-echo:"+lang+"\n",
					`body:`+"\n"+`method=PUT auth="Bearer k1" type=text/plain body="hello"`,
					"after close=1\n")
				wantLog("POST /fn/echo/: outbound PUT " + self + ": 200 (")
				for _, l := range logs.all() {
					if strings.Contains(l, "secret") {
						t.Errorf("log line %q shows the URL's query", l)
					}
				}
			})
			t.Run("redirect followed to an allowed origin", func(t *testing.T) {
				got := run(map[string]string{"X-Url": self + "/redirect?to=/echo"}, "")
				want(got, "status=200\n", "method=GET")
			})
			t.Run("not listed", func(t *testing.T) {
				before := other.hits.Load()
				got := run(map[string]string{"X-Url": "http://127.0.0.1:" + other.port() + "/echo"}, "")
				want(got, "200 ", "error=7\n")
				wantLog("outbound GET http://127.0.0.1:" + other.port() + ": refused: not in allowed_hosts")
				if other.hits.Load() != before {
					t.Error("the refused server was called")
				}
			})
			t.Run("name resolving to loopback", func(t *testing.T) {
				before := up.hits.Load()
				got := run(map[string]string{"X-Url": "http://localhost:" + up.port() + "/echo"}, "")
				want(got, "error=7\n")
				wantLog("refused: localhost resolves to ")
				got = run(map[string]string{"X-Url": "http://rebound.test:" + up.port() + "/echo"}, "")
				want(got, "error=7\n")
				wantLog("refused: rebound.test resolves to 127.0.0.1, a loopback address")
				if up.hits.Load() != before {
					t.Error("the server was reached through a name")
				}
			})
			t.Run("name resolving to link-local and private", func(t *testing.T) {
				want(run(map[string]string{"X-Url": "http://metadata.test/latest/meta-data/"}, ""), "error=7\n")
				wantLog("refused: metadata.test resolves to 169.254.169.254, a link-local address")
				want(run(map[string]string{"X-Url": "http://private.test/"}, ""), "error=7\n")
				wantLog("refused: private.test resolves to ::ffff:10.1.2.3, a private address")
			})
			t.Run("redirect to a refused origin", func(t *testing.T) {
				before := other.hits.Load()
				target := "http://127.0.0.1:" + other.port() + "/echo"
				got := run(map[string]string{"X-Url": self + "/redirect?to=" + target}, "")
				want(got, "error=7\n")
				wantLog("refused: redirect to http://127.0.0.1:" + other.port() + ", not in allowed_hosts")
				if other.hits.Load() != before {
					t.Error("the redirect was followed")
				}
			})
			t.Run("slow server cut at the deadline", func(t *testing.T) {
				start := time.Now()
				got := run(map[string]string{"X-Url": self + "/slow"}, "")
				// 2s timeout, 200ms kept back: the call is cut and the
				// module still answers itself.
				want(got, "200 ", "error=11\n")
				wantLog("outbound GET " + self + ": failed: cut at the deadline")
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("answered after %s, past the request's timeout", d)
				}
			})
			t.Run("oversized answer cut", func(t *testing.T) {
				want(run(map[string]string{"X-Url": self + "/big?n=65536"}, ""), "status=200\n")
				want(run(map[string]string{"X-Url": self + "/big?n=65537"}, ""), "error=11\n")
				wantLog("failed: answer cut: larger than 65536 bytes")
			})
			t.Run("http_max_concurrency", func(t *testing.T) {
				got := run(map[string]string{"X-Url": self + "/big?n=10", "X-Open": "3"}, "")
				want(got, "opened=2\nerror=13\n")
				wantLog("refused: 2 responses already open (http_max_concurrency)")
			})
			t.Run("bad input", func(t *testing.T) {
				want(run(map[string]string{"X-Url": "not a url"}, ""), "error=10\n")
				want(run(map[string]string{"X-Url": self + "/echo", "X-Method": "GE T"}, ""), "error=8\n")
				want(run(map[string]string{"X-Url": self + "/echo", "X-Auth": "a\x01b"}, ""), "error=9\n")
			})
		})
	}

	tot := rt.OutboundTotals()["outbound"]
	if tot.OK == 0 || tot.Refused == 0 || tot.Failed == 0 || tot.Seconds <= 0 {
		t.Errorf("totals %+v: want calls of every outcome counted", tot)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector(rt))
	var metrics strings.Builder
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			fmt.Fprintf(&metrics, "%s", mf.GetName())
			for _, l := range m.GetLabel() {
				fmt.Fprintf(&metrics, " %s=%s", l.GetName(), l.GetValue())
			}
			fmt.Fprintf(&metrics, " %v\n", m.GetCounter().GetValue())
		}
	}
	for _, want := range []string{
		fmt.Sprintf("velo_wasm_outbound_calls_total component=outbound result=refused %d\n", tot.Refused),
		fmt.Sprintf("velo_wasm_outbound_calls_total component=outbound result=ok %d\n", tot.OK),
		fmt.Sprintf("velo_wasm_outbound_calls_total component=outbound result=failed %d\n", tot.Failed),
	} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics\n%s\nlack %s", metrics.String(), want)
		}
	}
}

// TestOutboundNothingAllowed: without allowed_hosts every call is refused,
// and the module is accepted at deploy.
func TestOutboundNothingAllowed(t *testing.T) {
	up := newUpstream(t)
	rt := newRuntime(t, Config{})
	logs := &sink{}
	var buildLog strings.Builder
	spec := outboundSpec(filepath.Join("testdata", "outbound-c.wasm"), logs, nil, 5*time.Second, 0)
	spec.BuildLog = &buildLog
	in := prepare(t, rt, spec)
	if got := callOut(in, map[string]string{"X-Url": up.URL + "/echo"}, ""); !strings.Contains(got, "error=7\n") {
		t.Errorf("answer %q, want error=7", got)
	}
	if up.hits.Load() != 0 {
		t.Error("the server was called")
	}
	if !strings.Contains(buildLog.String(), "allowed_hosts is empty: every call will be refused") {
		t.Errorf("build log %q does not warn", buildLog.String())
	}
}

func TestGuardForbidden(t *testing.T) {
	g := newGuard([]netip.Prefix{netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("198.51.100.0/24")})
	g.own = append(g.own, netip.MustParsePrefix("93.184.215.14/32"))
	for _, tt := range []struct {
		ip, want string
	}{
		{"127.0.0.1", "loopback"},
		{"127.255.0.9", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"10.0.0.1", "private"},
		{"172.16.5.4", "private"},
		{"192.168.1.1", "private"},
		{"fd00::1", "private"},
		{"169.254.169.254", "link-local"},
		{"fe80::1", "link-local"},
		{"0.0.0.0", "special-purpose"},
		{"::", "special-purpose"},
		{"100.64.0.1", "special-purpose"},
		{"224.0.0.1", "link-local"},
		{"239.1.2.3", "special-purpose"},
		{"255.255.255.255", "special-purpose"},
		{"64:ff9b::a00:1", "private address (through NAT64)"},
		{"2002:7f00:1::", "loopback address (through 6to4)"},
		{"93.184.215.14", "this Velo cluster"},
		{"1.1.1.1", ""},
		{"2606:4700:4700::1111", ""},
		{"64:ff9b::101:101", ""},
	} {
		got := g.forbidden(netip.MustParseAddr(tt.ip))
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("forbidden(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
}

// TestGuardControl: the Control hook refuses a special address on the
// socket itself, whatever resolved it.
func TestGuardControl(t *testing.T) {
	up := newUpstream(t)
	g := newGuard(nil)
	_, err := g.dialer.DialContext(context.Background(), "tcp", up.Listener.Addr().String())
	var ref *refusedError
	if !errors.As(err, &ref) || !strings.Contains(ref.reason, "loopback") {
		t.Fatalf("dial %s: %v, want a refusal", up.Listener.Addr(), err)
	}
	if up.hits.Load() != 0 {
		t.Error("the server was reached")
	}
}

func TestParseHeaderLines(t *testing.T) {
	h, ok := parseHeaderLines("content-type:text/plain\r\nX-A: 1\nx-a:2\nempty:\n")
	if !ok || h.Get("Content-Type") != "text/plain" || h.Get("X-A") != "2" || len(h["X-A"]) != 1 || h.Get("Empty") != "" {
		t.Fatalf("got %v %v", h, ok)
	}
	for _, bad := range []string{"nocolon\n", "a:b\n\nc:d\n", "bad name:x\n", ":x\n", "a:b\x00c\n"} {
		if _, ok := parseHeaderLines(bad); ok {
			t.Errorf("parseHeaderLines(%q) accepted", bad)
		}
	}
}

// FuzzParseHeaderLines: what the parser accepts goes out as valid header
// fields.
func FuzzParseHeaderLines(f *testing.F) {
	for _, s := range []string{"a:b\n", "content-type:text/plain\r\nx:y", "nocolon", "a:b\n\n", "a: b\tc\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, ok := parseHeaderLines(s)
		if !ok {
			return
		}
		r, err := http.NewRequest("GET", "http://x/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Header = h
		var b strings.Builder
		if err := r.Write(&b); err != nil {
			t.Fatalf("accepted %q, which does not write: %v", s, err)
		}
		if _, err := http.ReadRequest(bufioReader(b.String())); err != nil {
			t.Fatalf("accepted %q, which does not read back: %v\n%s", s, err, b.String())
		}
	})
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }

// flakyHits is a real store whose AddHits can fail, as when Postgres is
// down.
type flakyHits struct {
	*store.Store
	down atomic.Bool
}

func (f *flakyHits) AddHits(ctx context.Context, batch []store.Hits) error {
	if f.down.Load() {
		return errors.New("store is down")
	}
	return f.Store.AddHits(ctx, batch)
}

// TestOutboundStats: every outbound call, allowed or refused, reaches the
// component's per-minute statistics, the refused ones also as errors, and
// counts made while the store is down are written by the next flush.
func TestOutboundStats(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateComponent(ctx, store.Component{Name: "outbound", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	hits := &flakyHits{Store: st}
	up := newUpstream(t)
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, outboundSpec(filepath.Join("testdata", "outbound-c.wasm"), &sink{}, []string{up.URL}, 5*time.Second, 2))
	total := func() (calls, errs int64) {
		t.Helper()
		hs, err := st.Stats(ctx, "outbound", time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			calls, errs = calls+h.Outbound, errs+h.OutboundErrors
		}
		return calls, errs
	}
	for range 3 {
		if got := callOut(in, map[string]string{"X-Url": up.URL + "/echo"}, ""); !strings.HasPrefix(got, "200 ") || strings.Contains(got, "error=") {
			t.Fatalf("allowed call: %q", got)
		}
	}
	if got := callOut(in, map[string]string{"X-Url": "http://127.0.0.1:1/echo"}, ""); !strings.Contains(got, "error=") {
		t.Fatalf("refused call: %q", got)
	}
	if err := rt.FlushStats(ctx, hits); err != nil {
		t.Fatal(err)
	}
	if calls, errs := total(); calls != 4 || errs != 1 {
		t.Fatalf("stats: %d outbound calls, %d errors, want 4 and 1", calls, errs)
	}
	if err := rt.FlushStats(ctx, hits); err != nil {
		t.Fatal(err)
	}
	if calls, _ := total(); calls != 4 {
		t.Fatalf("a second flush with nothing new: %d calls, want 4", calls)
	}
	hits.down.Store(true)
	callOut(in, map[string]string{"X-Url": up.URL + "/echo"}, "")
	if err := rt.FlushStats(ctx, hits); err == nil {
		t.Fatal("flush to a store that is down succeeded")
	}
	hits.down.Store(false)
	if err := rt.FlushStats(ctx, hits); err != nil {
		t.Fatal(err)
	}
	if calls, errs := total(); calls != 5 || errs != 1 {
		t.Fatalf("after the store came back: %d calls, %d errors, want 5 and 1", calls, errs)
	}
}

// TestOutboundCountersPruned: the counters of components no longer served
// here (their instances closed: deleted, or moved away) are written once
// more and then forgotten, so deleting many components leaves the maps
// bounded; a component still served keeps its counts.
func TestOutboundCountersPruned(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	up := newUpstream(t)
	rt := newRuntime(t, Config{})
	const n = 40
	var ins []worker.Instance
	for i := range n + 1 {
		name := fmt.Sprintf("outbound-%d", i)
		if err := st.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}); err != nil {
			t.Fatal(err)
		}
		spec := outboundSpec(filepath.Join("testdata", "outbound-c.wasm"), &sink{}, []string{up.URL}, 5*time.Second, 2)
		spec.Component = name
		in := prepare(t, rt, spec)
		if got := callOut(in, map[string]string{"X-Url": up.URL + "/echo"}, ""); !strings.HasPrefix(got, "200 ") {
			t.Fatalf("%s: %q", name, got)
		}
		ins = append(ins, in)
	}
	for _, in := range ins[:n] { // the last one stays
		if err := in.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := rt.FlushStats(ctx, st); err != nil {
		t.Fatal(err)
	}
	hs, err := st.Stats(ctx, "outbound-0", time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].Outbound != 1 {
		t.Fatalf("a closed component's last calls were not written before its counters went: %+v", hs)
	}
	tot := rt.OutboundTotals()
	rt.out.mu.Lock()
	counters := len(rt.out.counters)
	rt.out.mu.Unlock()
	rt.out.flushMu.Lock()
	flushed := len(rt.out.flushed)
	rt.out.flushMu.Unlock()
	if len(tot) != 1 || counters != 1 || flushed != 1 {
		t.Fatalf("after closing %d of %d components: %d totals, %d counters, %d flushed, want 1 each", n, n+1, len(tot), counters, flushed)
	}
	if got := tot[fmt.Sprintf("outbound-%d", n)]; got.OK != 1 {
		t.Fatalf("the component still served: %+v, want 1 call", got)
	}
}
