package docker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

// testOwner labels everything the tests create; TestMain checks that none
// of it is left at the end.
var testOwner = "velotest-" + randHex(4)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if err := sweep(); err != nil {
		fmt.Fprintln(os.Stderr, "cleanup:", err)
		code = 1
	}
	os.Exit(code)
}

// sweep removes what the tests left and fails if a container was left: every
// test must close its instances.
func sweep() error {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		return nil
	}
	own := filters.NewArgs(filters.Arg("label", LabelOwner+"="+testOwner))
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: own})
	if err != nil {
		return err
	}
	var left []string
	for _, c := range cs {
		left = append(left, strings.Join(c.Names, ","))
		cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
	imgs, err := cli.ImageList(ctx, image.ListOptions{Filters: own})
	if err != nil {
		return err
	}
	for _, img := range imgs {
		if _, err := cli.ImageRemove(ctx, img.ID, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			return fmt.Errorf("remove image %s: %w", img.ID, err)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("containers left behind: %v", left)
	}
	return nil
}

// newRuntime returns a runtime owned by the tests, closed at cleanup.
func newRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	dockertest.Engine(t)
	if cfg.Owner == "" {
		cfg.Owner = testOwner
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// appDir writes a build context: the test server FROM scratch, plus extra
// Dockerfile lines. Its digest is derived from the content, as the worker's is.
func appDir(t testing.TB, extra string) (dir, digest string) {
	t.Helper()
	bin := dockertest.Server(t)
	dir = t.TempDir()
	dockerfile := dockertest.Dockerfile + extra
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	h.Write([]byte(dockerfile))
	h.Write(bin)
	return dir, hex.EncodeToString(h.Sum(nil))
}

// sink records log lines.
type sink struct {
	mu    sync.Mutex
	lines []logLine
}

type logLine struct{ stream, line string }

func (s *sink) Log(stream string, at time.Time, line string) {
	s.mu.Lock()
	s.lines = append(s.lines, logLine{stream, line})
	s.mu.Unlock()
}

func (s *sink) has(stream, substr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if l.stream == stream && strings.Contains(l.line, substr) {
			return true
		}
	}
	return false
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, l := range s.lines {
		fmt.Fprintf(&b, "%s: %s\n", l.stream, l.line)
	}
	return b.String()
}

// app is one deployment under test.
type app struct {
	spec  worker.Spec
	log   *testsupport.SyncBuffer
	logs  *sink
	inst  *Instance
	mount string
}

var nextDeployment = time.Now().Unix() % 100000

func newSpec(t testing.TB, name, dir, digest string, m manifest.Manifest) *app {
	nextDeployment++
	// Component names are unique per test process, so that two runs of
	// these tests on one engine never share an image tag.
	name += "-" + testOwner[len("velotest-"):]
	m.Name, m.Runtime = name, manifest.Docker
	if m.Scale.Max == 0 {
		m.Scale.Max = 1
	}
	a := &app{log: &testsupport.SyncBuffer{}, logs: &sink{}, mount: "/fn/" + name}
	a.spec = worker.Spec{
		Component:  name,
		Deployment: nextDeployment,
		Digest:     digest,
		Dir:        dir,
		Manifest:   m,
		BuildLog:   a.log,
		Logs:       a.logs,
	}
	return a
}

// prepare prepares a and closes it at cleanup.
func prepare(t testing.TB, r *Runtime, a *app) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := r.prepare(ctx, a.spec)
	if err != nil {
		t.Fatalf("prepare: %v\nbuild log:\n%s", err, a.log)
	}
	a.inst = inst
	t.Cleanup(func() {
		if err := inst.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}

// get sends one request through Serve.
func (a *app) get(path string) (int, string) {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, a.mount+path, nil)
	a.inst.Serve(w, r, a.mount)
	body, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(body)
}

// containers lists the engine's containers of deployment d.
func containers(t testing.TB, r *Runtime, d int64) []container.Summary {
	t.Helper()
	cs, err := r.cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelOwner+"="+r.cfg.Owner),
		filters.Arg("label", LabelDeployment+"="+strconv.FormatInt(d, 10)),
	)})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
