package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// handlerBackend is an in-process worker whose calls run h, and which
// records what each call saw and which writer it was given.
type handlerBackend struct {
	h     func(w http.ResponseWriter, r *http.Request)
	local atomic.Int64 // calls served through the in-process path's writer
	calls atomic.Int64
}

func (b *handlerBackend) Endpoint() *Endpoint { return nil }

func (b *handlerBackend) Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	b.calls.Add(1)
	if _, ok := w.(*localWriter); ok {
		b.local.Add(1)
	}
	b.h(w, r)
	return true
}

// seen is what a call's handler echoes of its request.
func seen(r *http.Request) string {
	body, _ := io.ReadAll(r.Body)
	var keys []string
	for k := range r.Header {
		if k != "Connection" { // hop-by-hop: net/http keeps it, the fast paths drop it
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	server, _, _ := net.SplitHostPort(r.Host) // each server its own port
	fmt.Fprintf(&b, "%s %s %s host=%s remote=%s len=%d body=%q\n", r.Method, r.URL.Path, r.URL.RawQuery, server, host, r.ContentLength, body)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %q\n", k, r.Header[k])
	}
	return b.String()
}

// TestInProcessPathMatchesNetHTTP: a component call to an in-process
// worker answers the same on FastServer's in-process path as through
// net/http (ServeHTTP): what the handler sees of the request, and status,
// headers, body and trailers of what it answers, for answers held whole,
// streamed, flushed, bodiless, HEAD, sniffed and declared; and it is the
// in-process path that served them.
func TestInProcessPathMatchesNetHTTP(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 20<<10) // 320 KiB: streamed
	handlers := map[string]func(w http.ResponseWriter, r *http.Request){
		"echo": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, seen(r))
		},
		"sniffed": func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html><body>hi</body></html>") },
		"status": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header().Set("X-Odd", "line\r\nbreak")
			w.WriteHeader(http.StatusTeapot)
			w.WriteHeader(http.StatusOK) // superfluous: ignored
			io.WriteString(w, "short and stout")
		},
		"big": func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < len(big); i += 10000 {
				io.WriteString(w, big[i:min(i+10000, len(big))])
			}
		},
		"declared": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
			if _, err := io.WriteString(w, "!"); err != http.ErrContentLength {
				panic(fmt.Sprintf("write past Content-Length: %v", err))
			}
		},
		"flushed": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "first ")
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
			io.WriteString(w, "second")
		},
		"empty": func(w http.ResponseWriter, r *http.Request) {},
		"nocontent": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "x"); err != http.ErrBodyNotAllowed {
				panic(fmt.Sprintf("body on 204: %v", err))
			}
		},
		"trailers": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "7")
		},
		"close": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		},
	}
	type call struct{ name, method, target, body string }
	calls := []call{
		{"echo", "GET", "/fn/echo/a/b?x=1&y=2", ""},
		{"echo", "POST", "/fn/echo/post", "the body"},
		{"sniffed", "GET", "/fn/sniffed/", ""},
		{"status", "GET", "/fn/status/", ""},
		{"big", "GET", "/fn/big/", ""},
		{"big", "HEAD", "/fn/big/", ""},
		{"declared", "GET", "/fn/declared/", ""},
		{"declared", "HEAD", "/fn/declared/", ""},
		{"flushed", "GET", "/fn/flushed/", ""},
		{"empty", "GET", "/fn/empty/", ""},
		{"nocontent", "GET", "/fn/nocontent/", ""},
		{"trailers", "GET", "/fn/trailers/", ""},
		{"close", "GET", "/fn/close/", ""},
	}
	type answer struct {
		status           int
		header, trailer  http.Header
		body             string
		closed           bool
		servedLocal, all int64
	}
	run := func(inProcess bool) map[int]answer {
		f := newFixture(t, Config{})
		backends := map[string]*handlerBackend{}
		for name, h := range handlers {
			backends[name] = &handlerBackend{h: h}
		}
		// Each component on a worker of its own name.
		ctx := context.Background()
		for name := range handlers {
			if err := f.st.UpsertWorker(ctx, store.Worker{Name: "w-" + name, Addr: "http://w-" + name, StartedAt: time.Now(), SeenAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
		f.r.cfg.Backend = func(w store.Worker) Backend { return backends[strings.TrimPrefix(w.Name, "w-")] }
		for _, name := range slices.Sorted(maps.Keys(handlers)) { // the same deployment ids in both runs
			f.deploy(name, "w-"+name)
		}
		addr := serveFast(t, &FastServer{Router: f.r, Loops: -1, InProcess: inProcess})
		out := map[int]answer{}
		tr := &http.Transport{DisableCompression: true}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		for i, c := range calls {
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req, _ := http.NewRequest(c.method, "http://"+addr+c.target, body)
			req.Header.Set("Authorization", "Basic dXNlcg==")
			req.Header.Set("X-Api-Key", "k")
			req.Header.Add("X-Multi", "1")
			req.Header.Add("X-Multi", "2")
			req.Header.Set("X-Velo-Worker", "smuggled")
			req.Header.Set("Cookie", "velo_session=secret; theme=dark")
			res, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", c.method, c.target, err)
			}
			b, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatalf("%s %s body: %v", c.method, c.target, err)
			}
			h := res.Header.Clone()
			for _, k := range []string{"Date", "Content-Length", "Transfer-Encoding"} {
				delete(h, k) // framing and time: each server's own choice
			}
			out[i] = answer{status: res.StatusCode, header: h, trailer: res.Trailer, body: string(b), closed: res.Close}
		}
		var a answer
		for _, b := range backends {
			a.servedLocal += b.local.Load()
			a.all += b.calls.Load()
		}
		out[-1] = a
		return out
	}
	viaHTTP, viaLocal := run(false), run(true)
	for i, c := range calls {
		want, got := viaHTTP[i], viaLocal[i]
		if got.status != want.status || got.body != want.body || got.closed != want.closed ||
			fmt.Sprint(got.header) != fmt.Sprint(want.header) || fmt.Sprint(got.trailer) != fmt.Sprint(want.trailer) {
			t.Errorf("%s %s:\n in process: %d closed=%v %v trailer %v\n%.400q\n net/http:   %d closed=%v %v trailer %v\n%.400q",
				c.method, c.target, got.status, got.closed, got.header, got.trailer, got.body,
				want.status, want.closed, want.header, want.trailer, want.body)
		}
	}
	if a := viaLocal[-1]; a.servedLocal != a.all || a.all != int64(len(calls)) {
		t.Errorf("in-process path served %d of %d calls (want all %d)", a.servedLocal, a.all, len(calls))
	}
	if a := viaHTTP[-1]; a.servedLocal != 0 {
		t.Errorf("net/http path: %d calls on the in-process writer", a.servedLocal)
	}
}

// TestInProcessPathOneWrite: a whole answer the in-process path holds goes
// to the client in one write, head and body together; pipelined requests
// are answered in order; a panicking call cuts its connection.
func TestInProcessPathOneWrite(t *testing.T) {
	f := newFixture(t, Config{})
	page := strings.Repeat("p", 4096)
	b := &handlerBackend{h: func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fn/c/panic" {
			io.WriteString(w, "partial")
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, r.URL.Path+"\n"+page)
	}}
	f.r.cfg.Backend = func(store.Worker) Backend { return b }
	f.deploy("c", "w1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	fs := &FastServer{Router: f.r, Loops: -1, InProcess: true, Fallback: &http.Server{Handler: f.r}}
	done := make(chan error, 1)
	go func() { done <- fs.Serve(cl) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := fs.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-done
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "GET /fn/c/1 HTTP/1.1\r\nHost: h\r\n\r\nGET /fn/c/2 HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if want := fmt.Sprintf("/fn/c/%d\n%s", i, page); string(body) != want {
			t.Fatalf("answer %d: %.40q", i, body)
		}
	}
	if n := cl.writes.Load(); n != 2 {
		t.Errorf("2 answers of %d bytes took %d writes, want one each", len(page), n)
	}
	if _, err := io.WriteString(conn, "GET /fn/c/panic HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if res, err := http.ReadResponse(br, nil); err == nil {
		t.Fatalf("a panicking call answered %s", res.Status)
	}
}

// countingListener counts the writes on the connections it accepts.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestInProcessPathClientGone: a call that lasts sees its context end when
// the client goes away, as through net/http; a pipelined request read
// while a call lasted is answered after it.
func TestInProcessPathClientGone(t *testing.T) {
	f := newFixture(t, Config{})
	started, cancelled := make(chan struct{}, 4), make(chan struct{}, 4)
	b := &handlerBackend{h: func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fn/c/slow":
			time.Sleep(3 * watchAfter)
			io.WriteString(w, "slow")
			return
		case "/fn/c/quick":
			io.WriteString(w, "quick")
			return
		}
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(60 * time.Second):
		}
	}}
	f.r.cfg.Backend = func(store.Worker) Backend { return b }
	f.deploy("c", "w1")
	addr := serveFast(t, &FastServer{Router: f.r, Loops: -1, InProcess: true})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /fn/c/wait HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-started
	conn.Close()
	select {
	case <-cancelled:
	case <-time.After(30 * time.Second):
		t.Fatal("the call's context did not end when its client went away")
	}
	// Quick calls first, which leave the watch's timer set for the call
	// after them: it is still watched once it lasts.
	conn, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	for i := 0; i < 50; i++ {
		if _, err := io.WriteString(conn, "GET /fn/c/quick HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("quick answer %d: %v", i+1, err)
		}
		readBody(res)
	}
	if _, err := io.WriteString(conn, "GET /fn/c/wait HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-started
	conn.Close()
	select {
	case <-cancelled:
	case <-time.After(30 * time.Second):
		t.Fatal("after quick calls, the call's context did not end when its client went away")
	}
	// A slow call, and the next request sent while it runs.
	conn, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, "GET /fn/c/slow HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * watchAfter) // the watch is reading by now (not a timing assertion: either way the answers must come)
	if _, err := io.WriteString(conn, "GET /fn/c/slow HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br = bufio.NewReader(conn)
	for i := 0; i < 2; i++ {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		if body := readBody(res); body != "slow" {
			t.Fatalf("answer %d: %q", i+1, body)
		}
	}
}

// TestInProcessPathAllocs: an in-process call that answers a small page,
// as a WASM component's CGI answer does (its header set, WriteHeader, one
// Write), allocates no more than its request and header map need: the
// request's strings are cut from one copy of its head, the header values
// share one slice, and Velo's own headers are not made per call. The
// client is a raw connection reading into a fixed buffer, so the count is
// the server's.
func TestInProcessPathAllocs(t *testing.T) {
	call := pageCaller(t)
	allocs := testing.AllocsPerRun(200, call)
	t.Logf("%.1f allocations per call", allocs)
	if max := 7.0; allocs > max {
		t.Errorf("%.1f allocations per in-process call, want at most %v", allocs, max)
	}
}

// BenchmarkInProcessPath is the router's part of an in-process call (the
// handler sets two headers and writes a 4 KiB page), client and server
// in this process on one keep-alive connection, in CPU time per call.
func BenchmarkInProcessPath(b *testing.B) {
	call := pageCaller(b)
	b.ReportAllocs()
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	b.ResetTimer()
	for range b.N {
		call()
	}
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano()
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}

// pageCaller serves a component answering a 4 KiB page on the in-process
// path and returns a call of it on one connection, which reads the answer
// into a fixed buffer (so that the client allocates nothing).
func pageCaller(t testing.TB) func() {
	f := newFixture(t, Config{})
	page := []byte(strings.Repeat("p", 4096))
	ctype, cache := []string{"text/html"}, []string{"max-age=60"}
	b := &handlerBackend{h: func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"], h["Cache-Control"] = ctype, cache
		w.WriteHeader(http.StatusOK)
		w.Write(page)
	}}
	f.r.cfg.Backend = func(store.Worker) Backend { return b }
	f.deploy("c", "w1")
	addr := serveFast(t, &FastServer{Router: f.r, Loops: -1, InProcess: true})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Minute))
	req := []byte("GET /fn/c/static/page.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	size := -1
	buf := make([]byte, 64<<10)
	call := func() {
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		if size >= 0 { // a Date line's length is fixed: every answer has the first one's
			if _, err := io.ReadFull(conn, buf[:size]); err != nil {
				t.Fatal(err)
			}
			return
		}
		n := 0
		for n < len(page) || !bytes.HasSuffix(buf[:n], page) {
			m, err := conn.Read(buf[n:])
			if err != nil {
				t.Fatal(err)
			}
			n += m
		}
		if !bytes.HasPrefix(buf[:n], []byte("HTTP/1.1 200 OK\r\n")) {
			t.Fatalf("answer %.80q", buf[:n])
		}
		size = n
	}
	call()
	return call
}

// TestConnDeadline: a deadline is set again only when the one set would
// end a wait more than a sixteenth of its timeout early, or late.
func TestConnDeadline(t *testing.T) {
	var l connLoop
	var last time.Time
	sets := 0
	set := func(time.Time) error { sets++; return nil }
	t0 := time.Unix(1000, 0)
	const idle, head = 160 * time.Second, 10 * time.Second
	for _, step := range []struct {
		at   time.Duration
		d    time.Duration
		sets int
	}{
		{0, idle, 1},                // none known: set
		{time.Second, idle, 1},      // 1 s later: within idle/16
		{10 * time.Second, idle, 1}, // 10 s: still within 10 s
		{11 * time.Second, idle, 2}, // past: set again
		{12 * time.Second, head, 3}, // a shorter one: set at once
		{13 * time.Second, idle, 4}, // back to the longer: set
		{13 * time.Second, idle, 4}, // the same: not
	} {
		l.deadline(&last, t0.Add(step.at), step.d, set)
		if sets != step.sets {
			t.Fatalf("at %v for %v: %d sets, want %d", step.at, step.d, sets, step.sets)
		}
		if want := t0.Add(step.at + step.d); last.After(want) || want.Sub(last) > step.d/16 {
			t.Fatalf("at %v for %v: deadline %v, want within %v before %v", step.at, step.d, last, step.d/16, want)
		}
	}
}

// TestHeadContentLength: a HEAD answer carries the Content-Length of what
// the component wrote on the net/http path (ServeHTTP) as on the
// in-process event-loop path, past net/http's 2 KiB buffer too.
func TestHeadContentLength(t *testing.T) {
	for _, size := range []int{100, 4000, 300 << 10} {
		f := newFixture(t, Config{})
		b := &handlerBackend{h: func(w http.ResponseWriter, r *http.Request) {
			body := strings.Repeat("x", size)
			for i := 0; i < len(body); i += 1000 {
				io.WriteString(w, body[i:min(i+1000, len(body))])
			}
		}}
		f.r.cfg.Backend = func(store.Worker) Backend { return b }
		f.deploy("c", "w1")
		viaHTTP := httptest.NewServer(f.r)
		t.Cleanup(viaHTTP.Close)
		viaLoop := "http://" + serveFast(t, &FastServer{Router: f.r, Loops: -1, InProcess: true})
		for _, base := range []string{viaHTTP.URL, viaLoop} {
			res, err := http.Head(base + "/fn/c/")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK || res.ContentLength != int64(size) {
				t.Errorf("HEAD of %d bytes via %s: %d, Content-Length %d", size, map[bool]string{true: "net/http", false: "the event loop"}[base == viaHTTP.URL], res.StatusCode, res.ContentLength)
			}
		}
	}
}
