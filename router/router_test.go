package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// backend is a worker stand-in: it answers with its name, or refuses.
type backend struct {
	name   string
	refuse atomic.Bool
	status int
	csp    string // a Content-Security-Policy the component sets itself
	calls  atomic.Int64
}

func (b *backend) Endpoint() *Endpoint { return nil }

func (b *backend) Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	if b.refuse.Load() {
		return false
	}
	b.calls.Add(1)
	if b.csp != "" {
		w.Header().Set("Content-Security-Policy", b.csp)
	}
	if b.status != 0 {
		w.WriteHeader(b.status)
	}
	fmt.Fprintf(w, "%s d=%d mount=%s path=%s", b.name, d, mount, r.URL.Path)
	return true
}

// flakyStore is the real store whose AddHits can be made to fail, as when
// Postgres is down.
type flakyStore struct {
	*store.Store
	down atomic.Bool
}

func (f *flakyStore) AddHits(ctx context.Context, batch []store.Hits) error {
	if f.down.Load() {
		return errors.New("store is down")
	}
	return f.Store.AddHits(ctx, batch)
}

type fixture struct {
	t        testing.TB
	st       *flakyStore
	r        *Router
	backends map[string]*backend
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, st: &flakyStore{Store: st}, backends: map[string]*backend{}}
	for _, name := range []string{"w1", "w2"} {
		f.backends[name] = &backend{name: name}
		if err := st.UpsertWorker(ctx, store.Worker{Name: name, Addr: "http://" + name, StartedAt: time.Now(), SeenAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Backend = func(w store.Worker) Backend { return f.backends[w.Name] }
	f.r = New(cfg, f.st)
	return f
}

// deploy creates component name with a live deployment ready on workers.
func (f *fixture) deploy(name string, workers ...string) int64 {
	f.t.Helper()
	ctx := context.Background()
	if err := f.st.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}); err != nil && !errors.Is(err, store.ErrConflict) {
		f.t.Fatal(err)
	}
	d, err := f.st.CreateDeployment(ctx, store.Deployment{Component: name, Digest: fmt.Sprintf("%064d", 1), Runtime: "wasm", Manifest: []byte(`{}`), Source: "upload", Status: store.StatusReady})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, w := range workers {
		if err := f.st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: w, State: store.PlacementReady}); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := f.st.SetTarget(ctx, name, d.ID); err != nil {
		f.t.Fatal(err)
	}
	if err := f.st.Promote(ctx, name, d.ID); err != nil {
		f.t.Fatal(err)
	}
	f.refresh()
	return d.ID
}

func (f *fixture) refresh() {
	f.t.Helper()
	if err := f.r.Refresh(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) get(target string) *http.Response {
	rec := httptest.NewRecorder()
	f.r.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
	return rec.Result()
}

func body(t *testing.T, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRouteStatuses(t *testing.T) {
	f := newFixture(t, Config{})
	d := f.deploy("hello", "w1")
	ctx := context.Background()
	if err := f.st.CreateComponent(ctx, store.Component{Name: "empty", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	f.refresh()

	res := f.get("/fn/hello/a/b?x=1")
	if got := body(t, res); res.StatusCode != 200 || got != fmt.Sprintf("w1 d=%d mount=/fn/hello path=/fn/hello/a/b", d) {
		t.Fatalf("GET /fn/hello/a/b = %d %q", res.StatusCode, got)
	}
	if res.Header.Get("X-Velo-Deployment") != fmt.Sprint(d) || res.Header.Get("X-Velo-Worker") != "w1" {
		t.Errorf("headers = %v", res.Header)
	}
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/fn/nope/", 404, "no component named \"nope\"\n"},
		{"/fn/", 404, "not found: component calls are served under /fn/NAME/\n"},
		{"/fn/empty/", 503, "component \"empty\" has no healthy instance\n"},
	} {
		res := f.get(tc.path)
		if got := body(t, res); res.StatusCode != tc.status || got != tc.body {
			t.Errorf("GET %s = %d %q, want %d %q", tc.path, res.StatusCode, got, tc.status, tc.body)
		}
	}
	if err := f.st.SetPaused(ctx, "hello", true); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	res = f.get("/fn/hello/")
	if got := body(t, res); res.StatusCode != 503 || got != "component \"hello\" is paused\n" {
		t.Errorf("paused: %d %q", res.StatusCode, got)
	}
	if f.backends["w1"].calls.Load() != 1 {
		t.Errorf("backend calls = %d, want 1", f.backends["w1"].calls.Load())
	}
}

func TestRoundRobinAndRetry(t *testing.T) {
	f := newFixture(t, Config{})
	f.deploy("hello", "w1", "w2")
	for i := 0; i < 10; i++ {
		f.get("/fn/hello/")
	}
	if a, b := f.backends["w1"].calls.Load(), f.backends["w2"].calls.Load(); a != 5 || b != 5 {
		t.Fatalf("round robin: w1=%d w2=%d, want 5 and 5", a, b)
	}
	// A worker that cannot take the request: it goes to the other one.
	f.backends["w1"].refuse.Store(true)
	for i := 0; i < 4; i++ {
		res := f.get("/fn/hello/")
		if res.StatusCode != 200 || res.Header.Get("X-Velo-Worker") != "w2" {
			t.Fatalf("with w1 refusing: %d from %q", res.StatusCode, res.Header.Get("X-Velo-Worker"))
		}
	}
	f.backends["w2"].refuse.Store(true)
	if res := f.get("/fn/hello/"); res.StatusCode != 503 {
		t.Fatalf("all refusing: %d, want 503", res.StatusCode)
	}
}

func TestHostRouting(t *testing.T) {
	f := newFixture(t, Config{Domain: "apps.example.test"})
	f.deploy("hello", "w1")
	req := httptest.NewRequest("GET", "/x", nil)
	req.Host = "hello.apps.example.test:8080"
	rec := httptest.NewRecorder()
	f.r.ServeHTTP(rec, req)
	if got := rec.Body.String(); rec.Code != 200 || got[len(got)-len("mount= path=/x"):] != "mount= path=/x" {
		t.Fatalf("host routing: %d %q", rec.Code, got)
	}
}

func TestHitsFlushedAndKeptWhileStoreDown(t *testing.T) {
	f := newFixture(t, Config{})
	f.deploy("hello", "w1")
	f.backends["w1"].status = 500
	ctx := context.Background()
	f.get("/fn/hello/")
	f.backends["w1"].status = 0
	f.get("/fn/hello/")

	f.st.down.Store(true)
	if err := f.r.FlushHits(ctx); err == nil {
		t.Fatal("FlushHits with the store down: no error")
	}
	f.get("/fn/hello/")
	f.st.down.Store(false)
	if err := f.r.FlushHits(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := f.st.Stats(ctx, "hello", time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var hits, errs int64
	for _, h := range rows {
		hits += h.Hits
		errs += h.Errors
	}
	if hits != 3 || errs != 1 {
		t.Fatalf("stored hits=%d errors=%d, want 3 and 1", hits, errs)
	}
	// Nothing is written twice.
	if err := f.r.FlushHits(ctx); err != nil {
		t.Fatal(err)
	}
	rows, _ = f.st.Stats(ctx, "hello", time.Now().Add(-time.Hour))
	hits = 0
	for _, h := range rows {
		hits += h.Hits
	}
	if hits != 3 {
		t.Fatalf("after a second flush hits=%d, want 3", hits)
	}
}

func TestNoHits(t *testing.T) {
	f := newFixture(t, Config{NoHits: true})
	f.deploy("hello", "w1")
	f.get("/fn/hello/")
	if tot := f.r.Totals()["hello"]; tot[0] != 0 {
		t.Fatalf("NoHits recorded %d hits", tot[0])
	}
}

// TestHammer routes from many goroutines while the table is swapped and
// hits are flushed.
func TestHammer(t *testing.T) {
	f := newFixture(t, Config{})
	f.deploy("hello", "w1", "w2")
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := f.r.Refresh(ctx); err != nil {
				t.Error(err)
				return
			}
			if err := f.r.FlushHits(ctx); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var failed atomic.Int64
	var clients sync.WaitGroup
	for g := 0; g < 16; g++ {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for i := 0; i < 200; i++ {
				if res := f.get("/fn/hello/"); res.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	clients.Wait()
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d requests failed during table swaps", n)
	}
	if err := f.r.FlushHits(ctx); err != nil {
		t.Fatal(err)
	}
	rows, _ := f.st.Stats(ctx, "hello", time.Now().Add(-time.Hour))
	var hits int64
	for _, h := range rows {
		hits += h.Hits
	}
	if hits != 3200 {
		t.Fatalf("stored %d hits, want 3200", hits)
	}
}

// TestSandboxOnSharedOrigin: a component served under /fn/NAME/ shares the
// dashboard's origin, so its responses carry the sandbox policy (kept even
// when the component sets its own CSP); on its own host they do not.
func TestSandboxOnSharedOrigin(t *testing.T) {
	f := newFixture(t, Config{Domain: "apps.example.test"})
	f.deploy("hello", "w1")
	res := f.get("/fn/hello/")
	if got := res.Header.Values("Content-Security-Policy"); len(got) != 1 || got[0] != SandboxPolicy {
		t.Fatalf("path-mounted CSP = %q, want the sandbox policy", got)
	}
	f.backends["w1"].csp = "default-src 'self'"
	res = f.get("/fn/hello/")
	if got := res.Header.Values("Content-Security-Policy"); len(got) != 2 || got[0] != "default-src 'self'" || got[1] != SandboxPolicy {
		t.Fatalf("with the component's own CSP: %q, want both policies", got)
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.Host = "hello.apps.example.test"
	rec := httptest.NewRecorder()
	f.r.ServeHTTP(rec, req)
	if got := rec.Result().Header.Values("Content-Security-Policy"); len(got) != 1 || got[0] != "default-src 'self'" {
		t.Fatalf("host-routed CSP = %q, want only the component's own", got)
	}
}

func TestHosts(t *testing.T) {
	f := newFixture(t, Config{Domain: "apps.example.test"})
	f.deploy("hello", "w1")
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("dashboard")) })
	h := f.r.Hosts(next)
	for host, want := range map[string]string{
		"hello.apps.example.test":      "w1 d=",
		"hello.apps.example.test:8080": "w1 d=",
		"apps.example.test":            "dashboard",
		"a.b.apps.example.test":        "dashboard",
		"velo.example.test":            "dashboard",
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Body.String(); len(got) < len(want) || got[:len(want)] != want {
			t.Errorf("Host %s: %q, want %q…", host, got, want)
		}
	}
	// Without a domain every request goes to next.
	req := httptest.NewRequest("GET", "/", nil)
	req.Host = "hello.apps.example.test"
	rec := httptest.NewRecorder()
	New(Config{}, f.st).Hosts(next).ServeHTTP(rec, req)
	if got := rec.Body.String(); got != "dashboard" {
		t.Fatalf("without a domain: %q, want the dashboard", got)
	}
}

// gatedStore holds its first route read until released, as a slow store
// read would, after taking its snapshot.
type gatedStore struct {
	tableStore
	reads   atomic.Int32
	entered chan struct{}
	gate    chan struct{}
}

func (s *gatedStore) Routes(ctx context.Context) ([]store.Route, error) {
	routes, err := s.tableStore.Routes(ctx)
	if s.reads.Add(1) == 1 {
		close(s.entered)
		<-s.gate
	}
	return routes, err
}

// waitingForLock reports whether some goroutine is blocked on a
// sync.Mutex inside function fn (as runtime.Stack names it).
func waitingForLock(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(head, "[sync.Mutex.Lock") && strings.Contains(g, fn+"(") {
			return true
		}
	}
	return false
}

// TestRefreshesApplyInOrder: a refresh that read the store earlier never
// replaces the table of one that read it later (a promotion's refresh
// racing the notification's one left the old deployment routed).
func TestRefreshesApplyInOrder(t *testing.T) {
	st := &gatedStore{entered: make(chan struct{}), gate: make(chan struct{})}
	st.routes = []store.Route{{Component: "app", Deployment: 1}}
	r := New(Config{Backend: func(store.Worker) Backend { return &backend{} }, Logger: discardLogger()}, st)
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { first <- r.Refresh(ctx) }()
	<-st.entered // the first refresh has read deployment 1
	st.mu.Lock()
	st.routes = []store.Route{{Component: "app", Deployment: 2}}
	st.mu.Unlock()
	second := make(chan error, 1)
	var secondDone atomic.Bool
	go func() { err := r.Refresh(ctx); secondDone.Store(true); second <- err }()
	// Let the second refresh get as far as it can while the first is held:
	// to its end if refreshes overlapped, or into waiting for the first.
	testsupport.Eventually(t, 5*time.Second, "the second refresh to finish or wait for the first", func() bool {
		return secondDone.Load() || waitingForLock("router.(*Router).Refresh")
	})
	close(st.gate)
	for _, done := range []chan error{first, second} {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a refresh never finished")
		}
	}
	if d, _ := r.Lookup("app"); d != 2 {
		t.Fatalf("live deployment after both refreshes = %d, want 2 (the later read)", d)
	}
}

// lockWaiters counts the goroutines blocked on a sync.Mutex inside
// function fn (as runtime.Stack names it).
func lockWaiters(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(head, "[sync.Mutex.Lock") && strings.Contains(g, fn+"(") {
			n++
		}
	}
	return n
}

// TestRefreshCoalesces: refreshes asked for while one reads the store are
// answered by one more read, which sees the latest change.
func TestRefreshCoalesces(t *testing.T) {
	st := &gatedStore{entered: make(chan struct{}), gate: make(chan struct{})}
	st.routes = []store.Route{{Component: "app", Deployment: 1}}
	r := New(Config{Backend: func(store.Worker) Backend { return &backend{} }, Logger: discardLogger()}, st)
	ctx := context.Background()
	const waiting = 5
	done := make(chan error, waiting+1)
	go func() { done <- r.Refresh(ctx) }()
	<-st.entered // the first refresh has read deployment 1
	st.mu.Lock()
	st.routes = []store.Route{{Component: "app", Deployment: 2}}
	st.mu.Unlock()
	for range waiting {
		go func() { done <- r.Refresh(ctx) }()
	}
	testsupport.Eventually(t, 30*time.Second, "the other refreshes to wait for the first", func() bool {
		return lockWaiters("router.(*Router).Refresh") == waiting
	})
	close(st.gate)
	for range waiting + 1 {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a refresh never finished")
		}
	}
	if n := st.reads.Load(); n != 2 {
		t.Errorf("%d store reads for %d refreshes asked while one read, want 2", n, waiting+1)
	}
	if d, _ := r.Lookup("app"); d != 2 {
		t.Fatalf("live deployment = %d, want 2 (the change made while the first read ran)", d)
	}
}

// TestRefreshHammer: goroutines each promote new deployments of their own
// component and refresh; whatever the coalescing, when Refresh returns the
// table routes the deployment promoted before it was called. Run with -race.
func TestRefreshHammer(t *testing.T) {
	f := newFixture(t, Config{Logger: discardLogger()})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			name := fmt.Sprintf("c%d", g)
			ctx := context.Background()
			if err := f.st.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}); err != nil {
				t.Error(err)
				return
			}
			for range 15 {
				d, err := f.st.CreateDeployment(ctx, store.Deployment{Component: name, Digest: fmt.Sprintf("%064d", 1), Runtime: "wasm", Manifest: []byte(`{}`), Source: "upload", Status: store.StatusReady})
				if err == nil {
					err = f.st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "w1", State: store.PlacementReady})
				}
				if err == nil {
					err = f.st.SetTarget(ctx, name, d.ID)
				}
				if err == nil {
					err = f.st.Promote(ctx, name, d.ID)
				}
				if err == nil {
					err = f.r.Refresh(ctx)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if got, _ := f.r.Lookup(name); got != d.ID {
					t.Errorf("%s: routed to deployment %d after Refresh, want %d (promoted before it)", name, got, d.ID)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestDeletedComponentsPruned: deleting components takes their /metrics
// totals and their JWKS checkers out of the router, by a whole refresh and
// by one naming them, so the maps stay bounded by what is served.
func TestDeletedComponentsPruned(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	const n = 30
	for i := range n + 1 {
		name := fmt.Sprintf("app%d", i)
		if err := f.st.CreateComponent(ctx, store.Component{Name: name, Runtime: "wasm"}); err != nil {
			t.Fatal(err)
		}
		m := fmt.Sprintf(`{"access":{"jwks":"http://127.0.0.1:1/jwks%d","issuer":"https://id.test/","audience":"a"}}`, i)
		d, err := f.st.CreateDeployment(ctx, store.Deployment{Component: name, Digest: fmt.Sprintf("%064d", 1), Runtime: "wasm", Manifest: []byte(m), Source: "upload", Status: store.StatusReady})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "w1", State: store.PlacementReady}); err != nil {
			t.Fatal(err)
		}
		if err := f.st.SetTarget(ctx, name, d.ID); err != nil {
			t.Fatal(err)
		}
		if err := f.st.Promote(ctx, name, d.ID); err != nil {
			t.Fatal(err)
		}
	}
	f.refresh()
	for i := range n + 1 {
		if res := f.get(fmt.Sprintf("/fn/app%d/", i)); res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("app%d without a token: %d, want 401", i, res.StatusCode)
		}
	}
	sizes := func() (totals, jwks int) {
		f.r.mu.Lock()
		defer f.r.mu.Unlock()
		return len(f.r.totals), len(f.r.jwks)
	}
	if tot, j := sizes(); tot != n+1 || j != n+1 {
		t.Fatalf("before deleting: %d totals, %d JWKS checkers, want %d each", tot, j, n+1)
	}
	for i := range n {
		if err := f.st.DeleteComponent(ctx, fmt.Sprintf("app%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.r.RefreshComponents(ctx, "app0"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.r.Totals()["app0"]; ok {
		t.Fatal("a refresh naming deleted app0 kept its totals")
	}
	f.refresh()
	if tot, j := sizes(); tot != 1 || j != 1 {
		t.Fatalf("after deleting %d of %d: %d totals, %d JWKS checkers, want 1 each", n, n+1, tot, j)
	}
	if got := f.r.Totals()[fmt.Sprintf("app%d", n)]; got[0] != 1 {
		t.Fatalf("the component still served lost its totals: %v", got)
	}
}
