package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	dockerclient "github.com/docker/docker/client"
	"golang.org/x/sys/unix"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/shell"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

// shellArchive is a Docker component whose image has the test shell as
// /bin/sh (images here are built FROM scratch, with no shell of their own).
func shellArchive(t *testing.T) []byte {
	return archivetest.TarGz(t, map[string][]byte{
		"Dockerfile": []byte(dockertest.ShellDockerfile),
		"server":     dockertest.Server(t),
		"sh":         dockertest.Shell(t),
		"velo.toml":  []byte("runtime = \"docker\"\nport = 8080\n[env]\nGREETING = \"hi\"\n"),
	})
}

// removeLeft removes the containers and images of component name that a
// test leaves (one being removed as the worker stops stays behind).
func removeLeft(t *testing.T, engine *dockerclient.Client, name, owner string) {
	t.Cleanup(func() {
		ctx := context.Background()
		cs, _ := engine.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
			filters.Arg("label", docker.LabelOwner+"="+owner), filters.Arg("label", docker.LabelComponent+"="+name))})
		for _, c := range cs {
			_ = engine.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		}
		imgs, _ := engine.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", "velo/"+name))})
		for _, img := range imgs {
			_, _ = engine.ImageRemove(ctx, img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
}

// ptyTerminal is the velo binary running in a real pseudo-terminal.
type ptyTerminal struct {
	t    *testing.T
	ptmx *os.File // the terminal's side: what a user types and sees
	tty  *os.File // velo's stdin, stdout and stderr
	out  *testsupport.SyncBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

func startTerminal(t *testing.T, env []string, size pty.Winsize, args ...string) *ptyTerminal {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	if err := pty.Setsize(ptmx, &size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(veloBinary(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	// Its own session, with the pty as its controlling terminal: resizes
	// send it SIGWINCH, as a terminal emulator's do.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	term := &ptyTerminal{t: t, ptmx: ptmx, tty: tty, out: &testsupport.SyncBuffer{}, cmd: cmd, done: make(chan struct{})}
	go func() {
		_, _ = io.Copy(term.out, ptmx)
	}()
	go func() { _ = cmd.Wait(); close(term.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-term.done
		ptmx.Close()
		tty.Close()
	})
	return term
}

// typeLine types line and Enter, as a user at a terminal does.
func (term *ptyTerminal) typeLine(line string) {
	term.t.Helper()
	if _, err := term.ptmx.WriteString(line + "\r"); err != nil {
		term.t.Fatal(err)
	}
}

func (term *ptyTerminal) expect(want string) {
	term.t.Helper()
	testsupport.Eventually(term.t, 60*time.Second, "on the terminal: "+want, func() bool {
		return strings.Contains(term.out.String(), want)
	})
}

// exit waits for velo to exit and returns its status.
func (term *ptyTerminal) exit() int {
	term.t.Helper()
	select {
	case <-term.done:
	case <-time.After(time.Minute):
		term.t.Fatalf("velo shell did not exit; terminal:\n%s", term.out)
	}
	return term.cmd.ProcessState.ExitCode()
}

// TestShellCluster opens `velo shell` in a real terminal against a cluster
// of separate processes: the CLI talks to deploymgr's API, deploymgr
// relays to the worker that runs the container (with the cluster token),
// and the worker runs the shell in the container through Docker's exec.
// The shell has a TTY of the terminal's size, follows a resize, gives
// back its exit status and the terminal as it was; the component's logs
// record it; a command runs without a TTY when velo's output is a pipe;
// a WebAssembly component and a wrong token are refused with the reason.
func TestShellCluster(t *testing.T) {
	t.Parallel()
	engine := dockertest.Engine(t)
	c := newCluster(t)
	worker := "shw" + randomHex(t)[:6]
	name := "shellc" + randomHex(t)[:6]
	removeLeft(t, engine, name, worker)
	dm := c.Start("deploymgr", "deploymgr")
	wk := c.Start("worker", "worker", "--name", worker, "--data", t.TempDir())
	api := c.Client(dm)
	d, err := api.Deploy(c.Ctx, name, bytes.NewReader(shellArchive(t)))
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 2*time.Minute, "the docker component live", func() bool {
		got, err := api.Deployment(c.Ctx, d.ID)
		if err == nil && got.Status == "failed" {
			t.Fatalf("deployment failed: %s\n%s", got.Error, got.BuildLog)
		}
		comp, err := api.Component(c.Ctx, name)
		return err == nil && comp.Live != nil && comp.Live.ID == d.ID
	})
	env := []string{"VELO_SERVER=" + dm.URL, "VELO_TOKEN=" + c.Admin, "TERM=xterm-256color"}

	term := startTerminal(t, env, pty.Winsize{Rows: 24, Cols: 80}, "shell", name)
	before, err := unix.IoctlGetTermios(int(term.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	term.expect("$ ")
	term.typeLine("tty")
	term.expect("tty: yes")
	term.typeLine("size")
	term.expect("size 24 rows 80 cols")
	term.typeLine("env TERM")
	term.expect("TERM=xterm-256color")
	if err := pty.Setsize(term.ptmx, &pty.Winsize{Rows: 50, Cols: 160}); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 60*time.Second, "the resize inside the container", func() bool {
		term.typeLine("size")
		return strings.Contains(term.out.String(), "size 50 rows 160 cols")
	})
	term.typeLine("exit 5")
	if code := term.exit(); code != 5 {
		t.Fatalf("velo shell exited %d, want the shell's 5; terminal:\n%s", code, term.out)
	}
	after, err := unix.IoctlGetTermios(int(term.tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if after.Lflag&(unix.ECHO|unix.ICANON) != before.Lflag&(unix.ECHO|unix.ICANON) || before.Lflag&unix.ECHO == 0 {
		t.Errorf("the terminal was not restored: lflag %#x before, %#x after", before.Lflag, after.Lflag)
	}
	testsupport.Eventually(t, 30*time.Second, "the shell in the component's logs", func() bool {
		lines, err := api.Logs(c.Ctx, name, 200)
		if err != nil {
			return false
		}
		var all []string
		for _, l := range lines {
			all = append(all, l.Line)
		}
		s := strings.Join(all, "\n")
		return strings.Contains(s, "shell opened by admin in container velo-"+worker) && strings.Contains(s, "(TTY 80×24): /bin/sh") &&
			strings.Contains(s, "shell of admin in container") && strings.Contains(s, "exit status 5")
	})

	// Without a terminal: stdout and stderr apart, stdin through, the
	// command's exit status.
	run := func(stdin string, args ...string) (string, string, int) {
		cmd := exec.Command(veloBinary(t), args...)
		cmd.Env = append(os.Environ(), env...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
	}
	if out, errOut, code := run("piped in\n", "shell", name, "--", "/bin/sh", "-c", "cat"); out != "piped in\n" || code != 0 {
		t.Errorf("cat: %q %q %d", out, errOut, code)
	}
	if out, errOut, code := run("", "shell", name, "--", "/bin/sh", "-c", "echoerr oops"); out != "" || errOut != "oops\n" || code != 0 {
		t.Errorf("echoerr: %q %q %d", out, errOut, code)
	}
	if out, _, code := run("", "shell", name, "--", "/bin/sh", "-c", "tty"); code != 1 || !strings.Contains(out, "not a tty") {
		t.Errorf("tty through a pipe: %q %d", out, code)
	}
	if _, _, code := run("", "shell", name, "--", "/bin/sh", "-c", "exit 9"); code != 9 {
		t.Errorf("exit 9: %d", code)
	}

	// A WebAssembly component has no shell, and says why.
	wasm := fmt.Sprintf("shellw%s", randomHex(t)[:6])
	wd, err := api.Deploy(c.Ctx, wasm, bytes.NewReader(archivetest.TarGz(t, secretEnvFiles(wasm))))
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "the wasm component live", func() bool {
		comp, err := api.Component(c.Ctx, wasm)
		return err == nil && comp.Live != nil && comp.Live.ID == wd.ID
	})
	if _, errOut, code := run("", "shell", wasm); code == 0 || !strings.Contains(errOut, "a WebAssembly component has no shell: each call runs in a fresh sandboxed instance") {
		t.Errorf("shell into a wasm component: %d %q", code, errOut)
	}
	// The API's authorization holds: a wrong token, an unknown component.
	if _, errOut, code := run("", "shell", name, "--token", "wrong"); code == 0 || !strings.Contains(errOut, "token") {
		t.Errorf("a wrong token: %d %q", code, errOut)
	}
	if _, errOut, code := run("", "shell", "nosuch"+name); code == 0 || !strings.Contains(errOut, "no component named") {
		t.Errorf("an unknown component: %d %q", code, errOut)
	}

	// The worker's own shell endpoint wants the cluster token.
	dial := func(token string) int {
		h := http.Header{}
		if token != "" {
			h.Set("Authorization", "Bearer "+token)
		}
		h.Set(shell.HeaderDeployment, fmt.Sprint(d.ID))
		h.Set(shell.HeaderUser, "mallory")
		conn, resp, err := shell.Dial(c.Ctx, http.DefaultClient, wk.URL+shell.WorkerPath, h)
		if err == nil {
			conn.Close()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := dial(""); got != http.StatusUnauthorized {
		t.Errorf("the worker's shell endpoint without the cluster token: %d", got)
	}
	if got := dial(c.Admin); got != http.StatusUnauthorized {
		t.Errorf("the worker's shell endpoint with the admin token: %d", got)
	}
}

// secretEnvFiles is the small C module of the secrets tests as component
// name.
func secretEnvFiles(name string) map[string][]byte {
	return map[string][]byte{
		"velo.toml":      []byte(fmt.Sprintf("name = %q\nmodule = \"secretenv.wasm\"\n", name)),
		"secretenv.wasm": secretEnvWasm,
	}
}

// TestShellUp runs velo shell against velo up, where deploymgr hands the
// session to the worker in its own process: a command, its output and
// status, and a TTY asked for with -t although stdin is not a terminal.
func TestShellUp(t *testing.T) {
	t.Parallel()
	engine := dockertest.Engine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	owner := "shellup-" + randomHex(t)[:6]
	name := "shellu" + randomHex(t)[:6]
	removeLeft(t, engine, name, owner)
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
	api := client.New(n.URL, n.Token, nil)
	d, err := api.Deploy(ctx, name, bytes.NewReader(shellArchive(t)))
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 2*time.Minute, "the docker component live", func() bool {
		got, err := api.Deployment(ctx, d.ID)
		if err == nil && got.Status == "failed" {
			t.Fatalf("deployment failed: %s\n%s", got.Error, got.BuildLog)
		}
		return err == nil && got.Status == "ready" && got.Live
	})
	shellRun := func(stdin string, args ...string) (string, string, int) {
		var out, errOut strings.Builder
		code := runWith(ctx, append([]string{"shell", "--server", n.URL, "--token", n.Token}, args...), strings.NewReader(stdin), &out, &errOut)
		return out.String(), errOut.String(), code
	}
	if out, errOut, code := shellRun("one\ntwo\n", name, "--", "/bin/sh", "-c", "cat"); out != "one\ntwo\n" || code != 0 {
		t.Errorf("cat: %q %q %d", out, errOut, code)
	}
	if out, _, code := shellRun("", name, "--", "/bin/sh", "-c", "exit 4"); code != 4 {
		t.Errorf("exit 4: %q %d", out, code)
	}
	if out, errOut, code := shellRun("tty\nexit 0\n", "-t", name); code != 0 || !strings.Contains(out, "tty: yes") {
		t.Errorf("-t: %q %q %d", out, errOut, code)
	}
	if _, errOut, code := shellRun("", "-t", "-T", name); code == 0 || !strings.Contains(errOut, "choose one") {
		t.Errorf("-t -T: %q %d", errOut, code)
	}
	testsupport.Eventually(t, 30*time.Second, "the shells in the component's logs", func() bool {
		lines, err := api.Logs(ctx, name, 200)
		if err != nil {
			return false
		}
		n := 0
		for _, l := range lines {
			if strings.Contains(l.Line, "shell opened by admin") {
				n++
			}
		}
		return n == 3
	})
}
