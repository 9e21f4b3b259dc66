package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/clustertest"
	"github.com/velo-run/velo/internal/testsupport"
)

// serving asks router rt for component hello and returns the deployment
// that answered, or why none did.
func serving(hc *http.Client, rt *clustertest.Proc) string {
	res, err := hc.Get(rt.URL + "/fn/hello/x")
	if err != nil {
		return "error: " + err.Error()
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		return "status " + strconv.Itoa(res.StatusCode)
	}
	return res.Header.Get("X-Velo-Deployment")
}

// TestClusterLiveMeansServed: with two routers (separate processes on
// Postgres), the API calls a new deployment live only once both serve it.
// Each round deploys a new version, polls the deployment until the API
// says live, and at that moment calls both routers: every call is
// answered by the new version.
func TestClusterLiveMeansServed(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	dm := c.Start("deploymgr", "deploymgr")
	c.Start("worker", "worker", "--name", "w", "--data", t.TempDir())
	routers := []*clustertest.Proc{c.Start("router-1", "router"), c.Start("router-2", "router")}
	first := deployHello(c, dm, "v0")
	hc := loadClient()
	defer hc.CloseIdleConnections()
	for _, rt := range routers {
		testsupport.Eventually(t, 30*time.Second, rt.Name+" serving the first version", func() bool {
			return serving(hc, rt) == strconv.FormatInt(first, 10)
		})
	}
	const rounds = 8
	var stale []string
	for i := 1; i <= rounds; i++ {
		d, err := c.Client(dm).Deploy(c.Ctx, "hello", strings.NewReader(string(helloArchive(t, fmt.Sprintf("v%d", i)))))
		if err != nil {
			t.Fatalf("deploy round %d: %v", i, err)
		}
		c.PollLive(dm, d.ID, fmt.Sprintf("round %d", i))
		// The API says live: both routers serve it now.
		want := strconv.FormatInt(d.ID, 10)
		answers := make(chan string, len(routers))
		for _, rt := range routers {
			go func() { answers <- rt.Name + ":" + serving(hc, rt) }()
		}
		for range routers {
			if a := <-answers; !strings.HasSuffix(a, ":"+want) {
				stale = append(stale, fmt.Sprintf("round %d (deployment %s live): %s", i, want, a))
			}
		}
	}
	if len(stale) > 0 {
		t.Fatalf("%d of %d calls made when the API said live were not answered by the live version:\n%s",
			len(stale), rounds*len(routers), strings.Join(stale, "\n"))
	}
}

// TestClusterLiveNamesLaggingRouter: a router that heartbeats but does not
// take the new table (stopped with SIGSTOP, its last report fresh) holds
// "live" back for VELO_ROUTER_WAIT only; then velo deploy says live and
// names the lagging router. Once it runs again it serves the new version.
func TestClusterLiveNamesLaggingRouter(t *testing.T) {
	c := newCluster(t, "VELO_ROUTER_WAIT=2s", "VELO_ROUTER_TIMEOUT=10m")
	dm := c.Start("deploymgr", "deploymgr")
	c.Start("worker", "worker", "--name", "w", "--data", t.TempDir())
	r1, r2 := c.Start("router-1", "router"), c.Start("router-2", "router")
	first := deployHello(c, dm, "v0")
	hc := loadClient()
	defer hc.CloseIdleConnections()
	for _, rt := range []*clustertest.Proc{r1, r2} {
		testsupport.Eventually(t, 30*time.Second, rt.Name+" serving the first version", func() bool {
			return serving(hc, rt) == strconv.FormatInt(first, 10)
		})
	}
	if err := syscall.Kill(r2.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(r2.Pid(), syscall.SIGCONT)
		}
	}
	defer resume() // before the cluster's cleanup stops it

	dir := filepath.Join(t.TempDir(), "hello")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"hello.wasm": helloWasm(t),
		"velo.toml":  []byte("name = \"hello\"\nruntime = \"wasm\"\nmodule = \"hello.wasm\"\n[env]\nGREETING = \"v1\"\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := velo(t, "deploy", dir, "--server", dm.URL, "--token", c.Admin)
	if code != 0 {
		t.Fatalf("velo deploy exited %d:\n%s\n%s", code, out, errOut)
	}
	addr := strings.TrimPrefix(r2.URL, "http://")
	if !strings.Contains(out, "live at") || !strings.Contains(errOut, "warning:") || !strings.Contains(errOut, addr) {
		t.Fatalf("velo deploy did not name the lagging router %s:\nstdout:\n%s\nstderr:\n%s", addr, out, errOut)
	}
	if strings.Contains(errOut, strings.TrimPrefix(r1.URL, "http://")) {
		t.Fatalf("velo deploy named router-1, which serves the new version:\n%s", errOut)
	}
	comp, err := c.Client(dm).Component(c.Ctx, "hello")
	if err != nil || comp.Live == nil || comp.Live.ID == first {
		t.Fatalf("after velo deploy: %+v, %v", comp, err)
	}
	want := strconv.FormatInt(comp.Live.ID, 10)
	if got := serving(hc, r1); got != want {
		t.Fatalf("router-1 answered with %s, want the live %s", got, want)
	}
	resume()
	testsupport.Eventually(t, 30*time.Second, "router-2 serving the new version once resumed", func() bool {
		return serving(hc, r2) == want
	})
}
