package router

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// bothPaths runs test on the event loops (where the platform has them)
// and on net/http's goroutine per connection (with Remote).
func bothPaths(t *testing.T, test func(t *testing.T, loops int)) {
	t.Run("loops", func(t *testing.T) { test(t, 0) })
	t.Run("net/http", func(t *testing.T) { test(t, -1) })
}

// fastServer serves r through a FastServer with loops (see serveFast).
func fastServer(t *testing.T, r *Router, loops int) string {
	t.Helper()
	return serveFast(t, &FastServer{Router: r, Loops: loops})
}

// serveFast serves through fs, whose fallback is fs.Router behind a mux
// with /healthz, as the router role has it, until the test ends.
func serveFast(t testing.TB, fs *FastServer) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle(Prefix, fs.Router)
	fs.Fallback = &http.Server{Handler: mux}
	return listenFast(t, fs)
}

// listenFast serves fs on a loopback port, returned, until the test ends,
// when it checks that fs shuts down cleanly.
func listenFast(t testing.TB, fs *FastServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := fs.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

// rawExchange writes raw request bytes on one connection and reads n
// answers.
func rawExchange(t *testing.T, addr, raw string, n int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for range n {
		res, err := http.ReadResponse(br, nil)
		for err == nil && res.StatusCode == http.StatusContinue {
			res, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			t.Fatalf("answer %d: %v", len(out)+1, err)
		}
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("answer %d body: %v", len(out)+1, err)
		}
		res.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, res)
	}
	return out
}

func readBody(res *http.Response) string {
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func TestFastForwards(t *testing.T) { bothPaths(t, testFastForwards) }

func testFastForwards(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	addr := fastServer(t, r, loops)
	// Pipelined on one connection: a GET, a POST with a body, and one
	// trying to smuggle internal headers; the answers come in order.
	raw := "GET /fn/hello/x?q=1 HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dXNlcg==\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n" +
		"POST /fn/hello/p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" +
		"GET /fn/hello/s HTTP/1.1\r\nHost: h\r\nX-Velo-Invoke-Deployment: 1\r\nX-Velo-Invoke-Mount: /evil\r\nConnection: close\r\n\r\n"
	res := rawExchange(t, addr, raw, 3)
	want := []string{
		"a GET /fn/hello/x?q=1 dep=7 mount=/fn/hello auth=Bearer tok client-auth=Basic dXNlcg== xff=127.0.0.1 body=",
		"a POST /fn/hello/p dep=7 mount=/fn/hello auth=Bearer tok client-auth= xff=127.0.0.1 body=hello",
		"a GET /fn/hello/s dep=7 mount=/fn/hello auth=Bearer tok client-auth= xff=127.0.0.1 body=",
	}
	for i, res := range res {
		if got := readBody(res); res.StatusCode != 200 || got != want[i] {
			t.Errorf("answer %d: %d %q\nwant %q", i, res.StatusCode, got, want[i])
		}
		if res.Header.Get("X-Velo-Worker") != "a" || res.Header.Get("X-Velo-Deployment") != "7" || res.ContentLength < 0 ||
			res.Header.Get("Content-Security-Policy") != SandboxPolicy {
			t.Errorf("answer %d headers: %v (length %d)", i, res.Header, res.ContentLength)
		}
	}
	if !res[2].Close {
		t.Error("Connection: close not honoured")
	}
	// Counted like ServeHTTP counts.
	if got := r.Totals()["hello"][0]; got != 3 {
		t.Errorf("hits counted: %d, want 3", got)
	}
}

// TestFastFallsBack: whatever the fast path does not handle is served by
// net/http, with the same answers ServeHTTP gives.
func TestFastFallsBack(t *testing.T) { bothPaths(t, testFastFallsBack) }

func testFastFallsBack(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	addr := fastServer(t, r, loops)
	big := strings.Repeat("b", 40<<10)
	for _, tc := range []struct {
		name, raw  string
		status     int
		bodyPrefix string
	}{
		{"healthz", "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", 200, "ok"},
		{"unknown component", "GET /fn/nope/ HTTP/1.1\r\nHost: h\r\n\r\n", 404, `no component named "nope"`},
		{"HTTP/1.0", "GET /fn/hello/old HTTP/1.0\r\nHost: h\r\n\r\n", 200, "a GET /fn/hello/old"},
		{"chunked body", "POST /fn/hello/c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, "a POST /fn/hello/c"},
		{"expect", "PUT /fn/hello/e HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nhi", 200, "a PUT /fn/hello/e"},
		{"body over the buffer", "POST /fn/hello/big HTTP/1.1\r\nHost: h\r\nContent-Length: " + fmt.Sprint(len(big)) + "\r\n\r\n" + big, 200, "a POST /fn/hello/big"},
		{"escaped path", "GET /fn/hello/a%2Fb HTTP/1.1\r\nHost: h\r\n\r\n", 200, "a GET /fn/hello/a%2Fb"},
		{"unclean path", "GET /fn/hello/../x HTTP/1.1\r\nHost: h\r\n\r\n", 307, ""},
		// Both lengths: refused, as nginx does (RFC 9112 6.1).
		{"smuggling", "POST /fn/hello/ HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad request: both Content-Length and Transfer-Encoding"},
		{"two hosts", "GET /fn/hello/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, ""},
		{"bad header", "GET /fn/hello/ HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n", 400, ""},
		{"folded header", "GET /fn/hello/f HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n", 400, "bad request: malformed header line"},
	} {
		res := rawExchange(t, addr, tc.raw, 1)[0]
		got := readBody(res)
		if loops < 0 && tc.status == 400 {
			tc.bodyPrefix = "400 Bad Request" // net/http's
		}
		if res.StatusCode != tc.status || !strings.HasPrefix(got, tc.bodyPrefix) {
			t.Errorf("%s: %d %q, want %d %q…", tc.name, res.StatusCode, got, tc.status, tc.bodyPrefix)
		}
	}
	// A connection that starts on the fast path and falls back stays
	// usable: both answers arrive in order.
	res := rawExchange(t, addr, "GET /fn/hello/1 HTTP/1.1\r\nHost: h\r\n\r\nGET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", 2)
	if !strings.HasPrefix(readBody(res[0]), "a GET /fn/hello/1") || readBody(res[1]) != "ok\n" {
		t.Fatalf("fast then fallback on one connection: %v", res)
	}
}

func TestFastFailoverAndStreaming(t *testing.T) { bothPaths(t, testFastFailoverAndStreaming) }

func testFastFailoverAndStreaming(t *testing.T, loops int) {
	dead := &fakeWorker{name: "dead"}
	a := newFakeWorker(t, "a", "tok", nil)
	b := newFakeWorker(t, "b", "tok", func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
	})
	a.serves.Store(false) // answers "not served here"
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), dead, a, b)
	addr := fastServer(t, r, loops)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer hc.CloseIdleConnections()
	for i := range 9 {
		res, err := hc.Post("http://"+addr+"/fn/hello/", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		got := readBody(res)
		res.Body.Close()
		if res.StatusCode != 200 || got != "part0;part1;part2;" || res.Header.Get("X-Velo-Worker") != "b" {
			t.Fatalf("call %d: %d %q from %q", i, res.StatusCode, got, res.Header.Get("X-Velo-Worker"))
		}
		if len(res.TransferEncoding) == 0 || res.TransferEncoding[0] != "chunked" {
			t.Fatalf("streamed answer not chunked: %v", res.TransferEncoding)
		}
	}
	// Nobody can serve: 503 from the fast path.
	b.serves.Store(false)
	res := rawExchange(t, addr, "GET /fn/hello/ HTTP/1.1\r\nHost: h\r\n\r\n", 1)[0]
	if res.StatusCode != 503 || !strings.Contains(readBody(res), "no healthy instance") {
		t.Fatalf("none serving: %d", res.StatusCode)
	}
}

// TestFastHammer: many clients, keep-alive and new connections, GETs and
// POSTs, two workers; every answer matches its request.
func TestFastHammer(t *testing.T) { bothPaths(t, testFastHammer) }

func testFastHammer(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", nil)
	b := newFakeWorker(t, "b", "tok", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok", MaxIdlePerWorker: 8}), a, b)
	addr := fastServer(t, r, loops)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableKeepAlives: g%4 == 0}}
			defer hc.CloseIdleConnections()
			for i := range 50 {
				tag := fmt.Sprintf("g%d-%d", g, i)
				var res *http.Response
				var err error
				if i%2 == 0 {
					res, err = hc.Get("http://" + addr + "/fn/hello/" + tag)
				} else {
					res, err = hc.Post("http://"+addr+"/fn/hello/"+tag, "text/plain", strings.NewReader(tag))
				}
				if err != nil {
					errs <- err
					return
				}
				got := readBody(res)
				res.Body.Close()
				if res.StatusCode != 200 || !strings.Contains(got, "/fn/hello/"+tag+" ") || (i%2 == 1 && !strings.HasSuffix(got, "body="+tag)) {
					errs <- fmt.Errorf("%s: %d %q", tag, res.StatusCode, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := r.Totals()["hello"][0]; got != 32*50 {
		t.Fatalf("hits: %d, want %d", got, 32*50)
	}
}

// TestResponseTimeout: a worker that stops answering does not hold the
// caller forever (on both paths), while a streamed answer that keeps
// sending outlives the timeout.
func TestResponseTimeout(t *testing.T) { bothPaths(t, testResponseTimeout) }

func testResponseTimeout(t *testing.T, loops int) {
	hang := make(chan struct{})
	defer close(hang)
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/hang") {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			return
		}
		for i := range 12 {
			fmt.Fprintf(w, "%d;", i)
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond)
		}
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok", ResponseTimeout: 2 * time.Second}), a)
	addr := fastServer(t, r, loops)
	for _, path := range []string{"/fn/hello/hang", "/fn/hello/%68ang"} { // fast path, net/http path
		start := time.Now()
		res := rawExchange(t, addr, "POST "+path+" HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx", 1)[0]
		if took := time.Since(start); res.StatusCode != http.StatusBadGateway || took > 5*time.Second {
			t.Errorf("%s: hung worker answered %d after %v, want 502 after about 2s", path, res.StatusCode, took)
		}
	}
	res := rawExchange(t, addr, "GET /fn/hello/stream HTTP/1.1\r\nHost: h\r\n\r\n", 1)[0]
	if got := readBody(res); got != "0;1;2;3;4;5;6;7;8;9;10;11;" {
		t.Fatalf("streamed answer cut: %q", got)
	}
}
