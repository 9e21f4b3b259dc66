package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	dockerclient "github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

// TestSecretsDocker delivers secrets to a real Docker container as
// environment variables: setting and changing one restarts the
// component's containers while clients keep calling it — not one call
// fails — and a value the container prints is redacted from its logs.
func TestSecretsDocker(t *testing.T) {
	engine := dockertest.Engine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	owner := fmt.Sprintf("velosecrets-%d", os.Getpid())
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
	s := &spine{t: t, ctx: ctx, n: n}
	c := client.New(n.URL, n.Token, nil)
	name := fmt.Sprintf("vaultd%d", os.Getpid())
	defer func() { _ = c.Delete(context.Background(), name) }()
	// Velo removes the component's images as it retires them; one still
	// being removed when the node shuts down is left, so the test removes
	// what is left of its own (Cleanup runs after the defers).
	t.Cleanup(func() {
		imgs, _ := engine.ImageList(context.Background(), image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", "velo/"+name))})
		for _, img := range imgs {
			_, _ = engine.ImageRemove(context.Background(), img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
	files := map[string][]byte{
		"Dockerfile": []byte(dockertest.Dockerfile),
		"server":     dockertest.Server(t),
		"velo.toml":  []byte("runtime = \"docker\"\nport = 8080\n[env]\nGREETING = \"hi\"\n"),
	}
	d, err := c.Deploy(ctx, name, bytes.NewReader(archivetest.TarGz(t, files)))
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(s.t, 15*time.Second, "the docker deployment live", func() bool {
		got, err := c.Deployment(ctx, d.ID)
		if err == nil && got.Status == "failed" {
			t.Fatalf("deployment failed: %s\n%s", got.Error, got.BuildLog)
		}
		return err == nil && got.Status == "ready" && got.Live
	})
	path := "/fn/" + name + "/getenv?name=DB_PASSWORD"

	// Clients call all along; every call must succeed with a value set.
	const v1, v2 = "pw-first-9d1c4e", "pw-second-3a7b2f"
	var (
		stop  atomic.Bool
		calls atomic.Int64
		mu    sync.Mutex
		bad   []string
		wg    sync.WaitGroup
	)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				res, err := http.Get(n.URL + path)
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				calls.Add(1)
				if v := string(b); res.StatusCode != 200 || v != "(unset)" && v != v1 && v != v2 {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%d %q", res.StatusCode, b))
					mu.Unlock()
				}
			}
		}()
	}
	value := func() string { _, b := s.get(path); return b }
	if _, err := c.SetSecret(ctx, name, "DB_PASSWORD", v1); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(s.t, 15*time.Second, "the secret in the container", func() bool { return value() == v1 })
	if _, err := c.SetSecret(ctx, name, "DB_PASSWORD", v2); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(s.t, 15*time.Second, "the changed secret in the container", func() bool { return value() == v2 })
	time.Sleep(200 * time.Millisecond) // traffic past the switch
	stop.Store(true)
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("%d of %d calls failed while the containers restarted, e.g. %v", len(bad), calls.Load(), bad[:min(len(bad), 5)])
	}
	if _, b := s.get("/fn/" + name + "/getenv?name=GREETING"); b != "hi" {
		t.Errorf("[env] beside the secret: GREETING = %q", b)
	}

	// The old containers went; one (scale.min 0 keeps one warm) is left.
	cli, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	testsupport.Eventually(s.t, 15*time.Second, "the old containers removed", func() bool {
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
			filters.Arg("label", docker.LabelComponent+"="+name), filters.Arg("label", docker.LabelOwner+"="+owner))})
		return err == nil && len(list) == 1
	})

	// Printed to stdout: the logs show the name, not the value.
	if _, b := s.get("/fn/" + name + "/getenv?name=DB_PASSWORD&print=1"); b != v2 {
		t.Fatalf("print answered %q", b)
	}
	testsupport.Eventually(s.t, 15*time.Second, "the printed secret in the logs", func() bool {
		lines, err := c.Logs(ctx, name, 1000)
		if err != nil {
			return false
		}
		for _, l := range lines {
			if strings.Contains(l.Line, v1) || strings.Contains(l.Line, v2) {
				t.Fatalf("a secret value reached the logs: %q", l.Line)
			}
			if l.Line == "DB_PASSWORD is [secret DB_PASSWORD]" {
				return true
			}
		}
		return false
	})

	// Removal restarts them without it.
	if err := c.DeleteSecret(ctx, name, "DB_PASSWORD"); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(s.t, 15*time.Second, "the secret gone from the container", func() bool { return value() == "(unset)" })
	t.Logf("%d calls during two restarts, none failed", calls.Load())
}
