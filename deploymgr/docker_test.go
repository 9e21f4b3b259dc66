package deploymgr_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

// TestDockerComponent runs a Docker component through the whole platform
// on the real engine: upload, build, serve through the router, replace
// (the old image goes), a failing build that leaves the live version
// serving, and delete (its containers go).
func TestDockerComponent(t *testing.T) {
	cli := dockertest.Engine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	owner := fmt.Sprintf("velotest-%d", os.Getpid())
	n, err := node.Start(ctx, node.Config{
		Addr:    "127.0.0.1:0",
		DataDir: t.TempDir(),
		Docker: func(ctx context.Context, _ string, log *slog.Logger) (worker.Runtime, error) {
			return docker.New(ctx, docker.Config{Owner: owner, Logger: log})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	e := &env{t: t, ctx: ctx, n: n, c: client.New(n.URL, n.Token, nil)}

	server := dockertest.Server(t)
	files := func(greeting string) map[string][]byte {
		return map[string][]byte{
			"Dockerfile": []byte(dockertest.Dockerfile),
			"server":     server,
			"velo.toml":  []byte(fmt.Sprintf("runtime = \"docker\"\nport = 8080\n[env]\nGREETING = %q\n", greeting)),
		}
	}
	name := fmt.Sprintf("web%d", os.Getpid())
	containers := func() int {
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", docker.LabelComponent+"="+name))})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	defer func() {
		// Whatever happened, leave nothing behind.
		_ = e.c.Delete(context.Background(), name)
	}()

	one := e.deploy(name, files("one"))
	if one.Status != "ready" || !one.Live {
		t.Fatalf("docker deployment: %+v", one)
	}
	res, body := e.do("GET", "/fn/"+name+"/", "", nil)
	if res.StatusCode != 200 || body != "hello one\n" || res.Header.Get("X-Velo-Worker") != "local" {
		t.Fatalf("GET /fn/%s/ = %d %q %v", name, res.StatusCode, body, res.Header)
	}
	if _, body := e.do("GET", "/fn/"+name+"/echo/x?y=1", "", nil); !strings.HasPrefix(body, "path=/echo/x query=y=1") {
		t.Fatalf("the container saw %q, want the path below the mount", body)
	}

	// A new version replaces the old one under load without a failed
	// request; then the old image is removed.
	stop := make(chan struct{})
	type outcome struct {
		ok   bool
		body string
	}
	results := make(chan outcome, 1<<16)
	var load sync.WaitGroup
	for range 4 {
		load.Add(1)
		go func() {
			defer load.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				res, err := http.Get(n.URL + "/fn/" + name + "/")
				if err != nil {
					results <- outcome{false, err.Error()}
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				results <- outcome{res.StatusCode == 200, string(b)}
			}
		}()
	}
	two := e.deploy(name, files("two"))
	if _, body := e.do("GET", "/fn/"+name+"/", "", nil); body != "hello two\n" {
		t.Fatalf("after redeploy: %q", body)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	load.Wait()
	close(results)
	seen := map[string]int{}
	for r := range results {
		if !r.ok {
			t.Errorf("request failed during the redeploy: %s", r.body)
		}
		seen[r.body]++
	}
	if seen["hello one\n"] == 0 || seen["hello two\n"] == 0 {
		t.Fatalf("answers during the redeploy: %v, want both versions", seen)
	}
	oldTag := fmt.Sprintf("velo/%s:%.12s-%s", name, one.Digest, owner)
	testsupport.Eventually(t, 30*time.Second, "image "+oldTag+" of the replaced deployment to go", func() bool {
		_, err := cli.ImageInspect(ctx, oldTag)
		return err != nil
	})

	// A build that fails leaves version two serving.
	bad := files("three")
	bad["Dockerfile"] = []byte("FROM scratch\nCOPY missing-file /x\n")
	if d := e.deploy(name, bad); d.Status != "failed" || !strings.Contains(d.Error, "missing-file") {
		t.Fatalf("failing build: status %s, error %q", d.Status, d.Error)
	}
	// So does an image that builds but whose container exits at start.
	crashing := files("four")
	crashing["velo.toml"] = []byte("runtime = \"docker\"\nport = 8080\n[env]\nEXIT_AT_START = \"1\"\n")
	failed := e.deploy(name, crashing)
	if failed.Status != "failed" || !strings.Contains(failed.Error, "fatal: bad config") {
		t.Fatalf("crashing container: status %s, error %q", failed.Status, failed.Error)
	}
	res, body = e.do("GET", "/fn/"+name+"/", "", nil)
	if body != "hello two\n" || res.Header.Get("X-Velo-Deployment") != fmt.Sprint(two.ID) {
		t.Fatalf("after a failed build: %q from %s", body, res.Header.Get("X-Velo-Deployment"))
	}

	// The image that never got ready is not left behind.
	failedTag := fmt.Sprintf("velo/%s:%.12s-%s", name, failed.Digest, owner)
	testsupport.Eventually(t, 30*time.Second, "image "+failedTag+" of the failed deployment to go", func() bool {
		_, err := cli.ImageInspect(ctx, failedTag)
		return err != nil
	})

	// Delete: its containers and images go.
	if err := e.c.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "the containers of "+name+" to go after delete", func() bool { return containers() == 0 })
	twoTag := fmt.Sprintf("velo/%s:%.12s-%s", name, two.Digest, owner)
	testsupport.Eventually(t, 30*time.Second, "image "+twoTag+" to go after delete", func() bool {
		_, err := cli.ImageInspect(ctx, twoTag)
		return err != nil
	})
}
