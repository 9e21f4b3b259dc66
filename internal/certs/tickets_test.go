package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// certFiles writes a self-signed certificate for velo.test and returns
// its files and a pool trusting it.
func certFiles(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"velo.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(leaf)
	return certFile, keyFile, pool
}

// serveTLS serves cfg on a loopback listener: each connection shakes
// hands, gets one byte and is closed. It returns the address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
				if tc.Handshake() == nil {
					_, _ = tc.Write([]byte("x"))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// resumes dials addr with cache and reports whether the session resumed;
// the byte read brings the server's ticket (TLS 1.3 sends it after the
// handshake) into cache.
func resumes(t *testing.T, addr string, pool *x509.CertPool, cache tls.ClientSessionCache) bool {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "velo.test", ClientSessionCache: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return c.ConnectionState().DidResume
}

// TestTicketsSharedAcrossRouters: two routers on one store (each a
// Manager of its own, as two processes have) share their session ticket
// keys, so a ticket one issued resumes with the other — with a
// certificate from files and with either engine.
func TestTicketsSharedAcrossRouters(t *testing.T) {
	certFile, keyFile, pool := certFiles(t)
	engines(t, func(t *testing.T, url string) {
		keys := keyring(t)
		var addrs []string
		for range 2 {
			st := openStore(t, url) // a connection pool of its own, as a process has
			s, err := NewStorage(st, keys, nil)
			if err != nil {
				t.Fatal(err)
			}
			m, err := New(Config{Storage: s, CertFile: certFile, KeyFile: keyFile})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(m.Close)
			addrs = append(addrs, serveTLS(t, m.TLSConfig()))
		}
		for i, from := range addrs {
			to := addrs[1-i]
			cache := tls.NewLRUClientSessionCache(4)
			if resumes(t, from, pool, cache) {
				t.Fatalf("router %d: the first connection resumed", i)
			}
			if !resumes(t, to, pool, cache) {
				t.Errorf("a ticket of router %d did not resume with router %d", i, 1-i)
			}
		}
	})
}

// TestTicketsRotate: a key is added once the newest is a day old (one
// added by another router meanwhile counts), encrypts only once settled,
// older keys still open their tickets until they are a week old.
func TestTicketsRotate(t *testing.T) {
	st := openStore(t, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	s := newStorage(t, st, keyring(t))
	now := time.Now()
	tk := &Tickets{s: s, log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }, keys: &tls.Config{}}
	ctx := context.Background()
	stored := func() []ticketKey {
		t.Helper()
		keys, err := tk.load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	if err := tk.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(stored()); n != 1 {
		t.Fatalf("%d keys after the first sync, want 1", n)
	}
	now = now.Add(ticketRotate - time.Minute)
	if err := tk.sync(ctx); err != nil || len(stored()) != 1 {
		t.Fatalf("before a day: %d keys (%v), want 1", len(stored()), err)
	}
	now = now.Add(2 * time.Minute)
	if err := tk.sync(ctx); err != nil || len(stored()) != 2 {
		t.Fatalf("after a day: %d keys (%v), want 2", len(stored()), err)
	}
	// The fresh key does not encrypt yet: the settled one does, until
	// the fresh one is settled too.
	keys := stored()
	oldest, newest := keys[0].Created, keys[1].Created
	if newest.Before(oldest) {
		oldest, newest = newest, oldest
	}
	if !tk.current.Equal(oldest) {
		t.Errorf("encrypting with the key of %v, want the settled one of %v", tk.current, oldest)
	}
	now = now.Add(ticketSettle)
	if err := tk.sync(ctx); err != nil || len(stored()) != 2 || !tk.current.Equal(newest) {
		t.Fatalf("once settled: %d keys (%v), encrypting with %v, want 2 and %v", len(stored()), err, tk.current, newest)
	}
	now = now.Add(8 * 24 * time.Hour)
	if err := tk.sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range stored() {
		if now.Sub(k.Created) > ticketKeep {
			t.Errorf("a key of %v is kept past a week", k.Created)
		}
	}
}
