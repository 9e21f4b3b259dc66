package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// Components with [access] dashboard = true admit the users signed in to
// Velo's dashboard who can reach the component's repository, by their
// session cookie. A session's user and repositories are read once (the
// session from the store, the repositories from GitHub through
// Sessions.Repos) and then remembered for at most sessionTTL and never
// past the session's end, in a bounded cache: no store read per call. A
// sign-out is seen at once (the dashboard's note on
// store.ChannelSessions), or within sessionTTL when the note is lost; a
// repository taken away within sessionTTL.

// Sessions recognizes the dashboard's sessions (internal/auth.Sessions).
type Sessions interface {
	// SessionSecret is the secret of r's session cookie, "" without one.
	SessionSecret(r *http.Request) string
	// SessionUser returns the user of the live session whose cookie
	// holds secret and when it ends; ok false when there is none.
	SessionUser(ctx context.Context, secret string) (user string, expires time.Time, ok bool, err error)
	// Repos returns the repositories ("owner/name") user can reach, or
	// all = true for one who reaches every component (the admin).
	Repos(ctx context.Context, user string) (all bool, repos []string, err error)
}

// SetSessions makes the router recognize the dashboard's sessions (s) for
// components with [access] dashboard = true, sending browsers without one
// to signIn. Call it before serving.
func (r *Router) SetSessions(s Sessions, signIn string) {
	r.cfg.Sessions, r.cfg.SignInURL = s, signIn
}

// sessionTTL is how long the router remembers a session's user and
// repositories.
const sessionTTL = time.Minute

// maxSessions bounds the sessions remembered.
const maxSessions = 10000

// session is what the router remembers of one session.
type session struct {
	user  string // "" for a secret that is no live session
	all   bool
	repos map[string]bool // lower-case owner/name
	until time.Time
}

// reaches reports whether the session's user can reach repo.
func (s *session) reaches(repo string) bool {
	return s.all || repo != "" && s.repos[strings.ToLower(repo)]
}

type sessionCache struct {
	mu sync.Mutex
	m  map[[32]byte]*session
	// ended counts the sign-outs seen: a session read while one came in
	// is not remembered (it may have been read just before it ended).
	ended uint64
}

// The cache is keyed by the sha256 of the secret, which is what the store
// keeps of a session (hex): a sign-out's note names it.

// sessionOf returns what secret's session is, reading it when not
// remembered (or remembered too long).
func (r *Router) sessionOf(ctx context.Context, secret string, now time.Time) (*session, error) {
	k := sha256.Sum256([]byte(secret))
	c := &r.sessions
	c.mu.Lock()
	s, ended := c.m[k], c.ended
	c.mu.Unlock()
	if s != nil && now.Before(s.until) {
		return s, nil
	}
	sess := r.cfg.Sessions
	user, expires, ok, err := sess.SessionUser(ctx, secret)
	if err != nil {
		return nil, err
	}
	s = &session{until: now.Add(sessionTTL)}
	if ok {
		all, repos, err := sess.Repos(ctx, user)
		if err != nil {
			return nil, err
		}
		s.user, s.all, s.repos = user, all, make(map[string]bool, len(repos))
		for _, rp := range repos {
			s.repos[strings.ToLower(rp)] = true
		}
		if expires.Before(s.until) {
			s.until = expires
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended != ended {
		return s, nil
	}
	if c.m == nil {
		c.m = map[[32]byte]*session{}
	}
	if len(c.m) >= maxSessions {
		for k, old := range c.m {
			if !now.Before(old.until) || len(c.m) >= maxSessions-maxSessions/8 {
				delete(c.m, k) // expired first, then any (map order)
			}
		}
	}
	c.m[k] = s
	return s, nil
}

// sessionEnded forgets the session n names (a sign-out, from any
// dashboard of the cluster), or every session on a resync (a sign-out may
// have been missed): they are read again on their next call.
func (r *Router) sessionEnded(n store.Note) {
	c := &r.sessions
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended++
	if n.Resync() {
		clear(c.m)
		return
	}
	var k [32]byte
	if b, err := hex.DecodeString(n.Session()); err == nil && len(b) == len(k) {
		copy(k[:], b)
		delete(c.m, k)
	}
}

// identifySession admits the caller of a dashboard = true component by
// their session.
func (r *Router) identifySession(ctx context.Context, rt *route, secret string, now time.Time) admission {
	s, err := r.sessionOf(ctx, secret, now)
	switch {
	case err != nil:
		r.cfg.Logger.Warn("check a dashboard session failed", "component", rt.name, "err", err)
		return admission{status: http.StatusServiceUnavailable, msg: "the sign-in could not be checked; try again"}
	case s.user == "":
		return admission{status: http.StatusUnauthorized, challenge: rt.gate.realm + `, error="invalid_token"`,
			msg: "the dashboard session is not valid (signed out or expired): sign in again"}
	case !s.reaches(rt.repo):
		what := "repository " + rt.repo
		if rt.repo == "" {
			what = "the component (uploaded, not from a repository: only the admin)"
		}
		return admission{status: http.StatusForbidden, msg: "signed in as " + s.user + ", who cannot reach " + what}
	}
	return admission{subject: s.user}
}

// browser reports whether req looks like a browser navigating (a GET
// that accepts HTML): it is sent to sign in rather than answered 401.
func browser(req *http.Request) bool {
	return req.Method == http.MethodGet && strings.Contains(req.Header.Get("Accept"), "text/html")
}
