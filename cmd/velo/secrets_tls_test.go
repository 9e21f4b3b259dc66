package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/certs"
	"github.com/velo-run/velo/internal/secrets"
)

// TestSecretsRotateResealsTLS: velo secrets rotate-key seals the TLS
// storage again too (certmagic's certificates and private keys are sealed
// with the secrets keyring): after the rotation retires the old key and
// Velo restarts, the certificate and its key still load, and nothing in
// the storage is left under the old key.
func TestSecretsRotateResealsTLS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	keyFile := filepath.Join(s.data, secrets.KeyFile)
	before, err := secrets.LoadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	st, err := certs.NewStorage(s.n.Store, before, nil)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM := selfSigned(t, "api.example.com")
	const dir = "certificates/localhost-14000-dir/api.example.com/"
	if err := st.Store(ctx, dir+"api.example.com.crt", certPEM); err != nil {
		t.Fatal(err)
	}
	if err := st.Store(ctx, dir+"api.example.com.key", keyPEM); err != nil {
		t.Fatal(err)
	}

	out := s.velo(0, "secrets", "rotate-key")
	if !strings.Contains(out, "re-encrypted 2 TLS item(s)") {
		t.Errorf("velo secrets rotate-key:\n%s", out)
	}
	after, err := secrets.LoadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.IDs()) != 1 || after.Primary() == before.Primary() {
		t.Fatalf("key file after the rotation holds %v (before: %v): the old key should be retired", after.IDs(), before.IDs())
	}
	if ids, err := s.n.Store.TLSKeyIDs(ctx); err != nil || len(ids) != 1 || ids[0] != after.Primary() {
		t.Errorf("TLS items sealed under %v, %v; want only %s", ids, err, after.Primary())
	}

	// Restart: the node reads the rotated key file; the certificate
	// still loads from the storage, as certmagic would load it.
	s.n.Close()
	s.start()
	st2, err := certs.NewStorage(s.n.Store, after, nil)
	if err != nil {
		t.Fatal(err)
	}
	gotCert, err := st2.Load(ctx, dir+"api.example.com.crt")
	if err != nil {
		t.Fatalf("certificate after rotation and restart: %v", err)
	}
	gotKey, err := st2.Load(ctx, dir+"api.example.com.key")
	if err != nil {
		t.Fatalf("private key after rotation and restart: %v", err)
	}
	if _, err := tls.X509KeyPair(gotCert, gotKey); err != nil {
		t.Fatalf("the loaded pair is no certificate: %v", err)
	}
}

// selfSigned returns a PEM certificate for name and its PEM private key.
func selfSigned(t *testing.T, name string) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
