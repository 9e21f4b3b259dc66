package docker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/shell"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

// shellApp is the test server with the test shell as /bin/sh.
func shellApp(t *testing.T, r *Runtime, name string) *app {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{"Dockerfile": []byte(dockertest.ShellDockerfile), "server": dockertest.Server(t), "sh": dockertest.Shell(t)}
	h := sha256.New()
	for _, n := range []string{"Dockerfile", "server", "sh"} {
		if err := os.WriteFile(filepath.Join(dir, n), files[n], 0o755); err != nil {
			t.Fatal(err)
		}
		h.Write(files[n])
	}
	a := newSpec(t, name, dir, hex.EncodeToString(h.Sum(nil)), manifest.Manifest{Port: 8080})
	prepare(t, r, a)
	return a
}

// session is a shell driven through package shell's two ends, as
// deploymgr and the CLI drive it.
type session struct {
	t      *testing.T
	stdin  *io.PipeWriter
	out    *testsupport.SyncBuffer
	errOut *testsupport.SyncBuffer
	resize chan shell.Size
	done   chan result
}

type result struct {
	status int
	err    error
}

func openShell(t *testing.T, a *app, req shell.Request, who string) *session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := a.inst.Shell(ctx, req, who)
	if err != nil {
		t.Fatalf("shell: %v", err)
	}
	server, client := net.Pipe()
	go shell.Serve(context.Background(), server, p)
	inR, inW := io.Pipe()
	s := &session{t: t, stdin: inW, out: &testsupport.SyncBuffer{}, errOut: &testsupport.SyncBuffer{}, resize: make(chan shell.Size), done: make(chan result, 1)}
	go func() {
		st, err := shell.Attach(client, inR, s.out, s.errOut, s.resize)
		s.done <- result{st, err}
	}()
	t.Cleanup(func() { inW.Close(); client.Close() })
	return s
}

func (s *session) send(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
		s.t.Fatalf("write %q: %v", line, err)
	}
}

// expect waits until the output holds want.
func (s *session) expect(want string) {
	s.t.Helper()
	testsupport.Eventually(s.t, 30*time.Second, "shell output "+want, func() bool {
		return strings.Contains(s.out.String(), want)
	})
}

func (s *session) wait() result {
	s.t.Helper()
	select {
	case r := <-s.done:
		return r
	case <-time.After(time.Minute):
		s.t.Fatalf("the session did not end; output:\n%s", s.out)
		return result{}
	}
}

// TestShellTTY opens an interactive shell in a real container: it has a
// terminal of the size asked for, follows a resize, runs under the
// container's hardening, keeps its container from being paused, ends
// with the command's exit status, and who opened it and how it ended are
// in the component's logs.
func TestShellTTY(t *testing.T) {
	r := newRuntime(t, Config{})
	a := shellApp(t, r, "shtty")
	s := openShell(t, a, shell.Request{TTY: true, Size: shell.Size{Cols: 80, Rows: 24}, Term: "xterm-256color"}, "alice")
	s.expect("$ ")
	s.send("tty")
	s.expect("tty: yes")
	s.send("size")
	s.expect("size 24 rows 80 cols")
	s.send("env TERM")
	s.expect("TERM=xterm-256color")
	s.send("env PORT") // the container's own environment
	s.expect("PORT=8080")
	s.send("caps")
	s.expect("CapEff: 0000000000000000")
	s.expect("NoNewPrivs: 1")
	s.send("write /velo-shell-test")
	s.expect("read-only file system")

	s.resize <- shell.Size{Cols: 132, Rows: 41}
	testsupport.Eventually(t, 30*time.Second, "the new size inside", func() bool {
		s.send("size")
		return strings.Contains(s.out.String(), "size 41 rows 132 cols")
	})

	// An open shell keeps its container running: a pause for idleness
	// (forced here) leaves it alone.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.inst.Stats(); st.Count(Paused) != 0 || st.Count(Running) != 1 {
		t.Fatalf("with a shell open: %+v", st)
	}
	s.send("echo still here")
	s.expect("still here")

	s.send("exit 3")
	if res := s.wait(); res.err != nil || res.status != 3 {
		t.Fatalf("session ended with %d, %v; want exit status 3", res.status, res.err)
	}
	testsupport.Eventually(t, 30*time.Second, "the shell in the component's logs", func() bool {
		return a.logs.has("velo", "shell opened by alice in container") && a.logs.has("velo", "(TTY 80×24): /bin/sh") &&
			a.logs.has("velo", "shell of alice in container") && a.logs.has("velo", "exit status 3")
	})
	// Closed, the shell no longer holds the container.
	if err := a.inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.inst.Stats(); st.Count(Paused) != 1 {
		t.Fatalf("after the shell: %+v", st)
	}
}

// TestShellCommand runs commands without a TTY: stdout and stderr stay
// apart, stdin ends with EOF, the exit status comes back, a missing
// command says so, and closing the instance cuts an open shell off.
func TestShellCommand(t *testing.T) {
	r := newRuntime(t, Config{})
	a := shellApp(t, r, "shcmd")

	s := openShell(t, a, shell.Request{Cmd: []string{"/bin/sh", "-c", "cat"}}, "bob")
	s.send("hello through stdin")
	s.stdin.Close()
	if res := s.wait(); res.err != nil || res.status != 0 {
		t.Fatalf("cat: %d, %v", res.status, res.err)
	}
	if got := s.out.String(); got != "hello through stdin\n" {
		t.Errorf("cat printed %q", got)
	}

	s = openShell(t, a, shell.Request{Cmd: []string{"/bin/sh", "-c", "echoerr oops"}}, "bob")
	s.stdin.Close()
	if res := s.wait(); res.err != nil || res.status != 0 || s.errOut.String() != "oops\n" || s.out.String() != "" {
		t.Fatalf("echoerr: %d, %v, stdout %q, stderr %q", res.status, res.err, s.out, s.errOut)
	}

	s = openShell(t, a, shell.Request{Cmd: []string{"/bin/sh", "-c", "tty"}}, "bob")
	s.stdin.Close()
	if res := s.wait(); res.status != 1 || !strings.Contains(s.out.String(), "not a tty") {
		t.Fatalf("tty without a TTY: %d, %v, %q", res.status, res.err, s.out)
	}

	s = openShell(t, a, shell.Request{Cmd: []string{"/no/such/command"}}, "bob")
	s.stdin.Close()
	if res := s.wait(); res.err != nil || (res.status != 126 && res.status != 127) {
		t.Fatalf("a missing command: %d, %v; want 126 or 127 (stdout %q, stderr %q)", res.status, res.err, s.out, s.errOut)
	}

	s = openShell(t, a, shell.Request{TTY: true}, "carol")
	s.expect("$ ")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.inst.Close(ctx); err != nil {
		t.Fatal(err)
	}
	res := s.wait()
	var re *shell.RemoteError
	if !errors.As(res.err, &re) || !strings.Contains(re.Message, "is stopping") {
		t.Fatalf("a shell of a closed instance ended with %d, %v; want it cut off", res.status, res.err)
	}
	if !a.logs.has("velo", "shell of carol in container") || !a.logs.has("velo", "cut off") {
		t.Errorf("logs:\n%s", a.logs)
	}
}
