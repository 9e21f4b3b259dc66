// Package acmetest runs a real ACME server for tests: Pebble, Let's
// Encrypt's test CA (github.com/letsencrypt/pebble, pinned as a go tool in
// go.mod and built by the test run), with a DNS server of its own that
// resolves every name to 127.0.0.1, so that Pebble validates challenges
// against Velo's loopback ports. No certificate from it is trusted
// anywhere but in the test that asked for it.
package acmetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/velo-run/velo/internal/testsupport"
)

// Options configure a Pebble.
type Options struct {
	// HTTPPort and TLSPort are where Pebble sends HTTP-01 and
	// TLS-ALPN-01 validations (on 127.0.0.1): Velo's plain and TLS ports.
	HTTPPort, TLSPort int
	// Validity is the lifetime of the certificates it issues (default 90
	// days); short for renewal tests.
	Validity time.Duration
}

// CA is a running Pebble.
type CA struct {
	// Directory is the ACME directory URL.
	Directory string
	// Roots trusts Pebble's own HTTPS endpoint (give it to the ACME
	// client).
	Roots *x509.CertPool
	mgmt  string
}

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// build compiles Pebble once per test binary, from the version go.mod
// pins.
func build() (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "velo-pebble-")
		if err != nil {
			buildErr = err
			return
		}
		binary = filepath.Join(dir, "pebble")
		cmd := exec.Command("go", "build", "-o", binary, "github.com/letsencrypt/pebble/v2/cmd/pebble")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build pebble: %v\n%s", err, out)
		}
	})
	return binary, buildErr
}

// Start builds (once) and starts a Pebble, stopped when t ends. Without
// the Go toolchain or the module it skips the test, or fails it in CI.
func Start(t testing.TB, o Options) *CA {
	t.Helper()
	bin, err := build()
	testsupport.Need(t, "pebble (go build github.com/letsencrypt/pebble/v2/cmd/pebble)", err)
	dir := t.TempDir()
	roots, certFile, keyFile := selfSigned(t, dir)
	dnsAddr := serveDNS(t)
	listen, mgmt := freeAddr(t), freeAddr(t)
	validity := o.Validity
	if validity == 0 {
		validity = 90 * 24 * time.Hour
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": mgmt,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                o.HTTPPort,
		"tlsPort":                 o.TLSPort,
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{
			"description":    "test",
			"validityPeriod": int(validity / time.Second),
		}},
	}}
	b, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	log := &testsupport.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble's log:\n%s", log.String())
		}
	})
	ca := &CA{Directory: "https://" + listen + "/dir", Roots: roots, mgmt: "https://" + mgmt}
	client := ca.client()
	testsupport.EventuallyShow(t, 60*time.Second, "pebble answers", func() bool {
		res, err := client.Get(ca.Directory)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, log.String)
	return ca
}

func (ca *CA) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Roots}}}
}

// IssuerRoots are the roots of the certificates Pebble issues, from its
// management interface (/roots/0): what a client checking Velo's
// certificates trusts.
func (ca *CA) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	res, err := ca.client().Get(ca.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("pebble roots: %d %v", res.StatusCode, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble roots: no certificate in %q", b)
	}
	return pool
}

// selfSigned writes a certificate for 127.0.0.1 for Pebble's own HTTPS.
func selfSigned(t testing.TB, dir string) (*x509.CertPool, string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebble test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, certFile, keyFile
}

// serveDNS answers every A query with 127.0.0.1 (and nothing else), over
// UDP and TCP on one loopback port, until t ends.
func serveDNS(t testing.TB) string {
	var (
		ln  net.Listener
		pc  net.PacketConn
		err error
	)
	for range 20 { // a UDP port free where the TCP one is
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if pc, err = net.ListenPacket("udp", ln.Addr().String()); err == nil {
			break
		}
		ln.Close()
	}
	if err != nil {
		t.Fatalf("dns: %v", err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = srv.ActivateAndServe() }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.ShutdownContext(ctx)
		})
	}
	return ln.Addr().String()
}

// freeAddr is a free loopback address (host:port).
func freeAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// FreePort is a TCP port free on 127.0.0.1 just now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
