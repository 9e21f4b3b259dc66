package wasm

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// streamSpec is a spec for the streaming test module.
func streamSpec(logs worker.LogSink, timeout time.Duration) worker.Spec {
	return worker.Spec{
		Component: "stream",
		Dir:       "testdata",
		Manifest: manifest.Manifest{
			Name: "stream", Runtime: manifest.WASM, Module: "stream.wasm",
			Timeout: timeout, Memory: 16 << 20,
		},
		Logs: logs,
	}
}

// streamServer serves in over real HTTP; done receives once per finished
// call (also one that was cut off).
func streamServer(t *testing.T, in worker.Instance) (url string, done <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { ch <- struct{}{} }()
		in.Serve(w, r, "/fn/stream")
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/fn/stream", ch
}

// pattern is an endless reader of a repeating byte pattern.
type pattern struct{ n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.n % 251)
		p.n++
	}
	return len(b), nil
}

// checkPattern consumes r and reports how many bytes it held and whether
// they were pattern's.
func checkPattern(r io.Reader) (int64, bool) {
	br := bufio.NewReaderSize(r, 64<<10)
	var n int64
	for {
		c, err := br.ReadByte()
		if err != nil {
			return n, err == io.EOF
		}
		if c != byte(n%251) {
			return n, false
		}
		n++
	}
}

// TestStreamHoldsLittle echoes 30 MiB through a real HTTP server: the call
// must neither buffer the body nor the answer, so the whole process
// allocates far less than the 60 MiB that buffering both would take.
func TestStreamHoldsLittle(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, streamSpec(&sink{}, time.Minute))
	url, _ := streamServer(t, in)
	const size = 30 << 20

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	req, err := http.NewRequest("POST", url+"/echo", io.LimitReader(&pattern{}, size))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, ok := checkPattern(res.Body)
	res.Body.Close()
	runtime.ReadMemStats(&after)
	if res.StatusCode != 200 || n != size || !ok {
		t.Fatalf("status %d, %d bytes back (intact: %v), want 200 and %d", res.StatusCode, n, ok, size)
	}
	if got := res.Header.Get("X-Content-Length"); got != fmt.Sprint(size) {
		t.Errorf("CONTENT_LENGTH %q, want %d", got, size)
	}
	if res.Header.Get("Content-Length") != "" {
		t.Error("a streamed answer has a Content-Length")
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("echoing %d MiB allocated %.1f MiB in the whole process", size>>20, float64(alloc)/(1<<20))
	if alloc > 12<<20 {
		t.Errorf("echoing %d MiB allocated %.1f MiB: the call buffers the body or the answer", size>>20, float64(alloc)/(1<<20))
	}
}

func TestStreamBodyOfUnknownLength(t *testing.T) {
	rt := newRuntime(t, Config{MaxRequest: 1 << 20})
	in := prepare(t, rt, streamSpec(&sink{}, 10*time.Second))
	url, _ := streamServer(t, in)
	for _, size := range []int{10, smallBody, smallBody + 1, 200_000, 1 << 20} {
		// A body the client does not announce the length of goes chunked.
		req, _ := http.NewRequest("POST", url+"/count", io.MultiReader(io.LimitReader(&pattern{}, int64(size))))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if want := fmt.Sprintf("read=%d content_length=%d\n", size, size); res.StatusCode != 200 || string(body) != want {
			t.Errorf("%d bytes chunked: %d %q, want 200 %q", size, res.StatusCode, body, want)
		}
	}
	req, _ := http.NewRequest("POST", url+"/count", io.MultiReader(io.LimitReader(&pattern{}, 1<<20+1)))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Errorf("chunked body over the cap: status %d, want 413", res.StatusCode)
	}
}

// TestStreamCutOff checks that an answer failing after its head went out
// reaches the client incomplete, never as a whole answer.
func TestStreamCutOff(t *testing.T) {
	logs := &sink{}
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, streamSpec(logs, 10*time.Second))
	url, _ := streamServer(t, in)
	res, err := http.Get(url + "/cut")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if res.StatusCode != 200 || err == nil {
		t.Fatalf("status %d, %d bytes, read error %v: want 200 and a body cut off", res.StatusCode, n, err)
	}
	if !logs.has(worker.System, "GET /fn/stream/cut: answer cut off after") || !logs.has(worker.System, "module exited with code 3") {
		t.Errorf("logs lack the cut: %q", logs.all())
	}
	if !logs.has(worker.Stderr, "failing half way") {
		t.Errorf("logs lack the module's stderr: %q", logs.all())
	}
}

func TestStreamBadHeads(t *testing.T) {
	tests := []struct {
		path string
		log  string
	}{
		{"/longhead", "CGI head larger than 64 KiB"},
		{"/headthenfail", "module exited with code 4"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			logs := &sink{}
			rt := newRuntime(t, Config{})
			in := prepare(t, rt, streamSpec(logs, time.Minute))
			res := serve(in, "GET", "/fn/echo"+tt.path, nil)
			if res.StatusCode != 502 {
				t.Errorf("status %d, want 502", res.StatusCode)
			}
			if c := res.Header.Values("Set-Cookie"); len(c) > 0 {
				t.Errorf("the 502 carries the module's Set-Cookie %q", c)
			}
			if !logs.has(worker.System, tt.log) {
				t.Errorf("logs lack %q: %q", tt.log, logs.all())
			}
		})
	}
}

// TestStreamStopsModule checks that a module writing past the response cap
// is stopped at once, not left running until its timeout, and its answer
// cut off.
func TestStreamStopsModule(t *testing.T) {
	logs := &sink{}
	rt := newRuntime(t, Config{MaxResponse: 1 << 20})
	in := prepare(t, rt, streamSpec(logs, 10*time.Minute))
	url, done := streamServer(t, in)
	res, err := http.Get(url + "/spew")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err == nil || n > 1<<20 {
		t.Errorf("%d bytes, read error %v: want at most 1 MiB, cut off", n, err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the module still runs 30s after passing the response cap")
	}
	if !logs.has(worker.System, "response larger than 1048576 bytes") {
		t.Errorf("logs lack the reason: %q", logs.all())
	}
}

// TestStreamSlowClients checks that a client that sends its body slowly,
// or reads the answer slowly, cannot hold a call past the component's
// timeout.
func TestStreamSlowClients(t *testing.T) {
	logs := &sink{}
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, streamSpec(logs, 300*time.Millisecond))
	url, done := streamServer(t, in)
	addr := strings.TrimPrefix(strings.TrimSuffix(url, "/fn/stream"), "http://")

	t.Run("body", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /fn/stream/count HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly a few bytes")
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer while the body stalls: %v", err)
		}
		if res.StatusCode != 504 {
			t.Errorf("status %d, want 504", res.StatusCode)
		}
		<-done
	})
	t.Run("answer", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Ask for an endless answer and never read it.
		fmt.Fprintf(conn, "GET /fn/stream/spew HTTP/1.1\r\nHost: x\r\n\r\n")
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the call still runs 30s after its 300ms timeout, held by a client that does not read")
		}
		if !logs.has(worker.System, "GET /fn/stream/spew: answer cut off after") {
			t.Errorf("logs lack the cut: %q", logs.all())
		}
	})
}

func TestCallMemory(t *testing.T) {
	rt := newRuntime(t, Config{})
	in := prepare(t, rt, streamSpec(&sink{}, time.Second))
	f, ok := in.(worker.Footprint)
	if !ok {
		t.Fatal("a wasm instance does not tell its calls' memory")
	}
	if got, want := f.CallMemory(), int64(16<<20+callOverhead); got != want {
		t.Errorf("CallMemory %d, want %d", got, want)
	}
	_ = context.Background
}

// FuzzCGIWriter feeds a module's output to cgiWriter in arbitrary chunks
// and checks it against parseCGI on the whole output: the same status,
// headers and body, or an error exactly when parseCGI errs or the head
// does not fit in the buffer.
func FuzzCGIWriter(f *testing.F) {
	f.Add([]byte("Content-Type: text/plain\n\nhello"), []byte{3, 7})
	f.Add([]byte("Status: 404 Not Found\r\nX-A: 1\r\n\r\nno"), []byte{1})
	f.Add([]byte("Location: /x\n\n"), []byte{})
	f.Add([]byte("garbage without a head"), []byte{5})
	f.Add([]byte("X: 1\n\n"+strings.Repeat("b", outBuffer+10)), []byte{200, 0, 255})
	f.Add([]byte(strings.Repeat("X-Long: aaaaaaaaaaaaaaaaaaaa\n", 3000)+"\nbody"), []byte{9})
	f.Fuzz(func(t *testing.T, out, cuts []byte) {
		rec := httptest.NewRecorder()
		stopped := false
		var o cgiWriter
		o.start(rec, 1<<30, time.Time{}, func() { stopped = true })
		rest := out
		var werr error
		for i := 0; len(rest) > 0 && werr == nil; i++ {
			n := len(rest)
			if i < len(cuts) {
				n = min(n, int(cuts[i])*37+1)
			}
			var w int
			w, werr = o.Write(rest[:n])
			if werr == nil && w != n {
				t.Fatalf("short write %d of %d without an error", w, n)
			}
			rest = rest[n:]
		}
		inWrite := werr != nil
		if werr == nil {
			werr = o.finish()
		}

		h := http.Header{}
		status, body, err := parseCGI(out, h, nil)
		headEnd := len(out) - len(body)
		switch {
		case err != nil || headEnd > outBuffer:
			if werr == nil {
				t.Fatalf("output %q: cgiWriter accepted what parseCGI refuses (%v) or a head of %d bytes", clip(out), err, headEnd)
			}
			if !o.sent && (len(rec.Header()) > 0 || rec.Body.Len() > 0) {
				t.Fatalf("refused, yet something was sent: %v %q", rec.Header(), rec.Body)
			}
			if inWrite && !stopped {
				t.Fatal("a write refused, yet the module was not stopped")
			}
			return
		case werr != nil:
			t.Fatalf("output %q: cgiWriter refused (%v) what parseCGI accepts", clip(out), werr)
		}
		if rec.Code != status {
			t.Errorf("status %d, parseCGI says %d", rec.Code, status)
		}
		got := rec.Header().Clone()
		got.Del("Content-Length")
		if fmt.Sprint(got) != fmt.Sprint(h) {
			t.Errorf("headers %v, parseCGI says %v", got, h)
		}
		if !bodyAllowed(status) {
			body = nil
		}
		if !bytes.Equal(rec.Body.Bytes(), body) {
			t.Errorf("body of %d bytes, parseCGI says %d", rec.Body.Len(), len(body))
		}
		if cl := rec.Header().Get("Content-Length"); len(out) <= outBuffer && bodyAllowed(status) && cl != fmt.Sprint(len(body)) {
			t.Errorf("Content-Length %q for a whole answer of %d bytes", cl, len(body))
		}
	})
}
