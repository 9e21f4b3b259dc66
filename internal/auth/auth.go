package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
	"golang.org/x/oauth2"
)

// Cookie names. Over HTTPS (PublicURL https, or a TLS request) each takes
// the __Host- prefix: the browser then keeps it only if it is Secure, has
// Path=/ and no Domain, so no sibling host (a component on its own
// subdomain) and no plain-HTTP page can plant or overwrite it. Every name
// is one of VeloCookie's, which the router strips from what components
// see and may set.
const (
	SessionCookie = "velo_session"
	stateCookie   = "velo_oauth_state"
	hostPrefix    = "__Host-"
)

// Paths served by Handler.
const (
	LoginPath       = "/login"
	GitHubLoginPath = "/auth/github/login"
	CallbackPath    = github.CallbackPath
	LogoutPath      = "/auth/logout"
)

// AdminUser is the user of admin sessions (deploymgr.AdminUser).
const AdminUser = "admin"

// githubPrefix marks users signed in with GitHub, so that no GitHub login
// (not even one named "admin") can pass for the admin.
const githubPrefix = "github:"

// GitHubUser returns the Velo user of GitHub account login.
func GitHubUser(login string) string { return githubPrefix + login }

// GitHubLogin returns the GitHub login of a Velo user, and whether it is
// one.
func GitHubLogin(user string) (string, bool) { return strings.CutPrefix(user, githubPrefix) }

// Store is what auth needs from the store.
type Store interface {
	CreateSession(ctx context.Context, s store.Session) error
	Session(ctx context.Context, hash string) (store.Session, error)
	DeleteSession(ctx context.Context, hash string) error
	DeleteExpiredSessions(ctx context.Context) (int64, error)
	PutGitHubUserToken(ctx context.Context, login, token string) error
	GitHubUserToken(ctx context.Context, login string) (string, error)
	Notify(ctx context.Context, n store.Note) error
}

// Config configures Sessions.
type Config struct {
	Store Store
	// PublicURL is where browsers reach Velo; cookies are Secure when it
	// is https, and GitHub sends users back to PublicURL + CallbackPath.
	PublicURL string
	// AdminToken signs the admin in at LoginPath?token=…
	AdminToken string
	// App enables GitHub sign-in when set and configured with a client
	// ID and secret.
	App *github.App
	// TTL is how long a session lasts (default 12h).
	TTL time.Duration
	// CacheTTL is how long a user's repositories are remembered (default
	// 1m).
	CacheTTL time.Duration
	Logger   *slog.Logger
}

// Sessions signs users in and recognizes them by their session cookie.
// Safe for concurrent use.
type Sessions struct {
	cfg    Config
	seal   *sealer // seals users' GitHub tokens; nil without an OAuth client
	secure bool
	log    *slog.Logger
	access *Access
}

// New returns Sessions for cfg.
func New(cfg Config) (*Sessions, error) {
	if cfg.Store == nil {
		return nil, errors.New("auth: Store is required")
	}
	if cfg.PublicURL == "" {
		return nil, errors.New("auth: PublicURL is required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 12 * time.Hour
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	seal, err := newSealer(cfg.App)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	s := &Sessions{cfg: cfg, seal: seal, secure: strings.HasPrefix(cfg.PublicURL, "https://"), log: cfg.Logger}
	s.access = newAccess(cfg.App, seal, cfg.Store, cfg.CacheTTL, cfg.Logger)
	return s, nil
}

// Access returns the repository access of signed-in users, for
// deploymgr.Manager.SetAccess.
func (s *Sessions) Access() *Access { return s.access }

// LoginURL is the one-click admin sign-in URL.
func (s *Sessions) LoginURL() string {
	return s.cfg.PublicURL + LoginPath + "?token=" + s.cfg.AdminToken
}

// Handler serves LoginPath, GitHubLoginPath, CallbackPath and LogoutPath.
func (s *Sessions) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+LoginPath, s.adminLogin)
	mux.HandleFunc("POST "+LoginPath, s.adminLoginForm)
	mux.HandleFunc("GET "+GitHubLoginPath, s.githubLogin)
	mux.HandleFunc("GET "+CallbackPath, s.callback)
	mux.HandleFunc("POST "+LogoutPath, s.logout)
	return mux
}

// Authenticator returns a function that recognizes a request's session
// cookie, in the shape of deploymgr.Authenticator. A state-changing request
// must also carry the session's CSRF token in CSRFHeader, or it is not
// recognized.
func (s *Sessions) Authenticator() func(r *http.Request) (string, bool) {
	return func(r *http.Request) (string, bool) {
		user, ok := s.User(r)
		if ok && !safeMethod(r.Method) && !s.ValidCSRF(r, r.Header.Get(CSRFHeader)) {
			s.log.Warn("session request without its CSRF token refused", "method", r.Method, "path", r.URL.Path, "user", user)
			return "", false
		}
		return user, ok
	}
}

// User returns the user of the request's session, if it has a live one.
func (s *Sessions) User(r *http.Request) (string, bool) {
	secret := s.sessionSecret(r)
	if secret == "" {
		return "", false
	}
	se, err := s.cfg.Store.Session(r.Context(), hashSecret(secret))
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("read session failed", "err", err)
		}
		return "", false
	}
	return se.User, true
}

// secureRequest reports whether r reached Velo over HTTPS as browsers see
// it: PublicURL says https (a TLS-terminating proxy in front) or r came
// over TLS.
func (s *Sessions) secureRequest(r *http.Request) bool { return s.secure || r.TLS != nil }

// cookieName is the name cookie base has on r: __Host-base over HTTPS.
func (s *Sessions) cookieName(r *http.Request, base string) string {
	if s.secureRequest(r) {
		return hostPrefix + base
	}
	return base
}

// SessionCookieName is the name of the session cookie on r: velo_session,
// or __Host-velo_session over HTTPS.
func (s *Sessions) SessionCookieName(r *http.Request) string { return s.cookieName(r, SessionCookie) }

// cookieValue returns the value of cookie base on r, "" without one. Over
// HTTPS only the __Host- cookie counts: a plain one may have been planted.
func (s *Sessions) cookieValue(r *http.Request, base string) string {
	c, err := r.Cookie(s.cookieName(r, base))
	if err != nil {
		return ""
	}
	return c.Value
}

// sessionSecret is the secret in r's session cookie, "" without one.
func (s *Sessions) sessionSecret(r *http.Request) string { return s.cookieValue(r, SessionCookie) }

// setCookie sets (maxAge > 0) or clears (maxAge < 0) cookie base for r's
// scheme: HttpOnly, SameSite=Lax, Path=/, no Domain, and Secure with the
// __Host- prefix over HTTPS.
func (s *Sessions) setCookie(w http.ResponseWriter, r *http.Request, base, value string, maxAge int) {
	c := &http.Cookie{
		Name: s.cookieName(r, base), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secureRequest(r), SameSite: http.SameSiteLaxMode,
	}
	if maxAge > 0 {
		c.Expires = time.Now().Add(time.Duration(maxAge) * time.Second)
	}
	http.SetCookie(w, c)
}

// hashSecret is how session secrets are stored.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// startSession creates a session for user and sets its cookie.
func (s *Sessions) startSession(w http.ResponseWriter, r *http.Request, user string) error {
	secret := rand.Text() + rand.Text()
	exp := time.Now().Add(s.cfg.TTL)
	if err := s.cfg.Store.CreateSession(r.Context(), store.Session{Hash: hashSecret(secret), User: user, ExpiresAt: exp}); err != nil {
		return err
	}
	if n, err := s.cfg.Store.DeleteExpiredSessions(r.Context()); err == nil && n > 0 {
		s.log.Debug("expired sessions removed", "count", n)
	}
	s.setCookie(w, r, SessionCookie, secret, int(time.Until(exp).Seconds()))
	s.log.Info("signed in", "user", user)
	return nil
}

// adminLogin serves GET /login?token=…: the admin token buys an admin
// session, and the redirect takes the token out of the address bar.
func (s *Sessions) adminLogin(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	if s.cfg.AdminToken == "" || tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.AdminToken)) != 1 {
		http.Error(w, "invalid sign-in link: use the one `velo up` printed", http.StatusUnauthorized)
		return
	}
	if err := s.startSession(w, r, AdminUser); err != nil {
		s.log.Error("create admin session failed", "err", err)
		http.Error(w, "could not create a session", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Sessions) oauthEnabled() bool {
	return s.cfg.App != nil && s.cfg.App.Config().ClientID != ""
}

func (s *Sessions) redirectURL() string { return s.cfg.PublicURL + CallbackPath }

// githubLogin sends the browser to GitHub's consent page with a fresh
// state and PKCE challenge, their state and verifier remembered in a
// short-lived cookie: the code GitHub sends back is then worth something
// only to this browser's sign-in (a code stolen from the redirect, or
// planted into another browser's callback, fails the exchange).
func (s *Sessions) githubLogin(w http.ResponseWriter, r *http.Request) {
	if !s.oauthEnabled() {
		http.Error(w, "GitHub sign-in is not configured (see docs/github.md)", http.StatusNotFound)
		return
	}
	state, verifier := rand.Text(), oauth2.GenerateVerifier()
	s.setCookie(w, r, stateCookie, state+"."+verifier, 600)
	http.Redirect(w, r, s.cfg.App.AuthCodeURL(s.redirectURL(), state, verifier), http.StatusFound)
}

// callback completes GitHub sign-in: it checks state against the cookie,
// trades the code and the cookie's PKCE verifier for the user's token, and
// starts a session.
func (s *Sessions) callback(w http.ResponseWriter, r *http.Request) {
	if !s.oauthEnabled() {
		http.Error(w, "GitHub sign-in is not configured", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	state, verifier, _ := strings.Cut(s.cookieValue(r, stateCookie), ".")
	if state == "" || verifier == "" || subtle.ConstantTimeCompare([]byte(state), []byte(q.Get("state"))) != 1 {
		http.Error(w, "sign-in expired or did not start here: sign in again", http.StatusBadRequest)
		return
	}
	s.setCookie(w, r, stateCookie, "", -1)
	if e := q.Get("error"); e != "" {
		http.Error(w, "GitHub sign-in refused: "+e, http.StatusForbidden)
		return
	}
	login, err := s.signIn(r.Context(), q.Get("code"), verifier)
	if err != nil {
		s.log.Warn("github sign-in failed", "err", err)
		http.Error(w, "GitHub sign-in failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	if err := s.startSession(w, r, GitHubUser(login)); err != nil {
		s.log.Error("create session failed", "err", err)
		http.Error(w, "could not create a session", http.StatusInternalServerError)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// signIn trades an OAuth code for the user's token and records it.
func (s *Sessions) signIn(ctx context.Context, code, verifier string) (string, error) {
	if code == "" {
		return "", errors.New("no code in the callback")
	}
	tok, err := s.cfg.App.ExchangeCode(ctx, s.redirectURL(), code, verifier)
	if err != nil {
		return "", err
	}
	login, _, err := s.cfg.App.User(ctx, tok)
	if err != nil {
		return "", err
	}
	if s.seal == nil {
		return "", errors.New("GitHub sign-in needs the App's OAuth client secret")
	}
	if err := s.cfg.Store.PutGitHubUserToken(ctx, login, s.seal.seal(login, tok)); err != nil {
		return "", fmt.Errorf("record user token: %w", err)
	}
	s.access.forget(GitHubUser(login))
	return login, nil
}

// logout ends the session and clears its cookie.
func (s *Sessions) logout(w http.ResponseWriter, r *http.Request) {
	if tok := r.Header.Get(CSRFHeader); s.CSRFToken(r) != "" && !s.ValidCSRF(r, tok) && !s.ValidCSRF(r, r.PostFormValue(CSRFField)) {
		http.Error(w, "sign-out refused: missing or wrong CSRF token (sign out from the dashboard)", http.StatusForbidden)
		return
	}
	if secret := s.sessionSecret(r); secret != "" {
		hash := hashSecret(secret)
		if err := s.cfg.Store.DeleteSession(r.Context(), hash); err != nil {
			s.log.Warn("delete session failed", "err", err)
		} else if err := s.cfg.Store.Notify(r.Context(), store.SessionEnded(hash)); err != nil {
			// The routers then forget it when their entry expires.
			s.log.Warn("tell the routers of a sign-out failed", "err", err)
		}
	}
	s.setCookie(w, r, SessionCookie, "", -1)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// SessionSecret is the secret of r's session cookie, "" without one (for
// the router, which checks sessions for components with [access]
// dashboard = true before it strips Velo's cookies).
func (s *Sessions) SessionSecret(r *http.Request) string { return s.sessionSecret(r) }

// SessionUser returns the user of the live session whose cookie holds
// secret and when the session ends; ok false when there is none.
func (s *Sessions) SessionUser(ctx context.Context, secret string) (user string, expires time.Time, ok bool, err error) {
	if secret == "" {
		return "", time.Time{}, false, nil
	}
	se, err := s.cfg.Store.Session(ctx, hashSecret(secret))
	if errors.Is(err, store.ErrNotFound) {
		return "", time.Time{}, false, nil
	}
	if err != nil {
		return "", time.Time{}, false, err
	}
	return se.User, se.ExpiresAt, true, nil
}

// Repos is Access().Repos asked now, not remembered: the repositories
// user can reach, for the router, which remembers the answer itself (for
// at most a minute; remembered here too, a lost repository would count
// only after both had expired). GitHub failing to answer is an error
// (the router says "try again" rather than remember no repositories);
// GitHub refusing the user's token means none.
func (s *Sessions) Repos(ctx context.Context, user string) (all bool, repos []string, err error) {
	return s.access.repos(ctx, user, false)
}
