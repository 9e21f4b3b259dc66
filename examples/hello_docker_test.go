package examples

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	dockerclient "github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/debiantest"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker"
)

// TestHelloDocker follows examples/hello-docker's README on this machine:
// the Debian base image (velo-debian:bookworm, made by debootstrap as
// `go run ./deploy/build` makes it), the binary built as velo.toml says,
// the image built by the worker from the example's Dockerfile, and a call
// through the router.
func TestHelloDocker(t *testing.T) {
	engine, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	testsupport.Need(t, "Docker engine", err)
	defer engine.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base := debiantest.Image(t, debiantest.BasePackages...)
	if _, err := engine.ImageInspect(ctx, debiantest.BaseImage); err != nil {
		// What deploy/build does; the tag goes again at the end.
		if err := engine.ImageTag(ctx, base, debiantest.BaseImage); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_, _ = engine.ImageRemove(context.Background(), debiantest.BaseImage, image.RemoveOptions{})
		})
	}

	src := "hello-docker"
	toml, err := os.ReadFile(filepath.Join(src, manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(toml)
	if err != nil {
		t.Fatal(err)
	}
	// Built as velo.toml says, in the example's directory (as velo deploy
	// runs it), into a file of this test's.
	bin := filepath.Join(t.TempDir(), "hello")
	build := exec.Command("sh", "-c", strings.Replace(m.Build, "-o hello", "-o "+bin, 1))
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build (%s): %v\n%s", m.Build, err, out)
	}
	hello, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join(src, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}

	b := make([]byte, 4)
	rand.Read(b)
	owner, name := "hellodocker-"+hex.EncodeToString(b), "hello-docker-"+hex.EncodeToString(b)
	t.Cleanup(func() {
		imgs, _ := engine.ImageList(context.Background(), image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", "velo/"+name))})
		for _, img := range imgs {
			_, _ = engine.ImageRemove(context.Background(), img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
	n, err := node.Start(ctx, node.Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(),
		Docker: func(ctx context.Context, _ string, log *slog.Logger) (worker.Runtime, error) {
			return docker.New(ctx, docker.Config{Owner: owner, Logger: log})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	c := client.New(n.URL, n.Token, nil)
	// Under a name of this test's own.
	toml = bytes.Replace(toml, []byte(`name = "hello-docker"`), []byte(`name = "`+name+`"`), 1)
	d, err := c.Deploy(ctx, name, bytes.NewReader(archivetest.TarGz(t, map[string][]byte{
		"Dockerfile": dockerfile, "hello": hello, manifest.FileName: toml,
	})))
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 3*time.Minute, "hello-docker live", func() bool {
		dep, err := c.Deployment(ctx, d.ID)
		if err == nil && dep.Status == "failed" {
			t.Fatalf("deployment failed: %s\n%s", dep.Error, dep.BuildLog)
		}
		return err == nil && dep.Status == "ready" && dep.Live
	})
	res, err := http.Get(n.URL + "/fn/" + name + "/a/b")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "Hello from a container! You asked for /a/b\n" {
		t.Fatalf("GET = %d %q", res.StatusCode, body)
	}
}
