package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bigBody is n deterministic bytes.
func bigBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%23)
	}
	return b
}

// TestFastLargeAnswers: answers far larger than any buffer reach a client
// that reads them slowly, whole and in order, pipelined with small ones,
// on the same connection; a client that leaves mid-answer costs nobody
// else anything.
func TestFastLargeAnswers(t *testing.T) { bothPaths(t, testFastLargeAnswers) }

func testFastLargeAnswers(t *testing.T, loops int) {
	big := bigBody(4 << 20)
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/big") {
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			w.Write(big)
			return
		}
		io.WriteString(w, "small "+r.URL.Path)
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	addr := fastServer(t, r, loops)

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET /fn/hello/big HTTP/1.1\r\nHost: h\r\n\r\nGET /fn/hello/after HTTP/1.1\r\nHost: h\r\n\r\n")
	// Slowly at first, so that the router has to wait for the client.
	time.Sleep(300 * time.Millisecond)
	br := bufio.NewReaderSize(c, 4<<10)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 || !bytes.Equal(got, big) {
		t.Fatalf("big answer: %d, %d bytes (want %d), equal %v, err %v", res.StatusCode, len(got), len(big), bytes.Equal(got, big), err)
	}
	res, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(res); got != "small /fn/hello/after" {
		t.Fatalf("answer after the big one: %q", got)
	}

	// A client that goes away after a few bytes of a big answer.
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /fn/hello/big HTTP/1.1\r\nHost: h\r\n\r\n")
		buf := make([]byte, 1000)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	res = rawExchange(t, addr, "GET /fn/hello/x HTTP/1.1\r\nHost: h\r\n\r\nGET /fn/hello/y HTTP/1.1\r\nHost: h\r\n\r\n", 2)[1]
	if got := readBody(res); got != "small /fn/hello/y" {
		t.Fatalf("after clients left mid-answer: %q", got)
	}
}

// TestFastStreamedThenPipelined: an answer without a length (streamed,
// chunked to the client) followed on the same connection by requests
// that were already sent.
func TestFastStreamedThenPipelined(t *testing.T) { bothPaths(t, testFastStreamedThenPipelined) }

func testFastStreamedThenPipelined(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/stream") {
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
				time.Sleep(20 * time.Millisecond)
			}
			return
		}
		io.WriteString(w, "plain "+r.URL.Path)
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	addr := fastServer(t, r, loops)
	res := rawExchange(t, addr, "GET /fn/hello/stream HTTP/1.1\r\nHost: h\r\n\r\n"+
		"GET /fn/hello/one HTTP/1.1\r\nHost: h\r\n\r\nGET /fn/hello/stream HTTP/1.1\r\nHost: h\r\n\r\nGET /fn/hello/two HTTP/1.1\r\nHost: h\r\n\r\n", 4)
	want := []string{"part0;part1;part2;", "plain /fn/hello/one", "part0;part1;part2;", "plain /fn/hello/two"}
	for i, res := range res {
		if got := readBody(res); got != want[i] || res.StatusCode != 200 || res.Header.Get("X-Velo-Worker") != "a" {
			t.Errorf("answer %d: %d %q, want %q", i, res.StatusCode, got, want[i])
		}
	}
	if got := r.Totals()["hello"][0]; got != 4 {
		t.Errorf("hits counted: %d, want 4", got)
	}
}

// TestFastTimeouts: a connection idle for IdleTimeout is closed, and so is
// one that starts a request head and does not finish it in HeadTimeout.
func TestFastTimeouts(t *testing.T) { bothPaths(t, testFastTimeouts) }

func testFastTimeouts(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	addr := serveFast(t, &FastServer{Router: r, Loops: loops, IdleTimeout: 300 * time.Millisecond, HeadTimeout: 300 * time.Millisecond})
	for _, start := range []string{"", "GET /fn/hello/ HTTP/1.1\r\nHost:"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Served once, so that the connection is on the fast path.
		io.WriteString(c, "GET /fn/hello/ HTTP/1.1\r\nHost: h\r\n\r\n"+start)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		readBody(res)
		began := time.Now()
		if _, err := br.ReadByte(); err != io.EOF {
			t.Errorf("start %q: read %v, want the router to close (EOF)", start, err)
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("start %q: closed after %v, want about 300ms", start, took)
		}
	}
}

// TestFastShutdownFinishesCalls: Shutdown lets a call under way finish,
// then closes its connection, and closes idle ones at once.
func TestFastShutdownFinishesCalls(t *testing.T) { bothPaths(t, testFastShutdownFinishesCalls) }

func testFastShutdownFinishesCalls(t *testing.T, loops int) {
	arrived := make(chan struct{}, 1)
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "finished")
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	mux := http.NewServeMux()
	mux.Handle(Prefix, r)
	fs := &FastServer{Router: r, Loops: loops, Fallback: &http.Server{Handler: mux}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- fs.Serve(ln) }()

	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if loops < 0 {
		// net/http leaves a connection that never sent a request for
		// 5s at Shutdown (its StateNew rule): this one sent one.
		io.WriteString(idle, "GET /fn/hello/ HTTP/1.1\r\nHost: h\r\n\r\n")
		<-arrived
		res, err := http.ReadResponse(bufio.NewReader(idle), nil)
		if err != nil {
			t.Fatal(err)
		}
		readBody(res)
	}
	busy, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(busy, "GET /fn/hello/ HTTP/1.1\r\nHost: h\r\n\r\n")
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	began := time.Now()
	if err := fs.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Shutdown took %v: it waited for a connection done with its call", took)
	}
	if err := <-served; err != http.ErrServerClosed {
		t.Fatalf("Serve: %v", err)
	}
	_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(busy)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the call under way: %v", err)
	}
	if got := readBody(res); got != "finished" {
		t.Fatalf("the call under way: %q", got)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("busy connection after its answer: %v, want EOF", err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: %v, want EOF", err)
	}
}

// TestFastWorkerCutsAnswer: a worker that dies after part of an answer
// with a length cuts the client's copy too (the client sees the
// connection end, not a short answer taken for whole); the router goes on.
func TestFastWorkerCutsAnswer(t *testing.T) { bothPaths(t, testFastWorkerCutsAnswer) }

func testFastWorkerCutsAnswer(t *testing.T, loops int) {
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/cut") {
			io.WriteString(w, "whole")
			return
		}
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
		bw.Flush()
		conn.Close()
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	addr := fastServer(t, r, loops)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /fn/hello/cut HTTP/1.1\r\nHost: h\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res.Body)
	if err != io.ErrUnexpectedEOF || string(got) != "only ten b" {
		t.Fatalf("cut answer: %q, %v; want the 10 bytes then io.ErrUnexpectedEOF", got, err)
	}
	if got := readBody(rawExchange(t, addr, "GET /fn/hello/x HTTP/1.1\r\nHost: h\r\n\r\n", 1)[0]); got != "whole" {
		t.Fatalf("after a cut answer: %q", got)
	}
}
