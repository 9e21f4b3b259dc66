package deploymgr_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/testsupport"
)

// The API is tested against a whole in-process Velo on the embedded store,
// serving the C WAGI test module of package wasm.

var echoWasm = func() []byte {
	b, err := os.ReadFile("../worker/wasm/testdata/echo.wasm")
	if err != nil {
		panic(err)
	}
	return b
}()

type env struct {
	t   *testing.T
	ctx context.Context
	n   *node.Node
	c   *client.Client
}

func start(t *testing.T) *env { t.Helper(); return startWith(t, node.Config{}) }

// startWith starts a node with cfg (on a loopback port and a fresh data
// dir unless cfg says otherwise), stopped when the test ends.
func startWith(t *testing.T, cfg node.Config) *env {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n, err := node.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &env{t: t, ctx: ctx, n: n, c: client.New(n.URL, n.Token, nil)}
}

// deploy uploads files as component name and waits until the deployment
// settles, returning it.
func (e *env) deploy(name string, files map[string][]byte) api.Deployment {
	e.t.Helper()
	d, err := e.c.Deploy(e.ctx, name, bytes.NewReader(archivetest.TarGz(e.t, files)))
	if err != nil {
		e.t.Fatalf("deploy %s: %v", name, err)
	}
	return e.settle(d.ID)
}

func (e *env) settle(id int64) api.Deployment {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := e.c.Deployment(e.ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if d.Status == "failed" || (d.Status == "ready" && d.Live) || (d.Status == "ready" && time.Now().After(deadline)) {
			return d
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("deployment %d still %s", id, d.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) do(method, path, token string, body io.Reader, header ...string) (*http.Response, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, method, e.n.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func echoFiles(greeting string) map[string][]byte {
	return map[string][]byte{
		"echo.wasm": echoWasm,
		"velo.toml": []byte(fmt.Sprintf("timeout = \"500ms\"\n[env]\nGREETING = %q\n", greeting)),
	}
}

// TestStatsOutbound: a component's outbound HTTP calls, allowed and
// refused, show in its per-minute statistics.
func TestStatsOutbound(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "pong") }))
	t.Cleanup(up.Close)
	mod, err := os.ReadFile(filepath.Join("..", "worker", "wasm", "testdata", "outbound-c.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	e := start(t)
	e.deploy("caller", map[string][]byte{
		"outbound.wasm": mod,
		"velo.toml":     []byte(fmt.Sprintf("allowed_hosts = [%q]\n", up.URL)),
	})
	for _, target := range []string{up.URL + "/ping", up.URL + "/ping", "http://127.0.0.1:1/refused"} {
		req, _ := http.NewRequest("POST", e.n.URL+"/fn/caller/", nil)
		req.Header.Set("X-Url", target)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	var st api.Stats
	testsupport.EventuallyShow(t, 60*time.Second, "3 outbound calls, 1 refused, in the stats", func() bool {
		st, err = e.c.Stats(e.ctx, "caller", "1h")
		return err == nil && st.Outbound == 3 && st.OutboundErrors == 1
	}, func() string { return fmt.Sprintf("%+v, %v", st, err) })
	var buckets int64
	for _, b := range st.Buckets {
		buckets += b.Outbound
	}
	if buckets != 3 {
		t.Errorf("buckets hold %d outbound calls, the total says 3", buckets)
	}
}

func TestAPIErrors(t *testing.T) {
	e := start(t)
	e.deploy("echo", echoFiles("one"))
	for _, tc := range []struct {
		method, path, token string
		body                io.Reader
		header              []string
		status              int
		want                string
	}{
		{"GET", "/api/v1/components", "", nil, nil, 401, "missing API token"},
		{"GET", "/api/v1/components", "wrong", nil, nil, 401, "invalid API token"},
		{"GET", "/api/v1/nothing", e.n.Token, nil, nil, 404, "no such API endpoint"},
		{"GET", "/api/v1/components/nope", e.n.Token, nil, nil, 404, `no component named \"nope\"`},
		{"POST", "/api/v1/components/nope/pause", e.n.Token, nil, nil, 404, `no component named \"nope\"`},
		{"GET", "/api/v1/components/nope/logs", e.n.Token, nil, nil, 404, `no component named \"nope\"`},
		{"GET", "/api/v1/deployments/abc", e.n.Token, nil, nil, 400, "is not a number"},
		{"GET", "/api/v1/deployments/999", e.n.Token, nil, nil, 404, "no deployment 999"},
		{"GET", "/api/v1/components/echo/stats?since=forever", e.n.Token, nil, nil, 400, "since"},
		{"GET", "/api/v1/components/echo/logs?tail=-1", e.n.Token, nil, nil, 400, "tail"},
		{"GET", "/api/v1/components/echo/deployments?limit=0", e.n.Token, nil, nil, 400, "limit"},
		{"POST", "/api/v1/components/echo/deployments", e.n.Token, strings.NewReader("{}"), []string{"Content-Type", "application/json"}, 415, "application/gzip"},
		{"POST", "/api/v1/components/echo/deployments", e.n.Token, strings.NewReader("not gzip"), []string{"Content-Type", "application/gzip"}, 400, "archive"},
		{"POST", "/api/v1/components/Bad_Name/deployments", e.n.Token, bytes.NewReader(archivetest.TarGz(t, echoFiles("x"))), []string{"Content-Type", "application/gzip"}, 400, "component name"},
		{"POST", "/api/v1/components/echo/rollback", e.n.Token, strings.NewReader("{"), []string{"Content-Type", "application/json"}, 400, "rollback body"},
	} {
		res, body := e.do(tc.method, tc.path, tc.token, tc.body, tc.header...)
		if res.StatusCode != tc.status || !strings.Contains(body, tc.want) || res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %s %s, want %d with %q", tc.method, tc.path, res.StatusCode, res.Header.Get("Content-Type"), body, tc.status, tc.want)
		}
	}
}

// TestArchiveBomb: a gzip bomb is refused with 413 after reading a little.
func TestArchiveBomb(t *testing.T) {
	e := start(t)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	size := int64(300 << 20)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for i := int64(0); i < size>>20; i++ {
		tw.Write(zeros)
	}
	tw.Close()
	gz.Close()
	_, err := e.c.Deploy(e.ctx, "bomb", &buf)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 413 {
		t.Fatalf("bomb upload: %v, want 413", err)
	}
	if _, err := e.c.Component(e.ctx, "bomb"); err == nil {
		t.Fatal("a refused upload created the component")
	}
}

// TestFailedPrepareKeepsLive: a module that cannot compile fails its
// deployment with the reason, and the live version keeps serving.
func TestFailedPrepareKeepsLive(t *testing.T) {
	e := start(t)
	good := e.deploy("echo", echoFiles("one"))
	bad := e.deploy("echo", map[string][]byte{"echo.wasm": []byte("\x00asm but not really")})
	if bad.Status != "failed" || !strings.Contains(bad.Error, "echo.wasm") {
		t.Fatalf("bad module: status %s, error %q", bad.Status, bad.Error)
	}
	full, err := e.c.Deployment(e.ctx, bad.ID)
	if err != nil || !strings.Contains(full.BuildLog, "failed") {
		t.Fatalf("build log of the failed deployment: %q (%v)", full.BuildLog, err)
	}
	res, _ := e.do("GET", "/fn/echo/env", "", nil)
	if res.StatusCode != 200 || res.Header.Get("X-Velo-Deployment") != fmt.Sprint(good.ID) {
		t.Fatalf("after a failed deploy: %d from %s, want 200 from %d", res.StatusCode, res.Header.Get("X-Velo-Deployment"), good.ID)
	}
	comp, err := e.c.Component(e.ctx, "echo")
	if err != nil || comp.Status != "live" || comp.Live.ID != good.ID {
		t.Fatalf("component after failed deploy: %+v (%v)", comp, err)
	}
	// A first deployment that fails leaves a failed component, not a live one.
	e.deploy("broken", map[string][]byte{"broken.wasm": []byte("nope")})
	comp, err = e.c.Component(e.ctx, "broken")
	if err != nil || comp.Status != "failed" || comp.Live != nil {
		t.Fatalf("broken component: %+v (%v)", comp, err)
	}
	if res, _ := e.do("GET", "/fn/broken/", "", nil); res.StatusCode != 503 {
		t.Fatalf("broken component answered %d, want 503", res.StatusCode)
	}
}

func TestTimeoutAndBadModuleStatuses(t *testing.T) {
	e := start(t)
	e.deploy("echo", echoFiles("one"))
	for path, want := range map[string]int{"/fn/echo/loop": 504, "/fn/echo/exit": 502, "/fn/echo/garbage": 502, "/fn/echo/status": 404, "/fn/echo/redirect": 302} {
		req, _ := http.NewRequest("GET", e.n.URL+path, nil)
		res, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, res.StatusCode, want)
		}
	}
}

func TestLogsFollow(t *testing.T) {
	e := start(t)
	e.deploy("echo", echoFiles("one"))
	ctx, cancel := context.WithTimeout(e.ctx, 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var got []string
	done := make(chan error, 1)
	go func() {
		done <- e.c.FollowLogs(ctx, "echo", 0, func(l api.LogLine) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, l.Stream+": "+l.Line)
			if len(got) == 3 {
				return io.EOF
			}
			return nil
		})
	}()
	// Following starts at the newest line, so keep producing lines until
	// the follower, once connected, has seen one request's worth.
	var err error
	for err == nil {
		if res, _ := e.do("GET", "/fn/echo/stderr", "", nil); res.StatusCode != 200 {
			t.Fatalf("GET /fn/echo/stderr = %d", res.StatusCode)
		}
		select {
		case err = <-done:
		case <-time.After(300 * time.Millisecond):
		}
	}
	if !errors.Is(err, io.EOF) {
		t.Fatalf("FollowLogs: %v", err)
	}
	want := "stderr: first line|stderr: second line|stderr: partial"
	if strings.Join(got, "|") != want {
		t.Fatalf("followed %q, want %q", strings.Join(got, "|"), want)
	}
	lines, err := e.c.Logs(e.ctx, "echo", 2)
	if err != nil || len(lines) != 2 || lines[1].Line != "partial" {
		t.Fatalf("tail 2 = %+v (%v)", lines, err)
	}
}

func TestRollbackRules(t *testing.T) {
	e := start(t)
	one := e.deploy("echo", echoFiles("one"))
	if _, err := e.c.Rollback(e.ctx, "echo", 0); !isStatus(err, 409) {
		t.Fatalf("rollback with nothing earlier: %v, want 409", err)
	}
	bad := e.deploy("echo", map[string][]byte{"echo.wasm": []byte("nope")})
	two := e.deploy("echo", echoFiles("two"))
	e.deploy("other", echoFiles("x"))
	if _, err := e.c.Rollback(e.ctx, "echo", bad.ID); !isStatus(err, 409) {
		t.Fatalf("rollback to a failed deployment: %v, want 409", err)
	}
	other, _ := e.c.Deployments(e.ctx, "other")
	if _, err := e.c.Rollback(e.ctx, "echo", other[0].ID); !isStatus(err, 404) {
		t.Fatalf("rollback to another component's deployment: %v, want 404", err)
	}
	d, err := e.c.Rollback(e.ctx, "echo", 0)
	if err != nil || d.ID != one.ID {
		t.Fatalf("rollback to previous: %+v (%v), want deployment %d", d, err, one.ID)
	}
	e.settle(one.ID)
	if _, body := e.do("GET", "/fn/echo/env", "", nil); !strings.Contains(body, "GREETING=one") {
		t.Fatalf("after rollback the component says %q", body)
	}
	// And forward again to an explicit deployment.
	if _, err := e.c.Rollback(e.ctx, "echo", two.ID); err != nil {
		t.Fatal(err)
	}
	e.settle(two.ID)
	if _, body := e.do("GET", "/fn/echo/env", "", nil); !strings.Contains(body, "GREETING=two") {
		t.Fatalf("after rolling forward the component says %q", body)
	}
}

func TestStatsMetricsHealth(t *testing.T) {
	e := start(t)
	e.deploy("echo", echoFiles("one"))
	for i := 0; i < 5; i++ {
		e.do("GET", "/fn/echo/env", "", nil)
	}
	e.do("GET", "/fn/echo/exit", "", nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := e.c.Stats(e.ctx, "echo", "1h")
		if err != nil {
			t.Fatal(err)
		}
		if st.Hits == 6 {
			if st.Errors != 1 || len(st.Buckets) != 60 {
				t.Fatalf("stats: errors %d, %d buckets; want 1 and 60", st.Errors, len(st.Buckets))
			}
			last := st.Buckets[len(st.Buckets)-1]
			if last.Hits == 0 && st.Buckets[len(st.Buckets)-2].Hits == 0 {
				t.Fatalf("hits not in the latest minutes: %+v", st.Buckets[len(st.Buckets)-2:])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats hits = %d, want 6", st.Hits)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, body := e.do("GET", "/metrics", e.n.Token, nil); !strings.Contains(body, `velo_router_requests_total{component="echo"} 6`) {
		t.Fatalf("/metrics lacks the request counter:\n%.2000s", body)
	}
	// /metrics names every component: not for anyone who reaches the port.
	for _, token := range []string{"", "wrong"} {
		if res, body := e.do("GET", "/metrics", token, nil); res.StatusCode != http.StatusUnauthorized || strings.Contains(body, "echo") {
			t.Errorf("/metrics with token %q = %d, want 401 and no component names:\n%.300s", token, res.StatusCode, body)
		}
	}
	if res, body := e.do("GET", "/healthz", "", nil); res.StatusCode != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz = %d %s", res.StatusCode, body)
	}
}

func isStatus(err error, status int) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Status == status
}

// TestDockerUnavailable: without a Docker runtime, a Docker component
// fails with the reason instead of hanging.
func TestDockerUnavailable(t *testing.T) {
	e := start(t) // node.Config without Docker
	d := e.deploy("web", map[string][]byte{"Dockerfile": []byte("FROM scratch\n")})
	if d.Status != "failed" || !strings.Contains(d.Error, "docker runtime unavailable on worker local") {
		t.Fatalf("docker component without docker: status %s, error %q", d.Status, d.Error)
	}
}

// A deployment the API calls live is the one that answers: a client that
// calls the component as soon as the API says so never reaches the one
// before (the store promotes a moment before the routers are told).
func TestLiveMeansServed(t *testing.T) {
	e := start(t)
	e.deploy("flip", echoFiles("v0"))
	for i := 1; i <= 30; i++ {
		d, err := e.c.Deploy(e.ctx, "flip", bytes.NewReader(archivetest.TarGz(t, echoFiles(fmt.Sprintf("v%d", i)))))
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			got, err := e.c.Deployment(e.ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status == "failed" {
				t.Fatalf("deployment %d failed: %s", d.ID, got.Error)
			}
			if got.Live {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("deployment %d not live after a minute: %+v", d.ID, got)
			}
			// Often enough to catch the moment it is called live, not so
			// often that the poll starves the scheduler of the store.
			time.Sleep(time.Millisecond)
		}
		res, _ := e.do(http.MethodGet, "/fn/flip/", "", nil)
		if served := res.Header.Get("X-Velo-Deployment"); served != strconv.FormatInt(d.ID, 10) {
			t.Fatalf("the API said deployment %d is live; the call was answered by %q", d.ID, served)
		}
	}
}
