package node

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/acmetest"
	"github.com/velo-run/velo/internal/certs"
	"github.com/velo-run/velo/internal/testsupport"
)

// certEvents counts certmagic's events, by name and subject.
type certEvents struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *certEvents) record(event string, data map[string]any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[event+" "+fmt.Sprint(data["identifier"])]++
	e.n[event]++
}

func (e *certEvents) count(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[key]
}

func (e *certEvents) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprint(e.n)
}

// tarGz packs files (name → content) as a component archive.
func tarGz(t *testing.T, files map[string][]byte) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, b := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// httpsClient talks TLS to addr whatever the URL's host, trusting roots
// and checking the certificate against the URL's host.
func httpsClient(addr string, roots *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// handshake connects to addr with SNI host and returns the leaf
// certificate, verified against roots.
func handshake(addr, host string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 60 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: host, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// TestHTTPSACME runs velo up with --https against Pebble, which validates
// its challenges on velo's own loopback ports: certificates for the
// dashboard host, NAME.<domain> and a custom domain are obtained on first
// use and renewed before they expire; a host Velo does not serve gets
// none; plain HTTP redirects except the ACME challenge path; a domain
// another component holds is refused at deploy.
func TestHTTPSACME(t *testing.T) {
	httpPort, httpsPort := acmetest.FreePort(t), acmetest.FreePort(t)
	ca := acmetest.Start(t, acmetest.Options{HTTPPort: httpPort, TLSPort: httpsPort, Validity: 45 * time.Second})
	var ev certEvents
	const domain = "apps.velo.test"
	n, err := Start(context.Background(), Config{
		Addr:    fmt.Sprintf("127.0.0.1:%d", httpPort),
		DataDir: t.TempDir(),
		Domain:  domain,
		TLS: TLS{
			HTTPS: HTTPSACME, Addr: fmt.Sprintf("127.0.0.1:%d", httpsPort),
			CA: ca.Directory, CARoots: ca.Roots, Email: "ops@velo.test",
			RenewCheck: time.Second, OnEvent: ev.record,
		},
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if n.HTTPSAddr == "" {
		t.Fatal("no HTTPS address")
	}
	wasm, err := os.ReadFile(filepath.Join("..", "..", "worker", "wasm", "testdata", "echo.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = n.Manager.Deploy(ctx, deploymgr.DeployRequest{Archive: tarGz(t, map[string][]byte{
		"velo.toml": []byte("name = \"hello\"\nmodule = \"echo.wasm\"\ndomains = [\"api.custom.test\"]\n"),
		"echo.wasm": wasm,
	})})
	if err != nil {
		t.Fatal(err)
	}
	// Another component may not take the custom domain, nor one of Velo's.
	_, err = n.Manager.Deploy(ctx, deploymgr.DeployRequest{Archive: tarGz(t, map[string][]byte{
		"velo.toml": []byte("name = \"thief\"\nmodule = \"echo.wasm\"\ndomains = [\"API.custom.test\"]\n"),
		"echo.wasm": wasm,
	})})
	var conflict *deploymgr.ConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), `api.custom.test is already used by component "hello"`) {
		t.Fatalf("deploying a domain another component holds: %v", err)
	}
	_, err = n.Manager.Deploy(ctx, deploymgr.DeployRequest{Archive: tarGz(t, map[string][]byte{
		"velo.toml": []byte("name = \"thief\"\nmodule = \"echo.wasm\"\ndomains = [\"hello.apps.velo.test\"]\n"),
		"echo.wasm": wasm,
	})})
	var input *deploymgr.InputError
	if !errors.As(err, &input) || !strings.Contains(err.Error(), "under Velo's own domain") {
		t.Fatalf("deploying a name under Velo's domain: %v", err)
	}

	roots := ca.IssuerRoots(t)
	client := httpsClient(n.HTTPSAddr, roots)
	get := func(url string) (*http.Response, string, error) {
		res, err := client.Get(url)
		if err != nil {
			return nil, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b), nil
	}
	// The component on its own host and on its custom domain, over TLS
	// with a certificate Pebble issued for that very name.
	for _, host := range []string{"hello." + domain, "api.custom.test"} {
		var last string
		testsupport.EventuallyShow(t, 90*time.Second, "https://"+host+"/ answered by the component", func() bool {
			res, body, err := get("https://" + host + "/")
			if err != nil {
				last = err.Error()
				return false
			}
			last = res.Status + " " + body
			return res.StatusCode == http.StatusOK && body == "hello from C\n" &&
				res.Header.Get("Strict-Transport-Security") == certs.HSTS
		}, func() string { return last + "; events " + ev.String() })
	}
	// The dashboard host.
	if res, _, err := get("https://" + domain + "/healthz"); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("dashboard host: %v %v", res, err)
	}
	if got := ev.count("cert_obtained"); got != 3 {
		t.Errorf("%d certificates obtained, want 3 (dashboard, hello, custom domain): %s", got, ev.String())
	}

	// No certificate for a host Velo does not serve, whatever SNI says.
	for _, host := range []string{"nobody." + domain, "evil.example", "a.b." + domain} {
		if _, err := handshake(n.HTTPSAddr, host, roots); err == nil {
			t.Errorf("handshake for %s succeeded", host)
		}
	}
	if got := ev.count("cert_obtaining"); got != 3 {
		t.Errorf("%d issuances attempted, want 3 (none for unknown hosts): %s", got, ev.String())
	}
	keys, err := n.Store.TLSKeys(ctx, "certificates")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if strings.Contains(k, "nobody") || strings.Contains(k, "evil") {
			t.Errorf("stored certificate for an unknown host: %s", k)
		}
	}

	// Plain HTTP: redirected to HTTPS (308 keeps the method), except the
	// challenge path and the machine's own loopback host.
	plain := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodPost, n.URL+"/fn/hello/x?q=1", strings.NewReader("body"))
	req.Host = "hello." + domain
	res, err := plain.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	want := fmt.Sprintf("https://hello.%s:%d/fn/hello/x?q=1", domain, httpsPort)
	if res.StatusCode != http.StatusPermanentRedirect || res.Header.Get("Location") != want {
		t.Errorf("plain HTTP: %s Location %q, want 308 to %q", res.Status, res.Header.Get("Location"), want)
	}
	req, _ = http.NewRequest(http.MethodGet, n.URL+"/.well-known/acme-challenge/unknown-token", nil)
	req.Host = "hello." + domain
	if res, err = plain.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown ACME challenge over plain HTTP: %s, want 404 (not a redirect)", res.Status)
	}
	if res, err = plain.Get(n.URL + "/fn/hello/"); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Strict-Transport-Security") != "" {
		t.Errorf("plain HTTP on the loopback host: %s, want the component (200, no HSTS)", res.Status)
	}

	// Renewal: certificates live 45s; each is replaced before it expires.
	first, err := handshake(n.HTTPSAddr, "hello."+domain, roots)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	testsupport.EventuallyShow(t, 120*time.Second, "the certificate renewed", func() bool {
		c, err := handshake(n.HTTPSAddr, "hello."+domain, roots)
		if err != nil {
			last = err.Error()
			return false
		}
		last = fmt.Sprintf("serial %s, expires %s", c.SerialNumber, c.NotAfter)
		return c.SerialNumber.Cmp(first.SerialNumber) != 0 && c.NotAfter.After(first.NotAfter)
	}, func() string { return last + "; events " + ev.String() })
}

// testLogger keeps the logs of a test, shown when it fails.
func testLogger(t *testing.T) *slog.Logger {
	buf := &testsupport.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// TestHTTPSCertFiles: with VELO_TLS_CERT and VELO_TLS_KEY velo up serves
// the operator's certificate (no ACME), with HSTS.
func TestHTTPSCertFiles(t *testing.T) {
	dir := t.TempDir()
	pool, certFile, keyFile := selfSignedFiles(t, dir, "apps.velo.test")
	n, err := Start(context.Background(), Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), Domain: "apps.velo.test",
		TLS:    TLS{CertFile: certFile, KeyFile: keyFile, Addr: "127.0.0.1:0"},
		Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	res, err := httpsClient(n.HTTPSAddr, pool).Get("https://apps.velo.test/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Strict-Transport-Security") != certs.HSTS {
		t.Fatalf("%s %v", res.Status, res.Header)
	}
	if _, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(),
		TLS: TLS{CertFile: certFile}}); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Errorf("a certificate without its key: %v", err)
	}
	if _, err := Start(context.Background(), Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(),
		TLS: TLS{HTTPS: HTTPSACME}}); err == nil || !strings.Contains(err.Error(), "--https needs --domain") {
		t.Errorf("ACME without a domain: %v", err)
	}
}

// selfSignedFiles writes a self-signed certificate for name and returns
// a pool trusting it.
func selfSignedFiles(t *testing.T, dir, name string) (*x509.CertPool, string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), DNSNames: []string{name, "*." + name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool, certFile, keyFile
}
