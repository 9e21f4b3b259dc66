package main

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/testsupport"
)

// TestSocketActivation runs a router on a listening socket it inherits as
// systemd passes one (LISTEN_PID, LISTEN_FDS, descriptor 3), stops it, makes
// a request while no router runs (the socket queues it), and starts a new
// router on the same socket: the queued request is answered. This is what
// keeps a router's clients from being refused while velo install restarts
// it.
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := func() (*exec.Cmd, *testsupport.SyncBuffer) {
		// The shell's pid is the router's once it execs: LISTEN_PID
		// names it, as systemd does.
		cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" router --addr 127.0.0.1:1`, veloBinary(t))
		cmd.Env = append(os.Environ(), c.Env()...)
		cmd.ExtraFiles = []*os.File{f}
		out := new(testsupport.SyncBuffer)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, out
	}
	url := "http://" + ln.Addr().String() + "/healthz"
	r1, out1 := start()
	testsupport.EventuallyShow(t, 30*time.Second, "the router answering on the inherited socket", func() bool {
		res, err := http.Get(url)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	}, out1.String)
	r1.Process.Signal(os.Interrupt)
	r1.Wait()

	// No router runs: the connection is queued by the socket, not refused.
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("connect while no router runs: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	r2, out2 := start()
	defer func() { r2.Process.Signal(os.Interrupt); r2.Wait() }()
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the request queued while no router ran: %v\n%s", err, out2.String())
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("the request queued while no router ran: %s", res.Status)
	}
}
