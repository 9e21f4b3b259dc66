package router

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/testsupport"
)

const testHSTS = "max-age=63072000"

// testCert is a self-signed certificate for velo.test and the pool that
// trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "velo.test"},
		DNSNames: []string{"velo.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// tlsSetup is a FastServer terminating TLS, as the router role runs it.
type tlsSetup struct {
	addr     string
	client   *tls.Config // trusts the server; offers http/1.1 only
	fallback atomic.Int64
	sawTLS   atomic.Int64 // fallback requests that had r.TLS
}

// serveFastTLS serves r over TLS: fast path first, the fallback (counted,
// with HSTS as certs.HTTPSHandler sets it) for the rest and for h2.
func serveFastTLS(t *testing.T, r *Router, opts ...func(*FastServer)) *tlsSetup {
	t.Helper()
	cert, pool := testCert(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}
	ts := &tlsSetup{client: &tls.Config{RootCAs: pool, ServerName: "velo.test", NextProtos: []string{"http/1.1"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle(Prefix, r)
	fs := &FastServer{Router: r, TLS: cfg, HSTS: testHSTS}
	for _, o := range opts {
		o(fs)
	}
	fs.Fallback = &http.Server{TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ts.fallback.Add(1)
		if req.TLS != nil {
			ts.sawTLS.Add(1)
		}
		w.Header().Set("Strict-Transport-Security", testHSTS)
		mux.ServeHTTP(w, req)
	})}
	ts.addr = listenFast(t, fs)
	return ts
}

func (ts *tlsSetup) dial(t *testing.T) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", ts.addr, ts.client)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// readAnswers reads n answers from br, bodies read whole.
func readAnswers(t *testing.T, br *bufio.Reader, n int) []*http.Response {
	t.Helper()
	var out []*http.Response
	for range n {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d: %v", len(out)+1, err)
		}
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatalf("answer %d body: %v", len(out)+1, err)
		}
		res.Body = io.NopCloser(bytes.NewReader(b))
		out = append(out, res)
	}
	return out
}

// TestTLSFastPath: keep-alive HTTPS calls — many on one connection,
// pipelined, with bodies up to the fast path's limit — are served by the
// fast path (net/http's server sees none), with HSTS and the forwarding
// headers of HTTPS.
func TestTLSFastPath(t *testing.T) {
	a := viewWorker(t)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	ts := serveFastTLS(t, r)
	c := ts.dial(t)
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "http/1.1" {
		t.Fatalf("ALPN: %q, want http/1.1", p)
	}
	br := bufio.NewReader(c)
	// One at a time, on one connection.
	for i := range 50 {
		fmt.Fprintf(c, "GET /fn/hello/%d HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http\r\n\r\n", i)
		res := readAnswers(t, br, 1)[0]
		body := readBody(res)
		if res.StatusCode != 200 || body != `xff=127.0.0.1 xfp=https remote=127.0.0.1 velo=[] cookie=[]` {
			t.Fatalf("call %d: %d %q", i, res.StatusCode, body)
		}
		if res.Header.Get("Strict-Transport-Security") != testHSTS || res.Header.Get("X-Velo-Worker") != "a" {
			t.Fatalf("call %d headers: %v", i, res.Header)
		}
	}
	// Pipelined, with a body as large as the fast path takes.
	big := bigBody(maxFastBody - 100)
	var raw bytes.Buffer
	for i := range 5 {
		fmt.Fprintf(&raw, "POST /fn/hello/p%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", i, len(big), big)
	}
	if _, err := c.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	for i, res := range readAnswers(t, br, 5) {
		if res.StatusCode != 200 || res.Header.Get("Strict-Transport-Security") != testHSTS {
			t.Errorf("pipelined %d: %d %v", i, res.StatusCode, res.Header)
		}
	}
	if a.lastBody.Load() != string(big) {
		t.Errorf("the worker got a body of %d bytes, want %d", len(a.lastBody.Load().(string)), len(big))
	}
	if n := ts.fallback.Load(); n != 0 {
		t.Errorf("net/http served %d of the calls, want 0 (all on the fast path)", n)
	}
	if a.calls.Load() != 55 {
		t.Errorf("the worker had %d calls, want 55", a.calls.Load())
	}
}

// TestTLSFastPathAnswers: answers of every framing — large, chunked, up
// to the close — go back whole over TLS, and the connection goes on.
func TestTLSFastPathAnswers(t *testing.T) {
	big := bigBody(1 << 20)
	a := newFakeWorker(t, "a", "tok", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fn/hello/big":
			w.Header().Set("Content-Length", fmt.Sprint(len(big)))
			w.Write(big)
		case "/fn/hello/chunked":
			for i := range 3 {
				fmt.Fprintf(w, "part%d;", i)
				w.(http.Flusher).Flush()
			}
		default:
			io.WriteString(w, "small")
		}
	})
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	ts := serveFastTLS(t, r)
	c := ts.dial(t)
	defer c.Close()
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /fn/hello/big HTTP/1.1\r\nHost: h\r\n\r\nGET /fn/hello/chunked HTTP/1.1\r\nHost: h\r\n\r\n"+
		"HEAD /fn/hello/big HTTP/1.1\r\nHost: h\r\n\r\nGET /fn/hello/s HTTP/1.1\r\nHost: h\r\n\r\n")
	res := readAnswers(t, br, 2)
	if got := readBody(res[0]); res[0].StatusCode != 200 || got != string(big) {
		t.Errorf("big: %d, %d bytes", res[0].StatusCode, len(got))
	}
	if got := readBody(res[1]); res[1].StatusCode != 200 || got != "part0;part1;part2;" || res[1].TransferEncoding == nil {
		t.Errorf("chunked: %d %q %v", res[1].StatusCode, got, res[1].TransferEncoding)
	}
	head, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil || head.StatusCode != 200 || head.ContentLength != int64(len(big)) {
		t.Fatalf("HEAD: %v %v", head, err)
	}
	last := readAnswers(t, br, 1)[0]
	if got := readBody(last); last.StatusCode != 200 || got != "small" || last.Header.Get("Strict-Transport-Security") != testHSTS {
		t.Errorf("after them: %d %q %v", last.StatusCode, got, last.Header)
	}
	if n := ts.fallback.Load(); n != 0 {
		t.Errorf("net/http served %d of the calls, want 0", n)
	}
}

// TestTLSHandOffAndRefusals: what the fast path leaves to net/http over
// TLS (a chunked request body, the router's own paths) is served there
// with the TLS state (X-Forwarded-Proto https); a malformed head is
// answered 400 and the connection closed.
func TestTLSHandOffAndRefusals(t *testing.T) {
	a := viewWorker(t)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	ts := serveFastTLS(t, r)

	c := ts.dial(t)
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /fn/hello/x HTTP/1.1\r\nHost: h\r\n\r\n"+
		"POST /fn/hello/c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	res := readAnswers(t, br, 2)
	for i, res := range res {
		if got := readBody(res); res.StatusCode != 200 || !strings.HasPrefix(got, "xff=127.0.0.1 xfp=https ") ||
			res.Header.Get("Strict-Transport-Security") != testHSTS {
			t.Errorf("answer %d: %d %q %v", i, res.StatusCode, got, res.Header)
		}
	}
	if ts.fallback.Load() != 1 || ts.sawTLS.Load() != 1 {
		t.Errorf("net/http served %d (%d with TLS state), want the chunked one, with it", ts.fallback.Load(), ts.sawTLS.Load())
	}
	c.Close()

	c = ts.dial(t)
	defer c.Close()
	io.WriteString(c, "GET /fn/hello/x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	br = bufio.NewReader(c)
	bad := readAnswers(t, br, 1)[0]
	if bad.StatusCode != 400 || !bad.Close || bad.Header.Get("Strict-Transport-Security") != testHSTS {
		t.Errorf("smuggling head: %d close=%v %v", bad.StatusCode, bad.Close, bad.Header)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("after the 400 the connection reads %v, want EOF", err)
	}
}

// TestTLSHTTP2AndResumption: a client offering h2 gets it (net/http's
// server), and a second connection resumes the first's session.
func TestTLSHTTP2AndResumption(t *testing.T) {
	a := newFakeWorker(t, "a", "tok", nil)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	ts := serveFastTLS(t, r)
	cc := ts.client.Clone()
	cc.NextProtos = nil
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cc, ForceAttemptHTTP2: true}}
	defer hc.CloseIdleConnections()
	res, err := hc.Get("https://" + ts.addr + "/fn/hello/x")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(res)
	res.Body.Close()
	if res.ProtoMajor != 2 || res.StatusCode != 200 || !strings.HasPrefix(body, "a GET /fn/hello/x ") ||
		res.Header.Get("Strict-Transport-Security") != testHSTS {
		t.Errorf("h2: %s %d %q %v", res.Proto, res.StatusCode, body, res.Header)
	}
	if ts.fallback.Load() != 1 {
		t.Errorf("net/http served %d calls, want the h2 one", ts.fallback.Load())
	}

	rc := ts.client.Clone()
	rc.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i, want := range []bool{false, true} {
		c, err := tls.Dial("tcp", ts.addr, rc)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		// TLS 1.3 sends the ticket after the handshake: a call reads it.
		io.WriteString(c, "GET /fn/hello/x HTTP/1.1\r\nHost: h\r\n\r\n")
		if res := readAnswers(t, bufio.NewReader(c), 1)[0]; res.StatusCode != 200 {
			t.Errorf("connection %d: %d", i, res.StatusCode)
		}
		if got := c.ConnectionState().DidResume; got != want {
			t.Errorf("connection %d resumed: %v, want %v", i, got, want)
		}
		c.Close()
	}
}

// TestTLSOnEventLoops: kept-alive HTTPS connections are served by the
// event loops, as plain ones are — no goroutine stays with a connection
// after its handshake — and calls go on right, also when their TLS
// records reach the router in pieces.
func TestTLSOnEventLoops(t *testing.T) {
	a := viewWorker(t)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	ts := serveFastTLS(t, r)
	call := func(c *tls.Conn, br *bufio.Reader, path string) {
		t.Helper()
		fmt.Fprintf(c, "GET /fn/hello/%s HTTP/1.1\r\nHost: h\r\n\r\n", path)
		res := readAnswers(t, br, 1)[0]
		if body := readBody(res); res.StatusCode != 200 || !strings.HasPrefix(body, "xff=127.0.0.1 xfp=https ") ||
			res.Header.Get("Strict-Transport-Security") != testHSTS {
			t.Fatalf("%s: %d %q %v", path, res.StatusCode, body, res.Header)
		}
	}
	const n = 32
	conns := make([]*tls.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		conns[i] = ts.dial(t)
		defer conns[i].Close()
		readers[i] = bufio.NewReader(conns[i])
		call(conns[i], readers[i], fmt.Sprint(i))
	}
	testsupport.EventuallyShow(t, 30*time.Second, "no goroutine per kept-alive TLS connection", func() bool { return perConn() == 0 },
		func() string { return fmt.Sprintf("%d goroutines in serveTLS for %d open connections", perConn(), n) })
	for i, c := range conns {
		call(c, readers[i], fmt.Sprintf("again%d", i))
	}

	// Each record the client writes reaches the router in two pieces, a
	// moment apart: the loop waits for the rest of a record.
	raw, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(&splitConn{Conn: raw}, ts.client)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for i := range 3 {
		call(c, br, fmt.Sprintf("split%d", i))
	}
	if n := ts.fallback.Load(); n != 0 {
		t.Errorf("net/http served %d of the calls, want 0", n)
	}
}

// perConn counts the goroutines serving a TLS connection each.
func perConn() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "router.(*FastServer).serveTLS(")
}

// TestTLSWithoutLoops: without event loops (other platforms, Loops < 0)
// a goroutine per TLS connection serves its calls, with the same answers.
func TestTLSWithoutLoops(t *testing.T) {
	a := viewWorker(t)
	r := remoteRouter(t, NewRemote(RemoteConfig{Logger: discardLogger(), Token: "tok"}), a)
	ts := serveFastTLS(t, r, func(fs *FastServer) { fs.Loops = -1 })
	c := ts.dial(t)
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 20 {
		fmt.Fprintf(c, "GET /fn/hello/%d HTTP/1.1\r\nHost: h\r\n\r\n", i)
		res := readAnswers(t, br, 1)[0]
		if body := readBody(res); res.StatusCode != 200 || !strings.HasPrefix(body, "xff=127.0.0.1 xfp=https ") ||
			res.Header.Get("Strict-Transport-Security") != testHSTS {
			t.Fatalf("call %d: %d %q %v", i, res.StatusCode, body, res.Header)
		}
	}
	if n := perConn(); n != 1 {
		t.Errorf("%d goroutines in serveTLS for one open connection, want 1 (no loops)", n)
	}
	if n := ts.fallback.Load(); n != 0 {
		t.Errorf("net/http served %d of the calls, want 0", n)
	}
}

// splitConn writes each write in two halves, 20 ms apart.
type splitConn struct{ net.Conn }

func (s *splitConn) Write(p []byte) (int, error) {
	if len(p) < 2 {
		return s.Conn.Write(p)
	}
	n, err := s.Conn.Write(p[:len(p)/2])
	if err != nil {
		return n, err
	}
	time.Sleep(20 * time.Millisecond)
	m, err := s.Conn.Write(p[len(p)/2:])
	return n + m, err
}
