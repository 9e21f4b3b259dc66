package router

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// fakeWorker is a worker's internal endpoint stand-in: it checks the
// cluster token and invoke headers like the real one (worker.Handler has
// its own tests) and echoes what it got.
type fakeWorker struct {
	name     string
	serves   atomic.Bool
	calls    atomic.Int64
	srv      *httptest.Server
	lastBody atomic.Value
}

func newFakeWorker(t *testing.T, name, token string, h http.HandlerFunc) *fakeWorker {
	fw := &fakeWorker{name: name}
	fw.serves.Store(true)
	fw.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		if !fw.serves.Load() {
			w.Header().Set(HeaderNotServed, r.Header.Get(HeaderInvokeDeployment))
			http.Error(w, "not here", StatusNotServed)
			return
		}
		fw.calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		fw.lastBody.Store(string(b))
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprintf(w, "%s %s %s dep=%s mount=%s auth=%s client-auth=%s xff=%s body=%s",
			fw.name, r.Method, r.URL.RequestURI(), r.Header.Get(HeaderInvokeDeployment), r.Header.Get(HeaderInvokeMount),
			r.Header.Get("Authorization"), r.Header.Get(HeaderClientAuthorization), r.Header.Get("X-Forwarded-For"), b)
	}))
	t.Cleanup(fw.srv.Close)
	return fw
}

// tableStore serves a fixed route table.
type tableStore struct {
	mu     sync.Mutex
	routes []store.Route
	hits   int64
}

func (s *tableStore) Routes(context.Context) ([]store.Route, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.Route(nil), s.routes...), nil
}

func (s *tableStore) AddHits(_ context.Context, b []store.Hits) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range b {
		s.hits += h.Hits
	}
	return nil
}

func (s *tableStore) Listen(ctx context.Context, _ store.Channel) (<-chan store.Note, error) {
	return make(chan store.Note), nil
}

// remoteRouter routes component "hello" (deployment 7) to workers.
func remoteRouter(t *testing.T, rm *Remote, workers ...*fakeWorker) *Router {
	t.Helper()
	var ws []store.Worker
	for _, w := range workers {
		addr := "http://127.0.0.1:1" // refuses
		if w.srv != nil {
			addr = w.srv.URL
		}
		ws = append(ws, store.Worker{Name: w.name, Addr: addr, SeenAt: time.Now()})
	}
	st := &tableStore{routes: []store.Route{{Component: "hello", Deployment: 7, Workers: ws}}}
	r := New(Config{Backend: rm.Backend, Logger: discardLogger()}, st)
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rm.Close)
	return r
}

func do(t *testing.T, h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestRemoteForwards(t *testing.T) {
	a := newFakeWorker(t, "a", "tok", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	req := httptest.NewRequest("POST", "/fn/hello/x%2Fy?q=1&r=%20", strings.NewReader("payload"))
	req.Header.Set("Authorization", "Basic dXNlcg==")
	req.Header.Set("Connection", "close, X-Hop")
	req.Header.Set("X-Hop", "gone")
	req.RemoteAddr = "192.0.2.1:5555"
	rec := do(t, r, req)
	want := "a POST /fn/hello/x%2Fy?q=1&r=%20 dep=7 mount=/fn/hello auth=Bearer tok client-auth=Basic dXNlcg== xff=192.0.2.1 body=payload"
	if rec.Code != 200 || rec.Body.String() != want {
		t.Fatalf("got %d %q\nwant %q", rec.Code, rec.Body.String(), want)
	}
	if rec.Header().Get("X-Velo-Worker") != "a" || rec.Header().Get("X-Velo-Deployment") != "7" {
		t.Fatalf("headers %v", rec.Header())
	}
}

func TestRemoteStatusHeadersAndStreaming(t *testing.T) {
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Add("Set-Cookie", "b=2")
		w.Header().Set("Connection", "X-Private")
		w.Header().Set("X-Private", "hop")
		w.WriteHeader(http.StatusTeapot)
		for i := range 3 {
			fmt.Fprintf(w, "chunk%d;", i)
			w.(http.Flusher).Flush() // no length: chunked
		}
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	srv := httptest.NewServer(r)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/fn/hello/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusTeapot || string(b) != "chunk0;chunk1;chunk2;" {
		t.Fatalf("got %d %q", res.StatusCode, b)
	}
	if c := res.Header.Values("Set-Cookie"); len(c) != 2 || c[0] != "a=1" || c[1] != "b=2" {
		t.Fatalf("Set-Cookie %v", c)
	}
	if res.Header.Get("X-Private") != "" {
		t.Fatal("a header named in Connection was forwarded")
	}
	// HEAD and 204: no body read, connection reused afterwards.
	for _, m := range []string{"HEAD", "GET"} {
		req, _ := http.NewRequest(m, srv.URL+"/fn/hello/", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusTeapot {
			t.Fatalf("%s: %d", m, res.StatusCode)
		}
	}
}

func TestRemoteLargeBodies(t *testing.T) {
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("z"), 1<<20))
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	srv := httptest.NewServer(r)
	defer srv.Close()
	big := bytes.Repeat([]byte("y"), 300<<10) // over MaxBufferedBody: streamed
	for _, body := range []io.Reader{bytes.NewReader(big), io.MultiReader(bytes.NewReader(big))} {
		res, err := http.Post(srv.URL+"/fn/hello/", "application/octet-stream", body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || len(b) != 1<<20 {
			t.Fatalf("got %d, %d bytes", res.StatusCode, len(b))
		}
		if got, _ := a.lastBody.Load().(string); len(got) != len(big) {
			t.Fatalf("worker got %d body bytes, want %d", len(got), len(big))
		}
	}
}

func TestRemoteRefusedWorkerIsSkipped(t *testing.T) {
	rm := NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok", DownFor: time.Hour})
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	rm.now = func() time.Time { return time.Unix(0, now.Load()) }
	dead := &fakeWorker{name: "dead"} // no server: connection refused
	b := newFakeWorker(t, "b", "tok", nil)
	r := remoteRouter(t, rm, dead, b)
	// Every call is answered by b, POSTs with their bodies included.
	for i := range 10 {
		rec := do(t, r, httptest.NewRequest("POST", "/fn/hello/", strings.NewReader("n="+strconv.Itoa(i))))
		if rec.Code != 200 || !strings.HasPrefix(rec.Body.String(), "b POST") || !strings.HasSuffix(rec.Body.String(), "body=n="+strconv.Itoa(i)) {
			t.Fatalf("call %d: %d %q", i, rec.Code, rec.Body.String())
		}
	}
	// The dead worker was dialed once, then skipped while down.
	be := r.backends["dead"].b.(*Endpoint)
	if be.downUntil.Load() == 0 {
		t.Fatal("refused worker not marked down")
	}
	// After the down period, one call probes it again.
	now.Add(int64(2 * time.Hour))
	if be.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/fn/hello/", nil), 7, "/fn/hello") {
		t.Fatal("probe of a dead worker served")
	}
	if be.Serve(httptest.NewRecorder(), httptest.NewRequest("GET", "/fn/hello/", nil), 7, "/fn/hello") {
		t.Fatal("dead worker served")
	}
	// All workers down: 503, no instance.
	b.srv.Close()
	b.srv.CloseClientConnections()
	rec := do(t, r, httptest.NewRequest("GET", "/fn/hello/", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "no healthy instance") {
		t.Fatalf("all down: %d %q", rec.Code, rec.Body.String())
	}
}

func TestRemoteNotServedRetriesElsewhere(t *testing.T) {
	a := newFakeWorker(t, "a", "tok", nil)
	b := newFakeWorker(t, "b", "tok", nil)
	a.serves.Store(false)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a, b)
	for i := range 6 {
		rec := do(t, r, httptest.NewRequest("PUT", "/fn/hello/", strings.NewReader("body"+strconv.Itoa(i))))
		if rec.Code != 200 || !strings.HasPrefix(rec.Body.String(), "b PUT") || !strings.HasSuffix(rec.Body.String(), "body=body"+strconv.Itoa(i)) {
			t.Fatalf("call %d: %d %q", i, rec.Code, rec.Body.String())
		}
	}
	if a.calls.Load() != 0 {
		t.Fatal("a not-serving worker was handed calls")
	}
	// Neither serves: 503.
	b.serves.Store(false)
	if rec := do(t, r, httptest.NewRequest("GET", "/fn/hello/", nil)); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("none serving: %d", rec.Code)
	}
}

func TestRemoteWrongTokenIsAnError(t *testing.T) {
	a := newFakeWorker(t, "a", "right", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "wrong"}), a)
	if rec := do(t, r, httptest.NewRequest("GET", "/fn/hello/", nil)); rec.Code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", rec.Code)
	}
}

// TestRemoteWorkerDropsConnection: a worker that closes kept-alive
// connections (restart) costs no GET, and a worker that dies mid-answer
// cuts the client's connection rather than sending a short answer.
func TestRemoteWorkerDropsConnection(t *testing.T) {
	var hijackMidway atomic.Bool
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		if hijackMidway.Load() {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close()
			return
		}
		io.WriteString(w, "ok")
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	for i := range 5 {
		if rec := do(t, r, httptest.NewRequest("GET", "/fn/hello/", nil)); rec.Code != 200 {
			t.Fatalf("call %d: %d", i, rec.Code)
		}
		a.srv.CloseClientConnections() // every pooled connection dies
	}
	hijackMidway.Store(true)
	srv := httptest.NewServer(r)
	defer srv.Close()
	res, err := http.Get(srv.URL + "/fn/hello/")
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Fatal("a short answer reached the client without an error")
	}
}

// TestRemoteHammer sends concurrent calls of every kind through one Remote
// to two workers, one of which keeps dropping connections.
func TestRemoteHammer(t *testing.T) {
	a := newFakeWorker(t, "a", "tok", nil)
	b := newFakeWorker(t, "b", "tok", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok", MaxIdlePerWorker: 4}), a, b)
	srv := httptest.NewServer(r)
	defer srv.Close()
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				a.srv.CloseClientConnections()
			}
		}
	}()
	defer close(stop)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				body := fmt.Sprintf("g%d-%d", g, i)
				res, err := http.Post(srv.URL+"/fn/hello/p", "text/plain", strings.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				got, _ := io.ReadAll(res.Body)
				res.Body.Close()
				// POSTs on a dropped connection may fail (not
				// replayable); those that succeed must be whole.
				if res.StatusCode == 200 && !strings.HasSuffix(string(got), "body="+body) {
					errs <- fmt.Errorf("mixed up answer %q for %q", got, body)
					return
				}
				req, _ := http.NewRequest("GET", srv.URL+"/fn/hello/g?"+body, nil)
				res, err = http.DefaultClient.Do(req)
				if err != nil {
					errs <- err
					return
				}
				got, _ = io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || !strings.Contains(string(got), "/fn/hello/g?"+body) {
					errs <- fmt.Errorf("GET: %d %q", res.StatusCode, got)
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
}

// BenchmarkLookup measures routing one call with 10, 1000 and 10000
// components in the table: the cost must stay flat.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			st := &tableStore{}
			for i := range n {
				st.routes = append(st.routes, store.Route{Component: "c" + strconv.Itoa(i), Deployment: int64(i + 1),
					Workers: []store.Worker{{Name: "w", Addr: "x", SeenAt: time.Now()}}})
			}
			r := New(Config{NoHits: true, Backend: func(store.Worker) Backend { return nopBackend{} }, Logger: discardLogger()}, st)
			if err := r.Refresh(context.Background()); err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/fn/c"+strconv.Itoa(n/2)+"/x", nil)
			w := nopWriter{h: http.Header{}}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				clear(w.h) // a fresh response each time, as net/http gives
				r.ServeHTTP(w, req)
			}
		})
	}
}

type nopBackend struct{}

func (nopBackend) Endpoint() *Endpoint { return nil }

func (nopBackend) Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	w.WriteHeader(200)
	return true
}

type nopWriter struct{ h http.Header }

func (w nopWriter) Header() http.Header       { return w.h }
func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (nopWriter) WriteHeader(int)             {}

// BenchmarkRemote measures forwarding over loopback to a static backend.
func BenchmarkRemote(b *testing.B) {
	body := []byte("Hello, world\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })}
	go backend.Serve(ln)
	defer backend.Close()
	rm := NewRemote(RemoteConfig{Token: "t"})
	defer rm.Close()
	be := rm.Backend(store.Worker{Name: "s", Addr: "http://" + ln.Addr().String()})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest("GET", "/fn/bench/", nil)
		for pb.Next() {
			rec := httptest.NewRecorder()
			if !be.Serve(rec, req, 1, "/fn/bench") || rec.Code != 200 {
				b.Errorf("not served: %d", rec.Code)
				return
			}
		}
	})
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// BenchmarkHitRecording measures recording one call's answer (hits,
// errors, latency) as the router does, from every core at once on one
// component, as under load. cpu-ns/op is the CPU time per call.
func BenchmarkHitRecording(b *testing.B) {
	st := &tableStore{routes: []store.Route{{Component: "hello", Deployment: 1,
		Workers: []store.Worker{{Name: "w", Addr: "x", SeenAt: time.Now()}}}}}
	r := New(Config{Backend: func(store.Worker) Backend { return nopBackend{} }, Logger: discardLogger()}, st)
	if err := r.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	rt := r.table.Load().routes["hello"]
	s := &FastServer{Router: r}
	start := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.count(rt, 200, start)
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())*float64(runtime.GOMAXPROCS(0))/float64(b.N), "cpu-ns/op")
	if got := r.Totals()["hello"][0]; got != int64(b.N) {
		b.Fatalf("hits counted: %d, want %d", got, b.N)
	}
}
