package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/debiantest"
	"github.com/velo-run/velo/internal/testsupport"
)

// compose returns the command that runs Compose here: the docker CLI's
// plugin (docker compose) or the standalone docker-compose.
func compose(t *testing.T) []string {
	t.Helper()
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	path, err := exec.LookPath("docker-compose")
	testsupport.Need(t, "Docker Compose (docker compose or docker-compose)", err)
	return []string{path}
}

// repoRoot is the repository's root, from this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestCompose runs docker-compose.yml for real, as README says: the images
// built here from the Debian base (Postgres from Debian's package, Velo
// FROM scratch with its static binary), `up`, the example deployed with
// `velo deploy` against the deploymgr container and called through the
// router container, then `down -v --rmi all`, after which no container,
// network, volume or image of the project is left.
func TestCompose(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images and runs a cluster; skipped with -short")
	}
	cmdCompose := compose(t)
	engine, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	testsupport.Need(t, "Docker engine", err)
	defer engine.Close()
	base := debiantest.Image(t, BasePackages...)
	root := repoRoot(t)

	// The compose file and its build contexts, as checked in, with the
	// binary built for them.
	dir := t.TempDir()
	copyFile(t, filepath.Join(root, "docker-compose.yml"), filepath.Join(dir, "docker-compose.yml"), 0o644)
	for _, f := range []string{"Dockerfile", ".dockerignore", "postgres/Dockerfile", "postgres/entrypoint.sh"} {
		copyFile(t, filepath.Join(root, "deploy", f), filepath.Join(dir, "deploy", f), 0o644)
	}
	velo := filepath.Join(dir, "deploy", "velo")
	gb := exec.Command("go", "build", "-ldflags=-s -w", "-o", velo, "./cmd/velo")
	gb.Dir = root
	gb.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := gb.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	b := make([]byte, 4)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	project := "velocompose" + suffix
	admin := "admin-" + suffix + suffix
	images := []string{"velo-compose-test:" + suffix, "velo-compose-test-postgres:" + suffix}
	env := append(os.Environ(),
		"VELO_CLUSTER_TOKEN=cluster-"+suffix+suffix,
		"VELO_ADMIN_TOKEN="+admin,
		"VELO_BASE_IMAGE="+base,
		"VELO_IMAGE="+images[0],
		"VELO_POSTGRES_IMAGE="+images[1],
		// Loopback, on ports the engine picks.
		"VELO_ROUTER_PUBLISH=127.0.0.1:",
		"VELO_DEPLOYMGR_PUBLISH=127.0.0.1:",
		"VELO_WEBUI_PUBLISH=127.0.0.1:",
	)
	run := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		argv := append(append([]string{}, cmdCompose[1:]...), append([]string{"-p", project, "-f", filepath.Join(dir, "docker-compose.yml"), "--project-directory", dir}, args...)...)
		cmd := exec.CommandContext(ctx, cmdCompose[0], argv...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	down := func() string {
		out, err := run(5*time.Minute, "down", "-v", "--rmi", "all", "--remove-orphans")
		if err != nil {
			t.Errorf("down: %v\n%s", err, out)
		}
		return out
	}
	downed := false
	t.Cleanup(func() {
		if !downed {
			if t.Failed() {
				out, _ := run(time.Minute, "logs", "--no-color", "--tail", "40")
				t.Logf("compose logs:\n%s", out)
			}
			down()
		}
	})

	if out, err := run(15*time.Minute, "up", "-d", "--build"); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	port := func(service, p string) string {
		out, err := run(time.Minute, "port", service, p)
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "127.0.0.1:") {
			t.Fatalf("port %s %s: %v %q", service, p, err, out)
		}
		return "http://" + strings.TrimSpace(out)
	}
	router, deploymgr := port("router", "8080"), port("deploymgr", "8081")
	healthy := func(u string) bool {
		res, err := http.Get(u + "/healthz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	}
	testsupport.Eventually(t, 3*time.Minute, "deploymgr and router answering", func() bool { return healthy(deploymgr) && healthy(router) })

	// README's command, with the binary the image holds.
	deploy := exec.Command(velo, "deploy", "examples/hello-wasm", "--server", deploymgr, "--token", admin)
	deploy.Dir = root
	deploy.Env = env
	if out, err := deploy.CombinedOutput(); err != nil {
		t.Fatalf("velo deploy: %v\n%s", err, out)
	}
	var got string
	testsupport.Eventually(t, time.Minute, "hello through the router", func() bool {
		res, err := http.Get(router + "/fn/hello/compose")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got = fmt.Sprintf("%d %s [%s]", res.StatusCode, body, res.Header.Get("X-Velo-Worker"))
		return res.StatusCode == 200 && strings.HasPrefix(string(body), "hi from Velo!") && strings.HasPrefix(res.Header.Get("X-Velo-Worker"), "worker-")
	})
	t.Logf("through the router: %s", got)

	downed = true
	down()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	label := filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+project))
	cs, err := engine.ContainerList(ctx, container.ListOptions{All: true, Filters: label})
	if err != nil || len(cs) > 0 {
		t.Errorf("containers left: %d, %v", len(cs), err)
	}
	ns, err := engine.NetworkList(ctx, network.ListOptions{Filters: label})
	if err != nil || len(ns) > 0 {
		t.Errorf("networks left: %d, %v", len(ns), err)
	}
	vs, err := engine.VolumeList(ctx, volume.ListOptions{Filters: label})
	if err != nil || len(vs.Volumes) > 0 {
		t.Errorf("volumes left: %d, %v", len(vs.Volumes), err)
	}
	for _, ref := range images {
		if imgs, err := engine.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", ref))}); err != nil || len(imgs) > 0 {
			t.Errorf("image %s left: %d, %v", ref, len(imgs), err)
		}
	}
	if _, err := engine.ImageInspect(ctx, base); err != nil {
		t.Errorf("the Debian base image (a cache shared with other tests) went: %v", err)
	}
}
