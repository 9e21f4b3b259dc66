package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// The tests of the HTTP edge: what a client or a worker can make of the
// router with raw bytes. Each runs on the event loops and on the goroutine
// path (bothPaths) and, where a request can be made to go to net/http
// (handed off), on that path too.

// handOff makes a raw request one the fast path leaves to net/http (a Te
// field) but that means the same to the component.
func handOff(raw string) string {
	return strings.Replace(raw, "\r\n", "\r\nTe: trailers\r\n", 1)
}

// viewWorker answers with what a component sees of the forwarding and
// cookie headers.
func viewWorker(t *testing.T) *fakeWorker {
	return newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		var velo []string
		for k := range r.Header {
			if strings.HasPrefix(k, "X-Velo-") && k != HeaderInvokeDeployment && k != HeaderInvokeMount &&
				k != HeaderRemoteAddr && k != HeaderClientAuthorization {
				velo = append(velo, k)
			}
		}
		slices.Sort(velo)
		w.Header().Add("Set-Cookie", "velo_session=planted; Path=/")
		w.Header().Add("Set-Cookie", "__Host-velo_oauth_state=x; Path=/; Secure")
		w.Header().Add("Set-Cookie", "theirs=1")
		fmt.Fprintf(w, "xff=%s xfp=%s remote=%s velo=%v cookie=%q", r.Header.Get("X-Forwarded-For"),
			r.Header.Get("X-Forwarded-Proto"), r.Header.Get(HeaderRemoteAddr), velo, r.Header.Values("Cookie"))
	})
}

func TestForwardedHeadersAndCookies(t *testing.T) { bothPaths(t, testForwardedHeadersAndCookies) }

func testForwardedHeadersAndCookies(t *testing.T, loops int) {
	const forged = "GET /fn/hello/x HTTP/1.1\r\nHost: h\r\nX-Velo-Forwarded: 1\r\nX-Velo-Remote-Addr: 6.6.6.6\r\nX-Velo-Auth-Subject: admin\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nCookie: a=1; velo_session=s3cret; __Host-velo_session=t0p\r\nCookie: __Secure-velo_x=1\r\n\r\n"
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    string
	}{
		{"untrusted peer", nil, `xff=127.0.0.1 xfp=http remote=127.0.0.1 velo=[] cookie=["a=1"]`},
		{"trusted load balancer", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, `xff=6.6.6.6, 127.0.0.1 xfp=https remote=6.6.6.6 velo=[] cookie=["a=1"]`},
	} {
		a := viewWorker(t)
		r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
		r.cfg.TrustedProxies = tc.trusted
		addr := fastServer(t, r, loops)
		for _, path := range []string{"fast", "net/http"} {
			raw := forged
			if path == "net/http" {
				raw = handOff(raw)
			}
			res := rawExchange(t, addr, raw, 1)[0]
			if got := readBody(res); got != tc.want {
				t.Errorf("%s, %s: component saw\n%s\nwant\n%s", tc.name, path, got, tc.want)
			}
			if got := res.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"theirs=1"}) {
				t.Errorf("%s, %s: client got Set-Cookie %q, want only the component's own", tc.name, path, got)
			}
		}
	}
}

// TestInProcessForwardedHeadersAndCookies: velo up's worker, in process,
// sees the same as a remote one, and RemoteAddr is the client.
func TestInProcessForwardedHeadersAndCookies(t *testing.T) {
	var seen *http.Request
	b := InProcess(serveFunc(func(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
		seen = r.Clone(context.Background())
		w.Header().Add("Set-Cookie", "velo_session=planted")
		w.Header().Add("Set-Cookie", "theirs=1")
		w.WriteHeader(200)
		return true
	}))
	st := &tableStore{routes: []store.Route{{Component: "hello", Deployment: 7, Workers: []store.Worker{{Name: "local", SeenAt: time.Now()}}}}}
	for _, tc := range []struct {
		trusted                bool
		xff, xfp, remote, want string
	}{
		{false, "192.0.2.1", "http", "192.0.2.1:5555", ""},
		{true, "203.0.113.5, 10.0.0.1, 192.0.2.1", "https", "10.0.0.1:0", ""},
	} {
		cfg := Config{Backend: func(store.Worker) Backend { return b }, Logger: discardLogger()}
		if tc.trusted {
			cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		}
		r := New(cfg, st)
		if err := r.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/fn/hello/", nil)
		req.RemoteAddr = "192.0.2.1:5555"
		req.Header.Set("X-Forwarded-For", "203.0.113.5, 10.0.0.1")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Velo-Forwarded", "1")
		req.Header.Set("Cookie", "velo_session=s3cret; a=1")
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		if got := seen.Header.Get("X-Forwarded-For"); got != tc.xff {
			t.Errorf("trusted %v: X-Forwarded-For %q, want %q", tc.trusted, got, tc.xff)
		}
		if got := seen.Header.Get("X-Forwarded-Proto"); got != tc.xfp {
			t.Errorf("trusted %v: X-Forwarded-Proto %q, want %q", tc.trusted, got, tc.xfp)
		}
		if seen.RemoteAddr != tc.remote || seen.Header.Get("X-Velo-Forwarded") != "" || seen.Header.Get("Cookie") != "a=1" {
			t.Errorf("trusted %v: RemoteAddr %q, header %v", tc.trusted, seen.RemoteAddr, seen.Header)
		}
		if got := rec.Header().Values("Set-Cookie"); !slices.Equal(got, []string{"theirs=1"}) {
			t.Errorf("trusted %v: Set-Cookie %q", tc.trusted, got)
		}
	}
}

type serveFunc func(w http.ResponseWriter, r *http.Request, d int64, mount string) bool

func (f serveFunc) Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	return f(w, r, d, mount)
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.7 ::1,fd00::/8")
	if err != nil || fmt.Sprint(got) != "[10.0.0.0/8 192.0.2.7/32 ::1/128 fd00::/8]" {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ParseTrustedProxies("10.0.0.0/33"); err == nil || !strings.Contains(err.Error(), `"10.0.0.0/33"`) {
		t.Fatalf("bad CIDR: %v", err)
	}
}

// exchange writes raw on a new connection and returns everything the
// router sent until it closed the connection or 10s passed, and whether it
// closed it.
func exchange(t *testing.T, addr, raw string) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, raw)
	var out bytes.Buffer
	_, err = io.Copy(&out, c)
	return out.String(), err == nil
}

func TestRequestFraming(t *testing.T) { bothPaths(t, testRequestFraming) }

func testRequestFraming(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	addr := fastServer(t, r, loops)
	const next = "GET /fn/hello/smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
	for _, tc := range []struct{ name, raw string }{
		{"plus sign", "POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc"},
		{"minus zero", "POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nContent-Length: -0\r\n\r\n"},
		{"folded length", "POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n 3\r\n\r\nabc"},
		{"two numbers", "POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3 3\r\n\r\nabc"},
		{"length and chunked", "POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + next},
		{"bare LF", "GET /fn/hello/ HTTP/1.1\nHost: h\n\n"},
		{"bare LF, one line", "GET /fn/hello/ HTTP/1.1\r\nHost: h\nX: 1\r\n\r\n"},
		{"bare CR", "GET /fn/hello/ HTTP/1.1\r\nHost: h\rX: 1\r\n\r\n"},
		{"invalid host", "GET /fn/hello/ HTTP/1.1\r\nHost: a b\r\n\r\n"},
	} {
		// On the fast path's first request, and on a connection net/http
		// serves already (after a request it was handed).
		for _, raw := range []string{tc.raw, handOff("GET /fn/hello/first HTTP/1.1\r\nHost: h\r\n\r\n") + tc.raw} {
			got, closed := exchange(t, addr, raw)
			if n := strings.Count(got, "HTTP/1.1 400 "); n != 1 || !closed || strings.Contains(got, "smuggled") {
				t.Errorf("%s: %d answers 400, closed %v:\n%s", tc.name, n, closed, got)
			}
		}
	}

	// A garbled chunked body is the client's fault: 400, not a server
	// error.
	got, _ := exchange(t, addr, "POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 400 ") {
		t.Errorf("garbled chunked body: %q", got)
	}
	if errs := r.Totals()["hello"][1]; errs != 0 {
		t.Errorf("garbled chunked body counted as %d server errors", errs)
	}
}

// rawWorker is a worker that answers every request with answer, as bytes,
// and leaves the connection open. It counts connections.
func rawWorker(t *testing.T, answer string) (addr string, conns *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns = new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			t.Cleanup(func() { c.Close() })
			go func() {
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, answer)
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), conns
}

func rawRouter(t *testing.T, addr string) *Router {
	st := &tableStore{routes: []store.Route{{Component: "hello", Deployment: 7, Workers: []store.Worker{{Name: "w", Addr: addr, SeenAt: time.Now()}}}}}
	rm := NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"})
	t.Cleanup(rm.Close)
	r := New(Config{Backend: rm.Backend, Logger: discardLogger()}, st)
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAnswerFraming(t *testing.T) { bothPaths(t, testAnswerFraming) }

func testAnswerFraming(t *testing.T, loops int) {
	for _, tc := range []struct{ name, answer string }{
		{"bare CR", "HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 2\r\n\r\nok"},
		{"invalid name", "HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 2\r\n\r\nok"},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"},
		{"length and chunked", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"LF only", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
	} {
		addr, _ := rawWorker(t, tc.answer)
		fast := fastServer(t, rawRouter(t, addr), loops)
		for _, raw := range []string{"POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
			handOff("POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")} {
			// At once: rawExchange gives up after 10s, the router's
			// ResponseTimeout is 5 minutes.
			res := rawExchange(t, fast, raw, 1)[0]
			body := readBody(res)
			if res.StatusCode != 502 || strings.Contains(body, "127.0.0.1") || strings.Contains(body, "ok") {
				t.Errorf("%s: %d %q, want 502, naming no address", tc.name, res.StatusCode, body)
			}
		}
	}

	// Bytes after a complete answer: that worker connection is not used
	// again, so the next call does not get them as its answer.
	addr, conns := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected")
	fast := fastServer(t, rawRouter(t, addr), loops)
	for _, raw := range []string{"GET /fn/hello/ HTTP/1.1\r\nHost: h\r\n\r\n", handOff("GET /fn/hello/ HTTP/1.1\r\nHost: h\r\n\r\n")} {
		before := conns.Load()
		for i := range 3 {
			if got := readBody(rawExchange(t, fast, raw, 1)[0]); got != "ok" {
				t.Errorf("call %d (%q): %q", i, raw[:20], got)
			}
		}
		if n := conns.Load() - before; n != 3 {
			t.Errorf("3 calls on %d worker connections, want 3", n)
		}
	}
}
