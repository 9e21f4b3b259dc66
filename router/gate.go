package router

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// The gateway: who may call a component and how often. Every call path
// (the event loops, net/http, an async call queued for later) asks admit,
// once per call, before the component runs; admit reads only the route
// table, never the store.

// Headers of the gateway.
const (
	// HeaderAuthSubject names the caller a private component admitted:
	// "key:ID" for an API key, the token's sub for a JWT.
	HeaderAuthSubject = "X-Velo-Auth-Subject"
	// HeaderAuthKey is the label of the API key the caller used.
	HeaderAuthKey = "X-Velo-Auth-Key"
	// HeaderAPIKey is where a caller may send an API key instead of
	// Authorization: Bearer.
	HeaderAPIKey = "X-Api-Key"
)

// APIKeyPrefix starts every API key, so that a bearer credential is told
// from a JWT without trying both.
const APIKeyPrefix = "velo_k_"

// gateStore is what the gateway reads from the store when the table is
// rebuilt (never per call). A store without it has no API keys.
type gateStore interface {
	APIKeys(ctx context.Context, component string) ([]store.APIKey, error)
}

// apiKey is an API key as the table holds it, by the sha256 of its secret.
type apiKey struct {
	component string
	subject   string // "key:" + ID
	id        string
	label     string
}

// gate is a route's access rule and rate limit. A route without either
// has no gate.
type gate struct {
	private bool
	jwt     *jwks // nil: no JWTs taken
	limit   *limiter
	realm   string // WWW-Authenticate challenge
	// dashboard admits the dashboard's signed-in users who reach the
	// component's repository (see session.go).
	dashboard bool
}

// newGate builds the gate of a deployment's manifest; old is the route's
// previous gate, whose rate-limit buckets carry over when the limit is
// unchanged.
func (r *Router) newGate(name string, m gateManifest, old *gate) *gate {
	if m.Access == nil && m.Limits == nil {
		return nil
	}
	g := &gate{private: m.Access != nil, realm: `Bearer realm="` + name + `"`}
	g.dashboard = m.Access != nil && m.Access.Dashboard
	if a := m.Access; a != nil && a.JWKS != "" {
		g.jwt = r.jwksFor(a.JWKS, a.Issuer, a.Audience)
	}
	if l := m.Limits; l != nil {
		if old != nil && old.limit != nil && old.limit.cfg == *l {
			g.limit = old.limit
		} else {
			g.limit = newLimiter(name, *l, r.cfg.MaxClients)
		}
	}
	return g
}

// gateManifest is the part of a deployment's manifest the gateway reads.
type gateManifest struct {
	Access   *manifest.Access `json:"access"`
	Limits   *manifest.Limits `json:"limits"`
	Validate bool             `json:"validate"`
}

func gateOf(raw []byte) gateManifest {
	var m gateManifest
	_ = json.Unmarshal(raw, &m) // a manifest that cannot be read has no gate
	if m.Access != nil && m.Access.JWKS != "" && (m.Access.Issuer == "" || m.Access.Audience == "") {
		m.Access.JWKS = "" // never a JWT without both checks
	}
	return m
}

// credentials are what a caller presented: the value of Authorization and
// of X-Api-Key (nil when absent).
type credentials struct {
	authorization []byte
	apiKey        []byte
	session       string // the dashboard session cookie's secret ("": none)
}

// admission is admit's verdict on one call. status 0 admits it.
type admission struct {
	status    int
	challenge string // WWW-Authenticate with a 401
	msg       string
	subject   string
	label     string
	limited   bool // the RateLimit fields below are set
	rl        rateState
}

// admit decides whether a call of rt from client with creds may go on.
// Only routes with a gate need it. It may block (a JWKS fetch on an
// unknown key ID, bounded by jwksTimeout) unless the route is taken by
// the event loops, whose gates never fetch.
func (r *Router) admit(ctx context.Context, t *table, rt *route, creds credentials, client netip.Addr, now time.Time) admission {
	g := rt.gate
	var a admission
	if g.private {
		a = r.identify(ctx, t, rt, creds, now)
		if a.status != 0 {
			return a
		}
	}
	if l := g.limit; l != nil {
		l.admit(&a, client, now)
	}
	return a
}

// admit takes a token for the call a is the verdict on: from the bucket
// of its subject (by = "key" or "subject") or of its client's address (by
// = "ip", or a call with no identity, as an inbound event).
func (l *limiter) admit(a *admission, client netip.Addr, now time.Time) {
	var buf [64]byte
	var key []byte
	switch {
	case l.cfg.By == manifest.ByIP || a.subject == "":
		b := client.As16()
		key = append(buf[:0], b[:]...)
	default: // by key: the key's subject; by subject, or a JWT: its sub
		key = append(buf[:0], a.subject...)
	}
	a.limited = true
	if a.rl = l.take(key, now); !a.rl.ok {
		a.status = http.StatusTooManyRequests
		a.msg = "rate limit of " + l.cfg.String() + " reached; retry in " + strconv.Itoa(a.rl.retry) + "s"
	}
}

// identify checks a private component's caller.
func (r *Router) identify(ctx context.Context, t *table, rt *route, creds credentials, now time.Time) admission {
	g := rt.gate
	token := creds.apiKey
	fromHeader := token != nil
	if token == nil {
		if v := creds.authorization; len(v) > 7 && strings.EqualFold(string(v[:7]), "bearer ") {
			token = bytes.TrimSpace(v[7:])
		}
	}
	refuse := func(status int, why, msg string) admission {
		a := admission{status: status, msg: msg}
		if status == http.StatusUnauthorized {
			a.challenge = g.realm
			if why != "" {
				a.challenge += `, error="` + why + `"`
			}
		}
		return a
	}
	switch {
	case len(token) == 0 && g.dashboard && creds.session != "" && r.cfg.Sessions != nil:
		return r.identifySession(ctx, rt, creds.session, now)
	case len(token) == 0:
		return refuse(http.StatusUnauthorized, "", "component \""+rt.name+"\" is private: send an API key (Authorization: Bearer or X-Api-Key)"+jwtHint(g)+dashboardHint(g))
	case bytes.HasPrefix(token, []byte(APIKeyPrefix)):
		k, ok := t.keys[sha256.Sum256(token)]
		switch {
		case !ok:
			return refuse(http.StatusUnauthorized, "invalid_token", "unknown or revoked API key")
		case k.component != rt.name:
			return refuse(http.StatusForbidden, "", "this API key is not one of component \""+rt.name+"\"'s")
		}
		return admission{subject: k.subject, label: k.label}
	case g.jwt != nil && !fromHeader:
		sub, err := g.jwt.verify(ctx, string(token), now)
		if err != nil {
			return refuse(http.StatusUnauthorized, "invalid_token", "token refused: "+err.Error())
		}
		return admission{subject: sub}
	}
	return refuse(http.StatusUnauthorized, "invalid_token", "not an API key of component \""+rt.name+"\""+jwtHint(g))
}

func dashboardHint(g *gate) string {
	if g.dashboard {
		return " or sign in to Velo's dashboard"
	}
	return ""
}

func jwtHint(g *gate) string {
	if g.jwt != nil {
		return " or a JWT from " + g.jwt.issuer
	}
	return ""
}

// admitHTTP runs admit for a call on the net/http path: on a refusal it
// answers and returns false; else the credential is taken out of the
// request and the identity put in, and the rate-limit fields added to the
// answer.
func (r *Router) admitHTTP(w http.ResponseWriter, req *http.Request, rt *route, t *table, session string, start time.Time) bool {
	if rt.gate == nil {
		return true
	}
	h := req.Header
	creds := credentials{session: session}
	if vs := h["Authorization"]; len(vs) > 0 {
		creds.authorization = []byte(vs[0])
	}
	if vs := h[HeaderAPIKey]; len(vs) > 0 {
		creds.apiKey = []byte(vs[0])
	}
	a := r.admit(req.Context(), t, rt, creds, clientOf(req), start)
	if a.status == http.StatusUnauthorized && rt.gate.dashboard && r.cfg.SignInURL != "" && browser(req) {
		// A browser without a (live) session: sent to sign in.
		w.Header().Set("WWW-Authenticate", a.challenge)
		http.Redirect(w, req, r.cfg.SignInURL, http.StatusSeeOther)
		r.count(rt, http.StatusSeeOther, start)
		return false
	}
	if !r.answerHTTP(w, rt, &a, start) {
		return false
	}
	if rt.gate.private {
		delete(h, "Authorization")
		delete(h, HeaderAPIKey)
		h[HeaderAuthSubject] = []string{a.subject}
		if a.label != "" {
			h[HeaderAuthKey] = []string{a.label}
		}
	}
	return true
}

// clientOf is the address of a prepared request's client.
func clientOf(req *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(req.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// answerHTTP adds the rate-limit fields of verdict a to the answer and,
// when a refuses the call, answers and counts it and returns false.
func (r *Router) answerHTTP(w http.ResponseWriter, rt *route, a *admission, start time.Time) bool {
	wh := w.Header()
	if a.limited {
		a.rl.setHeader(wh)
	}
	if a.status == 0 {
		return true
	}
	if a.challenge != "" {
		wh.Set("WWW-Authenticate", a.challenge)
	}
	if a.status == http.StatusTooManyRequests {
		wh.Set("Retry-After", strconv.Itoa(a.rl.retry))
	}
	plain(w, a.status, a.msg)
	r.count(rt, a.status, start)
	return false
}

// limitEvent applies a component's [limits] to an inbound event (POST
// /events/NAME/…), by the sender's address: events come from anyone (a
// signature, [events] verify, says whether they are genuine), so they
// carry no identity to count by. On a refusal it answers 429 and returns
// false; nothing is queued.
func (r *Router) limitEvent(w http.ResponseWriter, req *http.Request, rt *route, start time.Time) bool {
	if rt.gate == nil || rt.gate.limit == nil {
		return true
	}
	var a admission
	rt.gate.limit.admit(&a, clientOf(req), start)
	return r.answerHTTP(w, rt, &a, start)
}

// appendGateRefusal appends the answer to a call admit refused.
func appendGateRefusal(dst []byte, a *admission, keep bool) []byte {
	msg := a.msg + "\n"
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(a.status), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(a.status)...)
	dst = append(dst, "\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n"...)
	if a.challenge != "" {
		dst = append(dst, "WWW-Authenticate: "...)
		dst = append(dst, a.challenge...)
		dst = append(dst, "\r\n"...)
	}
	if a.limited {
		dst = a.rl.appendLines(dst)
		if a.status == http.StatusTooManyRequests {
			dst = append(dst, "Retry-After: "...)
			dst = strconv.AppendInt(dst, int64(a.rl.retry), 10)
			dst = append(dst, "\r\n"...)
		}
	}
	if !keep {
		dst = append(dst, "Connection: close\r\n"...)
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(msg)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, msg...)
}

// appendIdentity appends the identity header lines of an admitted call of
// a private component.
func appendIdentity(dst []byte, a *admission) []byte {
	dst = append(dst, HeaderAuthSubject+": "...)
	dst = append(dst, a.subject...)
	dst = append(dst, "\r\n"...)
	if a.label != "" {
		dst = append(dst, HeaderAuthKey+": "...)
		dst = append(dst, a.label...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// apiKeys reads the API keys of component ("": of every one) for a new
// table.
func (r *Router) apiKeys(ctx context.Context, component string) (map[[32]byte]apiKey, error) {
	out := map[[32]byte]apiKey{}
	gs, ok := r.store.(gateStore)
	if !ok {
		return out, nil
	}
	keys, err := gs.APIKeys(ctx, component)
	if err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	for _, k := range keys {
		h, err := hex.DecodeString(k.Hash)
		if err != nil || len(h) != sha256.Size {
			continue
		}
		out[[32]byte(h)] = apiKey{component: k.Component, subject: "key:" + k.ID, id: k.ID, label: k.Label}
	}
	return out, nil
}

// routerID names this router among those sharing rate limits.
func routerID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
