package router

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// issuer is a JWKS endpoint on loopback with keys it can rotate.
type issuer struct {
	mu      sync.Mutex
	keys    map[string]crypto.Signer // by key ID, published
	algs    map[string]jose.SignatureAlgorithm
	fetches atomic.Int64
	srv     *httptest.Server
}

func newIssuer(t *testing.T) *issuer {
	is := &issuer{keys: map[string]crypto.Signer{}, algs: map[string]jose.SignatureAlgorithm{}}
	is.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		is.fetches.Add(1)
		is.mu.Lock()
		defer is.mu.Unlock()
		var set jose.JSONWebKeySet
		for kid, k := range is.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Public(), KeyID: kid, Algorithm: string(is.algs[kid]), Use: "sig"})
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) add(t *testing.T, kid string, alg jose.SignatureAlgorithm) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch alg {
	case jose.RS256:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.EdDSA:
		_, k, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	is.keys[kid], is.algs[kid] = k, alg
	is.mu.Unlock()
	return k
}

// sign makes a JWT with key under kid (published or not).
func sign(t *testing.T, key any, alg jose.SignatureAlgorithm, kid string, claims jwt.Claims) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestJWT(t *testing.T) {
	is := newIssuer(t)
	rsaKey := is.add(t, "rsa1", jose.RS256)
	ecKey := is.add(t, "ec1", jose.ES256)
	edKey := is.add(t, "ed1", jose.EdDSA)
	a := newFakeWorker(t, "a", "tok", echoIdentity)
	access := `{"access":{"jwks":"` + is.srv.URL + `/jwks","issuer":"https://id.test/","audience":"orders"}}`
	r, _ := gatedRouter(t, a, map[string]string{"private": access}, Config{})
	addr := fastServer(t, r, 0)

	now := time.Now()
	good := jwt.Claims{Issuer: "https://id.test/", Audience: jwt.Audience{"orders"}, Subject: "user-42",
		Expiry: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now)}
	with := func(f func(c *jwt.Claims)) jwt.Claims { c := good; f(&c); return c }

	// alg none, and HS256 keyed with the RSA public key (the classic
	// confusion attack): hand-made, as no careful library signs them.
	header := map[string]string{"alg": "none", "typ": "JWT", "kid": "rsa1"}
	none := b64(header) + "." + b64(good) + "."
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(rsaKey.Public()))})
	header["alg"] = "HS256"
	signing := b64(header) + "." + b64(good)
	mac := hmac.New(sha256.New, pubPEM)
	mac.Write([]byte(signing))
	hs256 := signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	hs256jose := sign(t, pubPEM, jose.HS256, "rsa1", good)
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)

	for _, tc := range []struct {
		name, token string
		status      int
		body        string
	}{
		{"RS256", sign(t, rsaKey, jose.RS256, "rsa1", good), 200, "subject=user-42 key= client-auth="},
		{"ES256", sign(t, ecKey, jose.ES256, "ec1", good), 200, "subject=user-42"},
		{"EdDSA", sign(t, edKey, jose.EdDSA, "ed1", good), 200, "subject=user-42"},
		{"expired", sign(t, rsaKey, jose.RS256, "rsa1", with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Hour)) })), 401, "expired"},
		{"no expiry", sign(t, rsaKey, jose.RS256, "rsa1", with(func(c *jwt.Claims) { c.Expiry = nil })), 401, "no exp claim"},
		{"wrong audience", sign(t, rsaKey, jose.RS256, "rsa1", with(func(c *jwt.Claims) { c.Audience = jwt.Audience{"billing"} })), 401, "wrong audience"},
		{"wrong issuer", sign(t, rsaKey, jose.RS256, "rsa1", with(func(c *jwt.Claims) { c.Issuer = "https://evil.test/" })), 401, "wrong issuer"},
		{"not yet valid", sign(t, rsaKey, jose.RS256, "rsa1", with(func(c *jwt.Claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) })), 401, "not valid yet"},
		{"unknown kid", sign(t, stranger, jose.EdDSA, "nobody", good), 401, `unknown key "nobody"`},
		{"signed by another key under a known kid", sign(t, stranger, jose.EdDSA, "ed1", good), 401, "bad signature"},
		{"key for another alg", sign(t, edKey, jose.EdDSA, "rsa1", good), 401, "is for RS256"},
		{"alg none", none, 401, "not a JWT signed with RS256, ES256 or EdDSA"},
		{"HS256 with the public key", hs256, 401, "not a JWT signed with RS256, ES256 or EdDSA"},
		{"HS256 with the public key (go-jose)", hs256jose, 401, "not a JWT signed with RS256, ES256 or EdDSA"},
		{"garbage", "a.b.c", 401, "not a JWT"},
	} {
		res := rawExchange(t, addr, "GET /fn/private/ HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "+tc.token+"\r\n\r\n", 1)[0]
		got := readBody(res)
		if res.StatusCode != tc.status || !strings.Contains(got, tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, res.StatusCode, got, tc.status, tc.body)
		}
		if tc.status == 401 && res.Header.Get("WWW-Authenticate") != `Bearer realm="private", error="invalid_token"` {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, res.Header.Get("WWW-Authenticate"))
		}
	}
	// Keys are cached: the good calls above fetched the set once, and
	// each unknown kid at most once more (refetches are spaced).
	if n := is.fetches.Load(); n > 2 {
		t.Errorf("JWKS fetched %d times, want at most 2", n)
	}
	// A rotation: a token under a key published after the last fetch is
	// taken once the refetch spacing has passed (the unknown kid makes
	// the router fetch again).
	rotated := is.add(t, "rsa2", jose.RS256)
	j := r.table.Load().routes["private"].gate.jwt
	ks := j.keys.Load()
	j.keys.Store(&jwksKeys{set: ks.set, fetched: ks.fetched.Add(-jwksMinRefetch)})
	res := rawExchange(t, addr, "GET /fn/private/ HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "+sign(t, rotated, jose.RS256, "rsa2", good)+"\r\n\r\n", 1)[0]
	if got := readBody(res); res.StatusCode != 200 || !strings.Contains(got, "subject=user-42") {
		t.Fatalf("token under a rotated-in key: %d %q", res.StatusCode, got)
	}
	// A JWT never goes in X-Api-Key.
	res = rawExchange(t, addr, "GET /fn/private/ HTTP/1.1\r\nHost: h\r\nX-Api-Key: "+sign(t, rsaKey, jose.RS256, "rsa1", good)+"\r\n\r\n", 1)[0]
	if res.StatusCode != 401 {
		t.Errorf("JWT in X-Api-Key: %d, want 401", res.StatusCode)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
