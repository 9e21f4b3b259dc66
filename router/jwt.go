package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// JWTs are checked with go-jose against the keys a JWKS URL publishes,
// cached: fetched on first use, again when a token names a key ID the
// cache lacks (a rotation; at most once per jwksMinRefetch) and when the
// keys are older than jwksMaxAge. Only asymmetric signatures are taken —
// RS256, ES256, EdDSA — so neither "none" nor an HMAC keyed with the
// public key gets through.

var jwtAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

const (
	jwksTimeout    = 5 * time.Second
	jwksMaxAge     = time.Hour
	jwksMinRefetch = 5 * time.Second
	maxJWKS        = 1 << 20
	maxJWT         = 16 << 10
	maxSubject     = 256
	jwtLeeway      = 30 * time.Second
)

// jwks checks the JWTs of one JWKS URL, issuer and audience.
type jwks struct {
	url, issuer, audience string
	client                *http.Client
	keys                  atomic.Pointer[jwksKeys]
	mu                    sync.Mutex // one fetch at a time
}

type jwksKeys struct {
	set     jose.JSONWebKeySet
	fetched time.Time
}

// jwksFor returns the checker of url, issuer and audience, shared by the
// routes naming the same ones and kept across table refreshes.
func (r *Router) jwksFor(url, issuer, audience string) *jwks {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := url + "\x00" + issuer + "\x00" + audience
	if j := r.jwks[k]; j != nil {
		return j
	}
	j := &jwks{url: url, issuer: issuer, audience: audience, client: r.cfg.JWKSClient}
	if j.client == nil {
		j.client = &http.Client{Timeout: jwksTimeout}
	}
	r.jwks[k] = j
	return j
}

// verify checks a token and returns its subject.
func (j *jwks) verify(ctx context.Context, token string, now time.Time) (string, error) {
	if len(token) > maxJWT {
		return "", errors.New("token too large")
	}
	tok, err := jwt.ParseSigned(token, jwtAlgorithms)
	if err != nil {
		return "", errors.New("not a JWT signed with RS256, ES256 or EdDSA")
	}
	if len(tok.Headers) != 1 {
		return "", errors.New("want one signature")
	}
	h := tok.Headers[0]
	key, err := j.key(ctx, h.KeyID, now)
	if err != nil {
		return "", err
	}
	if key.Algorithm != "" && key.Algorithm != h.Algorithm {
		return "", fmt.Errorf("key %q is for %s, not %s", h.KeyID, key.Algorithm, h.Algorithm)
	}
	var c jwt.Claims
	if err := tok.Claims(key.Key, &c); err != nil {
		return "", errors.New("bad signature")
	}
	if c.Expiry == nil {
		return "", errors.New("no exp claim")
	}
	err = c.ValidateWithLeeway(jwt.Expected{Issuer: j.issuer, AnyAudience: jwt.Audience{j.audience}, Time: now}, jwtLeeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return "", errors.New("expired")
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return "", errors.New("wrong issuer")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return "", errors.New("wrong audience")
	case err != nil:
		return "", errors.New("not valid yet")
	}
	if c.Subject == "" || len(c.Subject) > maxSubject || !printable(c.Subject) {
		return "", errors.New("missing or unusable sub claim")
	}
	return c.Subject, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// key returns the public key of kid, fetching the set when it lacks kid.
func (j *jwks) key(ctx context.Context, kid string, now time.Time) (*jose.JSONWebKey, error) {
	ks := j.keys.Load()
	if ks != nil && now.Sub(ks.fetched) < jwksMaxAge {
		if k := find(ks, kid); k != nil {
			return k, nil
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if cur := j.keys.Load(); cur != ks && cur != nil {
		ks = cur // another call fetched meanwhile
		if k := find(ks, kid); k != nil {
			return k, nil
		}
	}
	if ks == nil || now.Sub(ks.fetched) >= jwksMinRefetch {
		fetched, err := j.fetch(ctx)
		if err != nil {
			if ks == nil {
				return nil, err
			}
			// Keep the old keys; try again after jwksMinRefetch.
			j.keys.Store(&jwksKeys{set: ks.set, fetched: now})
			return nil, fmt.Errorf("unknown key %q (%v)", kid, err)
		}
		fetched.fetched = now
		j.keys.Store(fetched)
		ks = fetched
	}
	if k := find(ks, kid); k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("unknown key %q", kid)
}

func find(ks *jwksKeys, kid string) *jose.JSONWebKey {
	for i := range ks.set.Keys {
		k := &ks.set.Keys[i]
		if k.KeyID == kid && k.IsPublic() && (k.Use == "" || k.Use == "sig") {
			return k
		}
	}
	return nil
}

func (j *jwks) fetch(ctx context.Context) (*jwksKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch keys: %w", err)
	}
	res, err := j.client.Do(req)
	if err != nil {
		return nil, errors.New("fetching the issuer's keys failed")
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the issuer's keys answered %d", res.StatusCode)
	}
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(io.LimitReader(res.Body, maxJWKS)).Decode(&set); err != nil {
		return nil, errors.New("the issuer's keys are not a JWKS")
	}
	return &jwksKeys{set: set}, nil
}
