package wasm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
)

// helloWasm is examples/hello-wasm built for wasip1 by TestMain, or "" when
// that build failed (then buildErr says why).
var (
	helloWasm string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "velo-wasm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helloWasm, buildErr = buildGoExample(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildGoExample compiles examples/hello-wasm with the Go toolchain running
// the tests, as its velo.toml says.
func buildGoExample(dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "hello.wasm")
	cmd := exec.Command(goTool, "build", "-o", out, ".")
	cmd.Dir = filepath.Join("..", "..", "examples", "hello-wasm")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build hello-wasm: %v\n%s", err, b)
	}
	return out, nil
}

// sink is a LogSink that remembers every line.
type sink struct {
	mu    sync.Mutex
	lines []string // "stream: line"
}

func (s *sink) Log(stream string, _ time.Time, line string) {
	s.mu.Lock()
	s.lines = append(s.lines, stream+": "+line)
	s.mu.Unlock()
}

func (s *sink) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lines...)
}

// has reports whether some line of stream contains substr.
func (s *sink) has(stream, substr string) bool {
	for _, l := range s.all() {
		if strings.HasPrefix(l, stream+": ") && strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

func newRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	return rt
}

// echoSpec is a spec for the C test module.
func echoSpec(logs worker.LogSink) worker.Spec {
	return worker.Spec{
		Component: "echo",
		Dir:       "testdata",
		Manifest: manifest.Manifest{
			Name: "echo", Runtime: manifest.WASM, Module: "echo.wasm",
			Timeout: 5 * time.Second, Memory: 16 << 20,
			Env: map[string]string{
				"GREETING":       "hi",
				"SCRIPT_NAME":    "dropped: the request sets it",
				"HTTP_X_CUSTOM":  "loses to the request header",
				"HTTP_X_DEFAULT": "kept when no header sets it",
			},
		},
		Logs: logs,
	}
}

func prepare(t testing.TB, rt *Runtime, spec worker.Spec) worker.Instance {
	t.Helper()
	in, err := rt.Prepare(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(context.Background()) })
	return in
}

// serve runs one request through in, mounted at /fn/echo.
func serve(in worker.Instance, method, target string, body io.Reader) *http.Response {
	r := httptest.NewRequest(method, target, body)
	w := httptest.NewRecorder()
	in.Serve(w, r, "/fn/echo")
	return w.Result()
}

func readAll(t testing.TB, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// envOf parses the /env route's output: NAME=value lines.
func envOf(t *testing.T, body string) map[string]string {
	t.Helper()
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			t.Fatalf("line %q is not NAME=value", sc.Text())
		}
		if _, dup := env[k]; dup {
			t.Errorf("%s set twice", k)
		}
		env[k] = v
	}
	return env
}

func TestCGIVariables(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, echoSpec(&sink{}))

	r := httptest.NewRequest("POST", "http://example.com/fn/echo/env/a%20b?x=1&y=%2F", strings.NewReader("hello"))
	r.RemoteAddr = "192.0.2.7:4711"
	r.Header.Set("Content-Type", "text/plain")
	r.Header.Set("X-Custom", "one")
	r.Header.Add("X-Multi", "a")
	r.Header.Add("X-Multi", "b")
	r.Header.Set("Authorization", "Bearer secret")
	r.Header.Set("Connection", "keep-alive")
	r.Header.Set("User-Agent", "velo-test")
	w := httptest.NewRecorder()
	in.Serve(w, r, "/fn/echo")
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	got := envOf(t, w.Body.String())
	want := map[string]string{
		"REQUEST_METHOD":    "POST",
		"PATH_INFO":         "/env/a b",
		"PATH_TRANSLATED":   "/env/a b",
		"X_RAW_PATH_INFO":   "/env/a%20b",
		"QUERY_STRING":      "x=1&y=%2F",
		"SCRIPT_NAME":       "/fn/echo",
		"CONTENT_TYPE":      "text/plain",
		"CONTENT_LENGTH":    "5",
		"SERVER_NAME":       "example.com",
		"SERVER_PORT":       "80",
		"SERVER_PROTOCOL":   "HTTP/1.1",
		"SERVER_SOFTWARE":   "Velo",
		"GATEWAY_INTERFACE": "CGI/1.1",
		"REMOTE_ADDR":       "192.0.2.7",
		"REMOTE_HOST":       "192.0.2.7",
		"REMOTE_USER":       "",
		"AUTH_TYPE":         "",
		"X_FULL_URL":        "http://example.com/fn/echo/env/a%20b?x=1&y=%2F",
		"X_MATCHED_ROUTE":   "/fn/echo/...",
		"HTTP_HOST":         "example.com",
		"HTTP_CONTENT_TYPE": "text/plain",
		"HTTP_X_CUSTOM":     "one",
		"HTTP_X_MULTI":      "a, b",
		"HTTP_USER_AGENT":   "velo-test",
		"GREETING":          "hi",
		"HTTP_X_DEFAULT":    "kept when no header sets it",
		// WAGI's argv: the request path, then the query split at '&'.
		"ARG0": "/fn/echo/env/a%20b",
		"ARG1": "x=1",
		"ARG2": "y=%2F",
	}
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s missing", k)
		} else if g != v {
			t.Errorf("%s = %q, want %q", k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected variable %s=%q", k, got[k])
		}
	}
}

func TestCGIVariablesOwnHost(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, echoSpec(&sink{}))
	r := httptest.NewRequest("GET", "http://[2001:db8::1]:8443/env", nil)
	r.RemoteAddr = "[2001:db8::2]:5555"
	w := httptest.NewRecorder()
	in.Serve(w, r, "") // served on its own host
	got := envOf(t, w.Body.String())
	for k, v := range map[string]string{
		"PATH_INFO": "/env", "SCRIPT_NAME": "", "X_MATCHED_ROUTE": "/...",
		"SERVER_NAME": "2001:db8::1", "SERVER_PORT": "8443", "REMOTE_ADDR": "2001:db8::2",
		"CONTENT_LENGTH": "0", "QUERY_STRING": "", "REQUEST_METHOD": "GET",
		"X_FULL_URL": "http://[2001:db8::1]:8443/env", "ARG0": "/env",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["ARG1"]; ok {
		t.Errorf("ARG1 set without a query string")
	}
}

func TestResponses(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, echoSpec(&sink{}))
	tests := []struct {
		path   string
		status int
		header http.Header
		body   string
	}{
		{"/fn/echo", 200, http.Header{"Content-Type": {"text/plain"}}, "hello from C\n"},
		{"/fn/echo/status", 404, http.Header{"Content-Type": {"text/plain"}}, "nothing here\n"},
		{"/fn/echo/redirect", 302, http.Header{"Location": {"/elsewhere"}}, ""},
		{"/fn/echo/headers", 200, http.Header{"Set-Cookie": {"a=1", "b=2"}, "X-Test": {"yes"}}, "headers\n"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			res := serve(in, "GET", tt.path, nil)
			body := readAll(t, res)
			if res.StatusCode != tt.status {
				t.Errorf("status %d, want %d", res.StatusCode, tt.status)
			}
			for k, v := range tt.header {
				if g := res.Header.Values(k); !equal(g, v) {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			if res.Header.Get("Status") != "" {
				t.Errorf("Status header passed through")
			}
			if body != tt.body {
				t.Errorf("body %q, want %q", body, tt.body)
			}
		})
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestBodyOnStdin(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, echoSpec(&sink{}))
	body := make([]byte, 300_000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	res := serve(in, "PUT", "/fn/echo/echo", bytes.NewReader(body))
	got := readAll(t, res)
	if res.StatusCode != 200 || got != string(body) {
		t.Fatalf("status %d, %d bytes back, want 200 and the %d bytes sent", res.StatusCode, len(got), len(body))
	}
	// Longer than what a call buffers: streamed as the module wrote it.
	if cl := res.Header.Get("Content-Length"); cl != "" {
		t.Errorf("Content-Length %q on a streamed answer", cl)
	}
	// A small answer is sent whole, with its length.
	res = serve(in, "PUT", "/fn/echo/echo", bytes.NewReader(body[:1000]))
	if got := readAll(t, res); got != string(body[:1000]) || res.Header.Get("Content-Length") != "1000" {
		t.Errorf("small echo: %d bytes, Content-Length %q; want 1000 and 1000", len(got), res.Header.Get("Content-Length"))
	}
}

func TestStderrGoesToLogs(t *testing.T) {
	logs := &sink{}
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, echoSpec(logs))
	res := serve(in, "GET", "/fn/echo/stderr", nil)
	if res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	want := []string{"stderr: first line", "stderr: second line", "stderr: partial"}
	if got := logs.all(); !equal(got, want) {
		t.Errorf("logs %q, want %q", got, want)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		path   string
		status int
		log    []string // substrings of System (and stderr) lines
	}{
		{"/fn/echo/exit", 502, []string{"velo: GET /fn/echo/exit: module exited with code 3", "stderr: giving up"}},
		{"/fn/echo/garbage", 502, []string{"velo: GET /fn/echo/garbage: invalid CGI response: no CGI header block"}},
		// Growing memory past the 16 MiB cap makes malloc fail; the module
		// then aborts (a trap), which must not take anything else down.
		{"/fn/echo/oom", 502, []string{"velo: GET /fn/echo/oom: ", "unreachable"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			logs := &sink{}
			rt := newRuntime(t, Config{})
			in := prepare(t, rt, echoSpec(logs))
			res := serve(in, "GET", tt.path, nil)
			if res.StatusCode != tt.status {
				t.Errorf("status %d, want %d", res.StatusCode, tt.status)
			}
			all := strings.Join(logs.all(), "\n")
			for _, want := range tt.log {
				if !strings.Contains(all, want) {
					t.Errorf("logs lack %q:\n%s", want, all)
				}
			}
			if res := serve(in, "GET", "/fn/echo", nil); res.StatusCode != 200 {
				t.Errorf("next request: status %d", res.StatusCode)
			}
		})
	}
}

func TestNoFilesystem(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, echoSpec(&sink{}))
	res := serve(in, "GET", "/fn/echo/file", nil)
	if body := readAll(t, res); !strings.Contains(body, "open failed") {
		t.Errorf("module could open /etc/passwd: %q", body)
	}
}

func TestLimits(t *testing.T) {
	logs := &sink{}
	rt := newRuntime(t, Config{MaxResponse: 10_000, MaxRequest: 100})
	in := prepare(t, rt, echoSpec(logs))
	if res := serve(in, "GET", "/fn/echo/big", nil); res.StatusCode != 502 {
		t.Errorf("oversized response: status %d, want 502", res.StatusCode)
	}
	if !logs.has(worker.System, "response larger than 10000 bytes") {
		t.Errorf("logs lack the reason: %q", logs.all())
	}
	if res := serve(in, "POST", "/fn/echo/echo", strings.NewReader(strings.Repeat("x", 101))); res.StatusCode != 413 {
		t.Errorf("oversized body: status %d, want 413", res.StatusCode)
	}
	if res := serve(in, "POST", "/fn/echo/echo", io.MultiReader(strings.NewReader(strings.Repeat("x", 101)))); res.StatusCode != 413 {
		t.Errorf("oversized body of unknown length: status %d, want 413", res.StatusCode)
	}
	res := serve(in, "POST", "/fn/echo/echo", strings.NewReader(strings.Repeat("x", 100)))
	if body := readAll(t, res); res.StatusCode != 200 || len(body) != 100 {
		t.Errorf("body at the cap: status %d, %d bytes", res.StatusCode, len(body))
	}
}

func TestTimeout(t *testing.T) {
	logs := &sink{}
	rt := newRuntime(t, Config{})
	spec := echoSpec(logs)
	spec.Manifest.Timeout = 300 * time.Millisecond
	in := prepare(t, rt, spec)

	loopDone := make(chan *http.Response)
	start := time.Now()
	go func() { loopDone <- serve(in, "GET", "/fn/echo/loop", nil) }()

	// While the loop spins, the same instance answers other requests.
	testsupport.Eventually(t, 5*time.Second, "the looping request to run", func() bool { return in.(*instance).inflight.Load() == 1 })
	if res := serve(in, "GET", "/fn/echo", nil); res.StatusCode != 200 {
		t.Errorf("concurrent request: status %d", res.StatusCode)
	}
	select {
	case <-loopDone:
		t.Fatal("the looping request ended before the concurrent one was answered")
	default:
	}

	var res *http.Response
	select {
	case res = <-loopDone:
	case <-time.After(10 * time.Second):
		t.Fatal("infinite loop not cut off")
	}
	if elapsed := time.Since(start); elapsed < spec.Manifest.Timeout {
		t.Errorf("cut off after %s, before the %s timeout", elapsed, spec.Manifest.Timeout)
	}
	if res.StatusCode != 504 {
		t.Errorf("status %d, want 504", res.StatusCode)
	}
	if body := readAll(t, res); !strings.Contains(body, "300ms") {
		t.Errorf("body %q does not name the timeout", body)
	}
	if !logs.has(worker.System, "GET /fn/echo/loop: timed out after 300ms") {
		t.Errorf("logs lack the timeout: %q", logs.all())
	}
}

func TestPrepareErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.wasm"), []byte("not wasm at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(t, Config{})
	tests := []struct {
		name   string
		dir    string
		module string
		memory int64
		want   string
	}{
		{"bad magic", dir, "bad.wasm", 0, "module bad.wasm: invalid magic number"},
		{"missing", dir, "gone.wasm", 0, "module gone.wasm: open"},
		{"escapes", dir, "../bad.wasm", 0, "module ../bad.wasm: path leaves"},
		{"no module", dir, "", 0, "manifest names no module"},
		{"memory below the module's minimum", "testdata", "echo.wasm", 64 << 10, "over limit of 1 pages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := worker.Spec{Dir: tt.dir, Manifest: manifest.Manifest{Module: tt.module, Memory: tt.memory}}
			in, err := rt.Prepare(context.Background(), spec)
			if err == nil {
				in.Close(context.Background())
				t.Fatal("Prepare succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestCompileOnce(t *testing.T) {
	rt := newRuntime(t, Config{})
	spec := echoSpec(&sink{})
	spec.Digest = "d1"
	var wg sync.WaitGroup
	ins := make([]worker.Instance, 8)
	for i := range ins {
		wg.Go(func() {
			in, err := rt.Prepare(context.Background(), spec)
			if err != nil {
				t.Error(err)
				return
			}
			ins[i] = in
		})
	}
	wg.Wait()
	if n := rt.compiles.Load(); n != 1 {
		t.Errorf("compiled %d times, want 1", n)
	}
	// Another memory cap needs its own compilation.
	spec.Manifest.Memory = 32 << 20
	other := prepare(t, rt, spec)
	if n := rt.compiles.Load(); n != 2 {
		t.Errorf("compiled %d times, want 2", n)
	}
	for _, in := range ins {
		if res := serve(in, "GET", "/fn/echo", nil); res.StatusCode != 200 {
			t.Errorf("status %d", res.StatusCode)
		}
		if err := in.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}
	if res := serve(other, "GET", "/fn/echo", nil); res.StatusCode != 200 {
		t.Errorf("status %d", res.StatusCode)
	}
	// Every instance of d1 at 16 MiB is closed: the module was released.
	rt.mu.Lock()
	n := len(rt.modules)
	rt.mu.Unlock()
	if n != 1 {
		t.Errorf("%d compiled modules held, want 1", n)
	}
}

// TestDiskCache checks that a restarted runtime finds its compiled code on
// disk: the first run writes the cache, the second adds nothing to it.
func TestDiskCache(t *testing.T) {
	if helloWasm == "" {
		t.Fatal(buildErr)
	}
	cacheDir := t.TempDir()
	spec := goSpec(t, &sink{})

	snapshot := func() map[string]time.Time {
		files := map[string]time.Time{}
		filepath.WalkDir(cacheDir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				fi, _ := d.Info()
				files[p] = fi.ModTime()
			}
			return nil
		})
		return files
	}
	run := func() time.Duration {
		rt, err := New(Config{CacheDir: cacheDir})
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close(context.Background())
		start := time.Now()
		in, err := rt.Prepare(context.Background(), spec)
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		defer in.Close(context.Background())
		if res := serve(in, "GET", "/fn/echo/x", nil); res.StatusCode != 200 {
			t.Errorf("status %d", res.StatusCode)
		}
		return elapsed
	}

	cold := run()
	first := snapshot()
	if len(first) == 0 {
		t.Fatal("nothing written to the cache dir")
	}
	warm := run()
	second := snapshot()
	if len(second) != len(first) {
		t.Errorf("cache dir went from %d to %d files: the restart recompiled", len(first), len(second))
	}
	for p, mt := range first {
		if !second[p].Equal(mt) {
			t.Errorf("%s rewritten: the restart recompiled", p)
		}
	}
	t.Logf("prepare of the Go example: %s cold, %s from the disk cache", cold, warm)
}

func goSpec(t testing.TB, logs worker.LogSink) worker.Spec {
	t.Helper()
	return worker.Spec{
		Component: "hello",
		Dir:       filepath.Dir(helloWasm),
		Manifest: manifest.Manifest{
			Name: "hello", Runtime: manifest.WASM, Module: filepath.Base(helloWasm),
			Timeout: 10 * time.Second, Memory: manifest.DefaultMemory,
			Env: map[string]string{"GREETING": "hi"},
		},
		Logs: logs,
	}
}

func TestGoExample(t *testing.T) {
	if helloWasm == "" {
		t.Fatal(buildErr)
	}
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, goSpec(t, &sink{}))
	r := httptest.NewRequest("POST", "/fn/hello/x?name=velo", strings.NewReader("abc"))
	w := httptest.NewRecorder()
	in.Serve(w, r, "/fn/hello")
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if want := "hi from Velo! method=POST path=/x query=name=velo body=3 bytes\n"; w.Body.String() != want {
		t.Errorf("body %q, want %q", w.Body, want)
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestInstanceClose(t *testing.T) {
	logs := &sink{}
	rt := newRuntime(t, Config{})
	spec := echoSpec(logs)
	spec.Manifest.Timeout = 400 * time.Millisecond
	in, err := rt.Prepare(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() { done <- serve(in, "GET", "/fn/echo/loop", nil).StatusCode }()
	time.Sleep(50 * time.Millisecond)

	// A short context expires while the request is in flight.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := in.Close(ctx); err == nil {
		t.Error("Close returned before the request in flight finished")
	}
	if res := serve(in, "GET", "/fn/echo", nil); res.StatusCode != 503 {
		t.Errorf("request after Close: status %d, want 503", res.StatusCode)
	}
	if code := <-done; code != 504 {
		t.Errorf("request in flight: status %d, want 504", code)
	}
	if err := in.Close(context.Background()); err != nil {
		t.Error(err)
	}
	rt.mu.Lock()
	n := len(rt.modules)
	rt.mu.Unlock()
	if n != 0 {
		t.Errorf("%d compiled modules held after the last instance closed", n)
	}
}

// TestHammer serves many concurrent requests of every kind through a real
// HTTP server; run with -race.
func TestHammer(t *testing.T) {
	logs := &sink{}
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, echoSpec(logs))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.Serve(w, r, "/fn/echo")
	}))
	defer srv.Close()

	const goroutines, each = 32, 20
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				payload := fmt.Sprintf("g%d-i%d", g, i)
				var (
					res *http.Response
					err error
				)
				switch i % 4 {
				case 0:
					res, err = http.Post(srv.URL+"/fn/echo/echo", "text/plain", strings.NewReader(payload))
				case 1:
					res, err = http.Get(srv.URL + "/fn/echo/env?" + payload)
				case 2:
					res, err = http.Get(srv.URL + "/fn/echo/status")
				case 3:
					res, err = http.Get(srv.URL + "/fn/echo/stderr")
				}
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				body := string(b)
				switch i % 4 {
				case 0:
					if body != payload {
						t.Errorf("echo: %q, want %q", body, payload)
					}
				case 1:
					if !strings.Contains(body, "QUERY_STRING="+payload+"\n") {
						t.Errorf("env lacks this request's query %q", payload)
					}
				case 2:
					if res.StatusCode != 404 {
						t.Errorf("status %d, want 404", res.StatusCode)
					}
				case 3:
					if body != "logged\n" {
						t.Errorf("stderr route: %q", body)
					}
				}
			}
		})
	}
	wg.Wait()
	if n, want := len(logs.all()), goroutines*each/4*3; n != want {
		t.Errorf("%d log lines, want %d", n, want)
	}
}

// TestMemoryIsolation checks that recycled linear memory never shows one
// request's data to the next: /dirty fills memory with a marker byte, /scan
// counts marker bytes in all of its own (grown) memory.
func TestMemoryIsolation(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, echoSpec(&sink{}))
	for i := range 20 {
		if body := readAll(t, serve(in, "GET", "/fn/echo/dirty", nil)); body != "dirtied\n" {
			t.Fatalf("dirty: %q", body)
		}
		if body := readAll(t, serve(in, "GET", "/fn/echo/scan", nil)); body != "markers=0\n" {
			t.Fatalf("round %d: a fresh instance saw the previous one's memory: %q", i, body)
		}
	}
}
