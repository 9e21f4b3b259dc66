// Package dockertest gives tests the Docker engine (Engine) and the
// component the Docker tests run: the static HTTP server in
// worker/docker/testdata/server, for an image built FROM scratch (no
// registry needed), and the tiny shell in worker/docker/testdata/sh that
// such an image lacks, for the tests of velo shell.
package dockertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/testsupport"
)

// Engine returns a client of the local Docker engine (from DOCKER_HOST and
// the like), closed when t ends. Without a reachable engine it skips t, or
// fails it under CI=true.
func Engine(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = cli.Ping(ctx)
		cancel()
		if err != nil {
			cli.Close()
		}
	}
	testsupport.Need(t, "Docker engine", err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Dockerfile makes the image of the server: the binary, as file "server"
// of the build context, alone FROM scratch.
const Dockerfile = "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n"

// ShellDockerfile makes the image of the server with the test shell as
// /bin/sh (file "sh" of the build context).
const ShellDockerfile = "FROM scratch\nCOPY server /server\nCOPY sh /bin/sh\nENTRYPOINT [\"/server\"]\n"

// program is one test binary, built once per test process.
type program struct {
	dir  string // under worker/docker/testdata
	once sync.Once
	bin  []byte
	err  error
}

func (p *program) get(t testing.TB) []byte {
	t.Helper()
	p.once.Do(func() { p.bin, p.err = build(p.dir) })
	if p.err != nil {
		t.Fatal(p.err)
	}
	return p.bin
}

var server, sh = &program{dir: "server"}, &program{dir: "sh"}

// Server returns the server compiled as a static Linux binary; it is built
// once per test process.
func Server(t testing.TB) []byte {
	t.Helper()
	return server.get(t)
}

// Shell returns the test shell compiled as a static Linux binary; it is
// built once per test process.
func Shell(t testing.TB) []byte {
	t.Helper()
	return sh.get(t)
}

func build(name string) ([]byte, error) {
	// The module root, wherever the test runs from inside it.
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return nil, fmt.Errorf("build test %s: not inside the module (go env GOMOD: %q, %v)", name, gomod, err)
	}
	dir, err := os.MkdirTemp("", "velo-test-"+name+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(gomod))), "worker", "docker", "testdata", name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build test %s: %v\n%s", name, err, msg)
	}
	return os.ReadFile(out)
}
