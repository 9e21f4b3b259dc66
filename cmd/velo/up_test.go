package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/clustertest"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/testsupport"
)

// Tests that mostly wait on processes run in parallel (t.Parallel): each has
// its own data dir, database, ports, processes and Docker names. The others
// stay sequential, and so run before any parallel one starts: those that set
// the environment or the working directory (t.Setenv, t.Chdir);
// TestClusterPostgresRestart (it stops the Postgres server every test uses);
// TestSpineSQLite and TestSpinePostgres (both build examples/hello-wasm in
// the source tree; their first call must answer within the component's
// 10s, which it missed at load ~20 here even alone); and those that hold
// traffic while something changes and require that no call fail, or kill,
// stall or flood a process (...UnderLoad, ...DuringTraffic, failover,
// autoscale, install): beside another test on a loaded 2-core machine,
// heartbeats miss their deadline (TestSecretsDuringTraffic got 503s so).
func TestMain(m *testing.M) { os.Exit(clustertest.Run(m)) }

// TestSpineSQLite and TestSpinePostgres run the whole first path — deploy
// a WASM component with the CLI, call it through the router, pause,
// resume, logs, stats, bad uploads, restart, rollback, delete — against a
// real in-process Velo on each store engine.
func TestSpineSQLite(t *testing.T) { testSpine(t, "") }

func TestSpinePostgres(t *testing.T) { testSpine(t, pgtest.URL(t)) }

type spine struct {
	t    *testing.T
	ctx  context.Context
	n    *node.Node
	data string
	db   string
}

func (s *spine) start() {
	s.t.Helper()
	n, err := node.Start(s.ctx, node.Config{Addr: "127.0.0.1:0", DataDir: s.data, DatabaseURL: s.db})
	if err != nil {
		s.t.Fatal(err)
	}
	s.n = n
	s.t.Cleanup(func() { n.Close() })
}

// velo runs a CLI command against the node and returns its output.
func (s *spine) velo(wantCode int, args ...string) string {
	s.t.Helper()
	var out, errOut bytes.Buffer
	args = append(args, "--server", s.n.URL, "--token", s.n.Token)
	if code := run(s.ctx, args, &out, &errOut); code != wantCode {
		s.t.Fatalf("velo %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out.String(), errOut.String())
	}
	return out.String() + errOut.String()
}

func (s *spine) get(path string) (*http.Response, string) {
	s.t.Helper()
	res, err := http.Get(s.n.URL + path)
	if err != nil {
		s.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func testSpine(t *testing.T, db string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir(), db: db}
	s.start()

	// Deploy the example with its build command, as a user would.
	out := s.velo(0, "deploy", "../../examples/hello-wasm")
	for _, want := range []string{"building:", "uploading", "live at " + s.n.URL + "/fn/hello/"} {
		if !strings.Contains(out, want) {
			t.Fatalf("velo deploy output lacks %q:\n%s", want, out)
		}
	}
	res, body := s.get("/fn/hello/world?x=1")
	if res.StatusCode != 200 || body != "hi from Velo! method=GET path=/world query=x=1\n" {
		t.Fatalf("GET /fn/hello/world = %d %q", res.StatusCode, body)
	}
	first := res.Header.Get("X-Velo-Deployment")
	if first == "" || res.Header.Get("X-Velo-Worker") != "local" {
		t.Fatalf("missing X-Velo headers: %v", res.Header)
	}

	// Pause and resume.
	s.velo(0, "pause", "hello")
	if res, body := s.get("/fn/hello/"); res.StatusCode != 503 || !strings.Contains(body, "paused") {
		t.Fatalf("paused component answered %d %q", res.StatusCode, body)
	}
	s.velo(0, "resume", "hello")
	if res, _ := s.get("/fn/hello/"); res.StatusCode != 200 {
		t.Fatalf("resumed component answered %d", res.StatusCode)
	}

	// Stats reach the store in batches.
	testsupport.Eventually(s.t, 15*time.Second, "hits in stats", func() bool {
		st, err := client.New(s.n.URL, s.n.Token, nil).Stats(ctx, "hello", "1h")
		return err == nil && st.Hits >= 2
	})

	// Bad uploads: 400 naming the problem, nothing stored, live untouched.
	c := client.New(s.n.URL, s.n.Token, nil)
	before, err := c.Deployments(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}
	wasm := helloWasm(t)
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"unknown key", map[string]string{"velo.toml": "name = \"hello\"\nprot = 8080\n", "hello.wasm": string(wasm)}, `unknown key "prot"`},
		{"bad timeout", map[string]string{"velo.toml": "timeout = \"soon\"\n", "hello.wasm": string(wasm)}, "timeout"},
		{"traversal", map[string]string{"../evil.wasm": string(wasm)}, "leaves the tree"},
		{"absolute", map[string]string{"/etc/evil": "x", "hello.wasm": string(wasm)}, "/etc/evil"},
	} {
		_, err := c.Deploy(ctx, "hello", bytes.NewReader(archivetest.TarGz(t, tc.files)))
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 400 || !strings.Contains(ce.Message, tc.want) {
			t.Errorf("%s: upload error = %v, want 400 mentioning %q", tc.name, err, tc.want)
		}
	}
	if after, _ := c.Deployments(ctx, "hello"); len(after) != len(before) {
		t.Fatalf("bad uploads recorded deployments: %d before, %d after", len(before), len(after))
	}
	if res, _ := s.get("/fn/hello/"); res.StatusCode != 200 || res.Header.Get("X-Velo-Deployment") != first {
		t.Fatalf("after bad uploads: %d from deployment %s, want 200 from %s", res.StatusCode, res.Header.Get("X-Velo-Deployment"), first)
	}
	// No token, no API.
	if res, body := s.get("/api/v1/components"); res.StatusCode != 401 || !strings.Contains(body, `"error"`) {
		t.Fatalf("API without token: %d %s", res.StatusCode, body)
	}

	// A second version, then roll back to the first.
	v2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(v2, "hello.wasm"), wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v2, "velo.toml"), []byte("name = \"hello\"\nmodule = \"hello.wasm\"\n[env]\nGREETING = \"v2\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.velo(0, "deploy", v2)
	if _, body := s.get("/fn/hello/"); !strings.HasPrefix(body, "v2 from Velo!") {
		t.Fatalf("after deploying v2: %q", body)
	}
	s.velo(0, "rollback", "hello")
	res, body = s.get("/fn/hello/")
	if !strings.HasPrefix(body, "hi from Velo!") || res.Header.Get("X-Velo-Deployment") != first {
		t.Fatalf("after rollback: %q from deployment %s, want deployment %s", body, res.Header.Get("X-Velo-Deployment"), first)
	}

	// Restart with the same data dir: served again without a redeploy.
	s.n.Close()
	s.start()
	testsupport.Eventually(s.t, 15*time.Second, "hello after restart", func() bool {
		res, body := s.get("/fn/hello/")
		return res.StatusCode == 200 && strings.HasPrefix(body, "hi from Velo!")
	})
	out = s.velo(0, "ls")
	if !strings.Contains(out, "hello") || !strings.Contains(out, "live") {
		t.Fatalf("velo ls after restart:\n%s", out)
	}

	// Delete.
	s.velo(0, "rm", "hello", "--yes")
	if res, _ := s.get("/fn/hello/"); res.StatusCode != 404 {
		testsupport.Eventually(s.t, 15*time.Second, "404 after rm", func() bool { res, _ := s.get("/fn/hello/"); return res.StatusCode == 404 })
	}
	if out := s.velo(1, "status", "hello"); !strings.Contains(out, "no component named") {
		t.Fatalf("velo status after rm: %s", out)
	}
}

// hello holds the hello-wasm example, built once per test process: tests
// must not depend on another test having built it in the source tree.
var hello struct {
	once sync.Once
	wasm []byte
	err  error
}

func helloWasm(t testing.TB) []byte {
	t.Helper()
	hello.once.Do(func() {
		dir, err := os.MkdirTemp("", "velo-hello-wasm")
		if err != nil {
			hello.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "hello.wasm")
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir = "../../examples/hello-wasm"
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			hello.err = fmt.Errorf("build examples/hello-wasm: %v\n%s", err, b)
			return
		}
		hello.wasm, hello.err = os.ReadFile(out)
	})
	if hello.err != nil {
		t.Fatal(hello.err)
	}
	return hello.wasm
}
