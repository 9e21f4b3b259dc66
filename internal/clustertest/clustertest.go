package clustertest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"crypto/rand"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/testsupport"
)

var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// Run runs the tests (pgtest.Run) and removes the velo binary they built:
// func TestMain(m *testing.M) { os.Exit(clustertest.Run(m)) }.
func Run(m *testing.M) int {
	code := pgtest.Run(m)
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	return code
}

// repoRoot is the module's root, found from this file's place in it.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Binary builds the velo binary once per test process (static, as the
// image ships it) and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() {
		bin.dir, bin.err = os.MkdirTemp("", "velo-clustertest-bin-")
		if bin.err != nil {
			return
		}
		bin.path = filepath.Join(bin.dir, "velo")
		cmd := exec.Command("go", "build", "-o", bin.path, "./cmd/velo")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			bin.err = fmt.Errorf("go build ./cmd/velo: %v\n%s", err, out)
		}
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}

// Cluster is a set of role processes sharing one Postgres database.
type Cluster struct {
	T     *testing.T
	Ctx   context.Context
	Admin string // admin API token
	Token string // cluster token
	DB    string // the Postgres database's URL
	env   []string
	mu    sync.Mutex
	procs []*Proc
}

// Proc is one running role.
type Proc struct {
	Name string
	URL  string // http://127.0.0.1:PORT
	Out  *testsupport.SyncBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// New returns a cluster on a fresh database, with env (KEY=VALUE) added to
// every role's environment. Its processes are stopped when t ends, and
// their output logged if t failed. Skipped with -short.
func New(t *testing.T, env ...string) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster tests start processes; skipped with -short")
	}
	Binary(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &Cluster{T: t, Ctx: ctx, Admin: "admin-" + rand.Text(), Token: "cluster-" + rand.Text(), DB: pgtest.URL(t)}
	c.env = append([]string{
		"VELO_DATABASE_URL=" + c.DB,
		"VELO_CLUSTER_TOKEN=" + c.Token,
		"VELO_ADMIN_TOKEN=" + c.Admin,
		"VELO_LOG_LEVEL=info",
	}, env...)
	t.Cleanup(func() {
		c.mu.Lock()
		procs := c.procs
		c.mu.Unlock()
		for _, p := range procs {
			p.Stop()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("--- %s output:\n%s", p.Name, tail(p.Out.String(), 60))
			}
		}
	})
	return c
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Env is what every role's environment gets beside the test's (the
// database, the tokens, New's env), for a process started otherwise.
func (c *Cluster) Env() []string { return slices.Clone(c.env) }

// Procs are the processes started so far, in order.
func (c *Cluster) Procs() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.procs)
}

// FreeAddr returns a loopback address with a port free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start runs `velo ROLE --addr 127.0.0.1:PORT args…` on a free port and
// waits (up to 30s) for its /healthz.
func (c *Cluster) Start(name, role string, args ...string) *Proc {
	c.T.Helper()
	return c.StartAt(name, FreeAddr(c.T), role, args...)
}

// StartAt is Start on addr (a role started again where it was).
func (c *Cluster) StartAt(name, addr, role string, args ...string) *Proc {
	c.T.Helper()
	p := launch(c.T, name, addr, c.env, append([]string{role, "--addr", addr}, args...), func(p *Proc) {
		c.mu.Lock()
		c.procs = append(c.procs, p)
		c.mu.Unlock()
	})
	return p
}

// Launch runs the velo binary with args (which serve on addr) and env
// added to its environment, outside any Cluster (`velo up` on a data dir
// of its own), and waits (up to 30s) for its /healthz. It is stopped when
// t ends, and its output logged if t failed.
func Launch(t testing.TB, name, addr string, env []string, args ...string) *Proc {
	t.Helper()
	return launch(t, name, addr, env, args, func(p *Proc) {
		t.Cleanup(func() {
			p.Stop()
			if t.Failed() {
				t.Logf("--- %s output:\n%s", p.Name, tail(p.Out.String(), 60))
			}
		})
	})
}

// launch starts the process, hands it to track (which arranges its stop),
// and waits for its /healthz.
func launch(t testing.TB, name, addr string, env, args []string, track func(*Proc)) *Proc {
	t.Helper()
	cmd := exec.Command(Binary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	p := &Proc{Name: name, URL: "http://" + addr, Out: new(testsupport.SyncBuffer), cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Out, p.Out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	track(p)
	hc := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := hc.Get(p.URL + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited early:\n%s", name, p.Out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy after 30s: %v\n%s", name, err, p.Out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Tail is the last n lines of the process's output.
func (p *Proc) Tail(n int) string { return tail(p.Out.String(), n) }

// Signal sends sig to the process (SIGSTOP, SIGCONT: a stalled process).
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop asks the process to shut down, then kills it after 10s.
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Kill sends SIGKILL (kill -9: no shutdown, no goodbye) and waits for the
// process to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Client is an API client of deploymgr dm with the admin token.
func (c *Cluster) Client(dm *Proc) *client.Client { return client.New(dm.URL, c.Admin, nil) }

// HelloWasm is bench's small C WAGI module: it answers "$GREETING from
// Velo! …".
func HelloWasm(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "bench", "testdata", "hello.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Deploy uploads component name (HelloWasm with greeting) through
// deploymgr dm and waits (up to 60s) until it is live; it returns the
// deployment's ID.
func (c *Cluster) Deploy(dm *Proc, name, greeting string) int64 {
	c.T.Helper()
	return c.DeployFiles(dm, name, map[string][]byte{
		"hello.wasm": HelloWasm(c.T),
		"velo.toml":  fmt.Appendf(nil, "name = %q\nruntime = \"wasm\"\nmodule = \"hello.wasm\"\n[env]\nGREETING = %q\n", name, greeting),
	})
}

// DeployFiles uploads component name made of files (a velo.toml among
// them) through deploymgr dm and waits (up to 60s) until it is live; it
// returns the deployment's ID.
func (c *Cluster) DeployFiles(dm *Proc, name string, files map[string][]byte) int64 {
	c.T.Helper()
	return c.DeployArchive(dm, name, archivetest.TarGz(c.T, files))
}

// DeployArchive uploads archive (a .tar.gz) as component name through
// deploymgr dm and waits (up to 60s) until it is live; it returns the
// deployment's ID.
func (c *Cluster) DeployArchive(dm *Proc, name string, archive []byte) int64 {
	c.T.Helper()
	d, err := c.Client(dm).Deploy(c.Ctx, name, bytes.NewReader(archive))
	if err != nil {
		c.T.Fatalf("deploy %s: %v", name, err)
	}
	c.WaitLive(dm, name, d.ID)
	return d.ID
}

// WaitLive waits (up to 60s) until deployment id is component name's live
// one, per the API of dm.
func (c *Cluster) WaitLive(dm *Proc, name string, id int64) {
	c.T.Helper()
	testsupport.Eventually(c.T, 60*time.Second, fmt.Sprintf("deployment %d of %s live", id, name), func() bool {
		comp, err := c.Client(dm).Component(c.Ctx, name)
		return err == nil && comp.Live != nil && comp.Live.ID == id
	})
}

// PollLive polls deploymgr dm's API, tightly (the tests call the routers
// the moment it answers), until it says deployment id is live; it fails
// the test when the deployment failed or is not live after 60s. what names
// the wait in the failure.
func (c *Cluster) PollLive(dm *Proc, id int64, what string) {
	c.T.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := c.Client(dm).Deployment(c.Ctx, id)
		if err == nil && got.Status == "failed" {
			c.T.Fatalf("%s: deployment %d failed: %s", what, id, got.Error)
		}
		if err == nil && got.Live {
			return
		}
		if time.Now().After(deadline) {
			c.T.Fatalf("%s: deployment %d not live after 60s (last: %+v, %v)", what, id, got, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ReadyOn returns the workers holding a ready placement of component
// name's live deployment, per the API of dm.
func (c *Cluster) ReadyOn(dm *Proc, name string) ([]string, error) {
	comp, err := c.Client(dm).Component(c.Ctx, name)
	if err != nil {
		return nil, err
	}
	if comp.Live == nil {
		return nil, nil
	}
	var ws []string
	for _, in := range comp.Instances {
		if in.Deployment == comp.Live.ID && in.State == "ready" {
			ws = append(ws, in.Worker)
		}
	}
	return ws, nil
}
