package router

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestRawIOReadWrite(t *testing.T) {
	c, s := tcpPair(t)
	rio := newRawIO(c)
	if rio.rc == nil {
		t.Fatal("a TCP connection offers a RawConn")
	}
	if n, err := rio.Write([]byte("ping")); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	buf := make([]byte, 16)
	if n, err := io.ReadFull(s, buf[:4]); n != 4 || err != nil || string(buf[:4]) != "ping" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond) // the read has to wait
		s.Write([]byte("pong"))
	}()
	if n, err := rio.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}

	// A read deadline gives a timeout error, as net.Conn's would.
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	_, err := rio.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})

	// The peer closing reads as EOF.
	s.Close()
	if n, err := rio.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want EOF", n, err)
	}
	// Writing to a closed connection fails with an error naming it.
	c.Close()
	if _, err := rio.Write([]byte("x")); err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed connection: %v", err)
	}
}

// TestRawIOArmedWrite: an armed write returns once the answer is there
// to read, and the answer is read whole afterwards, however fast it came.
func TestRawIOArmedWrite(t *testing.T) {
	c, s := tcpPair(t)
	rio := newRawIO(c)
	// The peer answers every request at once: the answer can arrive
	// before the writer has even started to wait.
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := s.Read(buf)
			if err != nil {
				return
			}
			if _, err := s.Write(bytes.ToUpper(buf[:n])); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64)
	for i := range 2000 {
		// A lost wakeup would wait until this deadline.
		deadline := time.Now().Add(10 * time.Second)
		c.SetReadDeadline(deadline)
		rio.arm()
		if n, err := rio.Write([]byte("hello")); n != 5 || err != nil {
			t.Fatalf("round %d: Write = %d, %v", i, n, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("round %d: the armed write missed the answer and waited for the deadline", i)
		}
		if n, err := io.ReadFull(rio, buf[:5]); err != nil || string(buf[:n]) != "HELLO" {
			t.Fatalf("round %d: answer %q, %v", i, buf[:n], err)
		}
	}

	// An armed write with nothing coming back returns at the read
	// deadline, having written everything.
	slow, peer := tcpPair(t)
	rio = newRawIO(slow)
	slow.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	rio.arm()
	if n, err := rio.Write([]byte("quiet")); n != 5 || err != nil {
		t.Fatalf("armed Write without an answer = %d, %v", n, err)
	}
	if n, err := io.ReadFull(peer, buf[:5]); err != nil || string(buf[:n]) != "quiet" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
	// With the deadline already past, the write still happens.
	rio.arm()
	if n, err := rio.Write([]byte("late")); n != 4 || err != nil {
		t.Fatalf("armed Write past the deadline = %d, %v", n, err)
	}
	if n, err := io.ReadFull(peer, buf[:4]); err != nil || string(buf[:n]) != "late" {
		t.Fatalf("peer read %q, %v", buf[:n], err)
	}
}

// TestRawIOLargeWrites: writes larger than the socket buffers arrive
// whole, armed or not; a plain one while a read waits at the same time.
func TestRawIOLargeWrites(t *testing.T) {
	c, s := tcpPair(t)
	rio := newRawIO(c)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	peer := make(chan error, 1)
	go func() {
		for _, reply := range []string{"mid", "end"} {
			got := make([]byte, len(data))
			if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, data) {
				peer <- fmt.Errorf("peer read %v, equal %v", err, bytes.Equal(got, data))
				return
			}
			s.Write([]byte(reply))
		}
		peer <- nil
	}()
	readDone := make(chan string, 1)
	go func() {
		buf := make([]byte, 3)
		_, err := io.ReadFull(rio, buf) // while the write below runs
		readDone <- fmt.Sprint(string(buf), err)
	}()
	if n, err := rio.Write(data); n != len(data) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := <-readDone; got != "mid<nil>" {
		t.Fatalf("concurrent read: %s", got)
	}
	// Armed (with no read under way, as the router uses it).
	rio.arm()
	if n, err := rio.Write(data); n != len(data) || err != nil {
		t.Fatalf("armed Write = %d, %v", n, err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(rio, buf); err != nil || string(buf) != "end" {
		t.Fatalf("answer %q, %v", buf, err)
	}
	if err := <-peer; err != nil {
		t.Fatal(err)
	}
}
