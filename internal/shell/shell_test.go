package shell

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	big := bytes.Repeat([]byte("x"), MaxPayload)
	for _, f := range []struct {
		kind byte
		p    []byte
	}{{KindStdin, []byte("ls\n")}, {KindEOF, nil}, {KindResize, Size{Cols: 80, Rows: 24}.payload()}, {KindStdout, big}, {KindExit, []byte{0, 0, 0, 3}}} {
		if err := WriteFrame(&b, f.kind, f.p); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteFrame(&b, KindStdout, append(big, 'y')); !errors.Is(err, ErrFrame) {
		t.Errorf("a payload over MaxPayload: %v", err)
	}
	fr := NewReader(&b)
	for _, want := range []byte{KindStdin, KindEOF, KindResize, KindStdout, KindExit} {
		kind, p, err := fr.Next()
		if err != nil || kind != want {
			t.Fatalf("got %q %v, want %q", kind, err, want)
		}
		if kind == KindResize && sizeOf(p) != (Size{Cols: 80, Rows: 24}) {
			t.Errorf("size %v", sizeOf(p))
		}
		if kind == KindStdout && len(p) != MaxPayload {
			t.Errorf("payload of %d bytes", len(p))
		}
	}
	if _, _, err := fr.Next(); err != io.EOF {
		t.Errorf("at the end: %v, want io.EOF", err)
	}
	for name, raw := range map[string][]byte{
		"unknown kind":  {'z', 0, 0, 0, 0},
		"too long":      {KindStdin, 0, 1, 0, 1},
		"short resize":  {KindResize, 0, 0, 0, 3, 1, 2, 3},
		"eof with data": {KindEOF, 0, 0, 0, 1, 'x'},
	} {
		if _, _, err := NewReader(bytes.NewReader(raw)).Next(); !errors.Is(err, ErrFrame) {
			t.Errorf("%s: %v, want ErrFrame", name, err)
		}
	}
	if _, _, err := NewReader(bytes.NewReader([]byte{KindStdin, 0, 0, 0, 5, 'a'})).Next(); err != io.ErrUnexpectedEOF {
		t.Errorf("cut inside a frame: %v", err)
	}
}

func FuzzReader(f *testing.F) {
	var b bytes.Buffer
	WriteFrame(&b, KindStdin, []byte("echo hi\n"))
	WriteFrame(&b, KindResize, Size{Cols: 1, Rows: 2}.payload())
	WriteFrame(&b, KindEOF, nil)
	f.Add(b.Bytes())
	f.Add([]byte{KindExit, 0, 0, 0, 4, 0, 0, 0, 1})
	f.Add([]byte{KindStdout, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewReader(bytes.NewReader(data))
		var out bytes.Buffer
		for {
			kind, p, err := fr.Next()
			if err != nil {
				break
			}
			if len(p) > MaxPayload || ((kind == KindResize || kind == KindExit) && len(p) != 4) {
				t.Fatalf("%q frame of %d bytes accepted", kind, len(p))
			}
			// What was read writes back to the same bytes.
			if err := WriteFrame(&out, kind, p); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.HasPrefix(data, out.Bytes()) {
			t.Fatalf("frames read do not write back as they came")
		}
	})
}

func TestParseRequest(t *testing.T) {
	r := Request{Cmd: []string{"/bin/sh", "-c", "echo 'a b'"}, TTY: true, Size: Size{Cols: 120, Rows: 40}, Term: "xterm-256color"}
	got, err := ParseRequest(r.Query())
	if err != nil || strings.Join(got.Cmd, "|") != strings.Join(r.Cmd, "|") || !got.TTY || got.Size != r.Size || got.Term != r.Term {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if got.String() != `/bin/sh -c "echo 'a b'"` {
		t.Errorf("String: %s", got)
	}
	if got, _ := ParseRequest(url.Values{}); strings.Join(got.Command(), " ") != "/bin/sh" || got.TTY || got.Env() != nil {
		t.Errorf("defaults: %+v", got)
	}
	for name, q := range map[string]string{
		"unknown":         "cmd=ls&user=root",
		"empty command":   "cmd=",
		"nul":             "cmd=ls&cmd=a%00b",
		"not utf-8":       "cmd=%ff",
		"tty twice":       "tty=1&tty=0",
		"bad tty":         "tty=yes",
		"cols alone":      "tty=1&cols=80",
		"size without tt": "cols=80&rows=24",
		"zero size":       "tty=1&cols=0&rows=24",
		"huge size":       "tty=1&cols=80&rows=100000",
		"bad term":        "tty=1&term=xterm%3Brm",
		"term without tt": "term=xterm",
		"long argument":   "cmd=" + strings.Repeat("a", MaxArgLen+1),
		"many arguments":  strings.Repeat("cmd=a&", MaxArgs+1),
	} {
		v, err := url.ParseQuery(q)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseRequest(v); err == nil {
			t.Errorf("%s: %q accepted", name, q)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	f.Add("cmd=/bin/sh&tty=1&cols=80&rows=24&term=xterm")
	f.Add("cmd=ls&cmd=-la")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		r, err := ParseRequest(q)
		if err != nil {
			return
		}
		again, err := ParseRequest(r.Query())
		if err != nil {
			t.Fatalf("%q: accepted, but its own query is refused: %v", raw, err)
		}
		if strings.Join(again.Cmd, "\x00") != strings.Join(r.Cmd, "\x00") || again.TTY != r.TTY || again.Size != r.Size || again.Term != r.Term {
			t.Fatalf("%q: %+v, then %+v", raw, r, again)
		}
		_ = r.String()
	})
}

// hostProcess runs a command on this machine with pipes: a Process as a
// runtime gives Serve, without a container.
type hostProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout io.Reader
	stderr io.Reader
	sizes  chan Size
	once   sync.Once
}

func startHost(t *testing.T, name string, args ...string) *hostProcess {
	t.Helper()
	cmd := exec.Command(name, args...)
	p := &hostProcess{cmd: cmd, sizes: make(chan Size, 10)}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if p.stdout, err = cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if p.stderr, err = cmd.StderrPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(); cmd.Wait() })
	return p
}

func (p *hostProcess) Write(b []byte) (int, error)            { return p.stdin.Write(b) }
func (p *hostProcess) CloseStdin() error                      { return p.stdin.Close() }
func (p *hostProcess) Resize(_ context.Context, s Size) error { p.sizes <- s; return nil }
func (p *hostProcess) Wait(context.Context) (int, error) {
	p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode(), nil
}
func (p *hostProcess) Close() error {
	p.once.Do(func() { p.stdin.Close(); p.cmd.Process.Kill() })
	return nil
}
func (p *hostProcess) Output(stdout, stderr io.Writer) error {
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(stderr, p.stderr) })
	io.Copy(stdout, p.stdout)
	wg.Wait()
	return nil
}

// TestSession runs a real command through both ends of a session over an
// HTTP upgrade: stdin with its EOF, stdout and stderr apart, a resize and
// the exit status.
func TestSession(t *testing.T) {
	procs := make(chan *hostProcess, 1)
	served := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := ParseRequest(r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p := startHost(t, req.Cmd[0], req.Cmd[1:]...)
		procs <- p
		conn, err := Upgrade(w, r)
		if err != nil {
			t.Error(err)
			return
		}
		_, err = Serve(context.Background(), conn, p)
		served <- err
	}))
	defer srv.Close()

	req := Request{Cmd: []string{"sh", "-c", "cat; echo done >&2; exit 7"}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, _, err := Dial(ctx, srv.Client(), srv.URL+"/?"+req.Query().Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	resize := make(chan Size, 1)
	resize <- Size{Cols: 100, Rows: 30}
	status, err := Attach(conn, strings.NewReader("through stdin\n"), &stdout, &stderr, resize)
	if err != nil || status != 7 {
		t.Fatalf("status %d, %v; want 7", status, err)
	}
	if stdout.String() != "through stdin\n" || stderr.String() != "done\n" {
		t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	select {
	case s := <-(<-procs).sizes:
		if s != (Size{Cols: 100, Rows: 30}) {
			t.Errorf("resized to %v", s)
		}
	default:
		t.Error("the resize did not reach the process")
	}

	// A refusal before the upgrade is an ordinary answer.
	_, resp, err := Dial(ctx, srv.Client(), srv.URL+"/?tty=maybe", nil)
	if !errors.Is(err, ErrNotUpgraded) || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("refusal: %v", err)
	}
	resp.Body.Close()
}

// TestClientGone: a client that goes away mid-session ends it, and the
// command with it.
func TestClientGone(t *testing.T) {
	p := startHost(t, "sleep", "600")
	server, client := net.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := Serve(context.Background(), server, p)
		done <- err
	}()
	client.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClientGone) {
			t.Errorf("Serve: %v, want ErrClientGone", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Serve did not end when its client went away")
	}

	// A context that ends cuts the session off, telling the client why.
	p = startHost(t, "sleep", "600")
	server, client = net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	go Serve(ctx, server, p)
	res := make(chan error, 1)
	go func() {
		_, err := Attach(client, nil, io.Discard, io.Discard, nil)
		res <- err
	}()
	cancel()
	var re *RemoteError
	if err := <-res; !errors.As(err, &re) || !strings.Contains(re.Message, "session ended") {
		t.Errorf("Attach: %v, want the server's reason", err)
	}
}
