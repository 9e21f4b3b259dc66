package auth

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/store"
)

func newSessions(t *testing.T, publicURL string, app *github.App) (*Sessions, *store.Store) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "velo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	s, err := New(Config{Store: st, PublicURL: publicURL, AdminToken: "secret-admin", App: app, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

// login signs the admin in and returns the session cookie.
func login(t *testing.T, s *Sessions) *http.Cookie {
	t.Helper()
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/login?token=secret-admin", nil))
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("admin login = %d", rec.Code)
	}
	for _, c := range rec.Result().Cookies() {
		if c.Name == SessionCookie || c.Name == hostPrefix+SessionCookie {
			return c
		}
	}
	t.Fatal("no session cookie")
	return nil
}

func TestSessionCookieSecureOverHTTPS(t *testing.T) {
	for _, tc := range []struct {
		url    string
		secure bool
	}{{"https://velo.example.test", true}, {"http://127.0.0.1:8080", false}} {
		s, _ := newSessions(t, tc.url, nil)
		c := login(t, s)
		if c.Secure != tc.secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
			t.Errorf("%s: cookie Secure=%v HttpOnly=%v SameSite=%v", tc.url, c.Secure, c.HttpOnly, c.SameSite)
		}
	}
}

func TestSessionsStoredHashedAndExpire(t *testing.T) {
	s, st := newSessions(t, "http://127.0.0.1:8080", nil)
	c := login(t, s)
	req := httptest.NewRequest(http.MethodGet, "/api/v1/components", nil)
	req.AddCookie(c)
	if user, ok := s.User(req); !ok || user != AdminUser {
		t.Fatalf("User = %q, %v", user, ok)
	}
	if _, err := st.Session(context.Background(), c.Value); err == nil {
		t.Error("session stored under its secret")
	}
	// A session past its expiry is not accepted.
	if err := st.CreateSession(context.Background(), store.Session{Hash: hashSecret("old"), User: AdminUser, ExpiresAt: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	req = httptest.NewRequest(http.MethodGet, "/", nil)
	req.AddCookie(&http.Cookie{Name: SessionCookie, Value: "old"})
	if _, ok := s.User(req); ok {
		t.Error("expired session accepted")
	}
	// Bad admin tokens get nothing.
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/login?token=secret-admiN", nil))
	if rec.Code != http.StatusUnauthorized || len(rec.Result().Cookies()) != 0 {
		t.Errorf("bad admin token: %d, cookies %v", rec.Code, rec.Result().Cookies())
	}
}

// A GitHub account named "admin" is not the admin.
func TestGitHubUserIsNeverAdmin(t *testing.T) {
	gh := githubtest.New(t)
	app, err := github.NewApp(gh.Config(), gh.Client())
	if err != nil {
		t.Fatal(err)
	}
	gh.AddRepo("admin", "x", "main", 9)
	tok := gh.AddUser("admin", 9)
	s, st := newSessions(t, "http://127.0.0.1:8080", app)
	if err := st.PutGitHubUserToken(context.Background(), "admin", s.seal.seal("admin", tok)); err != nil {
		t.Fatal(err)
	}
	all, repos, err := s.Access().Repos(context.Background(), GitHubUser("admin"))
	if err != nil || all || len(repos) != 1 || repos[0] != "admin/x" {
		t.Errorf("Repos(github:admin) = %v %v %v", all, repos, err)
	}
	if all, _, _ := s.Access().Repos(context.Background(), "someone"); all {
		t.Error("an unknown user sees everything")
	}
	// The answer is remembered: a repository added later shows after the
	// cache expires or the user signs in again.
	gh.AddRepo("admin", "y", "main", 9)
	if _, repos, _ := s.Access().Repos(context.Background(), GitHubUser("admin")); len(repos) != 1 {
		t.Errorf("cached repos = %v", repos)
	}
	s.access.forget(GitHubUser("admin"))
	if _, repos, _ := s.Access().Repos(context.Background(), GitHubUser("admin")); len(repos) != 2 || !strings.HasPrefix(repos[1], "admin/") {
		t.Errorf("repos after forget = %v", repos)
	}
}

func TestCallbackChecksState(t *testing.T) {
	gh := githubtest.New(t)
	app, err := github.NewApp(gh.Config(), gh.Client())
	if err != nil {
		t.Fatal(err)
	}
	s, _ := newSessions(t, "http://127.0.0.1:8080", app)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, GitHubLoginPath, nil))
	if rec.Code != http.StatusFound || !strings.HasPrefix(rec.Header().Get("Location"), gh.WebURL()+"/login/oauth/authorize?") {
		t.Fatalf("login = %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	var state *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == stateCookie || c.Name == hostPrefix+stateCookie {
			state = c
		}
	}
	if state == nil || !state.HttpOnly {
		t.Fatalf("state cookie = %+v", state)
	}
	req := httptest.NewRequest(http.MethodGet, CallbackPath+"?code=abc&state=other", nil)
	req.AddCookie(state)
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Errorf("callback with a wrong state = %d, want 400", rec.Code)
	}
}

// TestGitHubTokensSealed: users' GitHub tokens are stored encrypted, bound
// to their login; a token stored in plain, copied to another user, or
// sealed under another client secret gives no access (sign in again).
func TestGitHubTokensSealed(t *testing.T) {
	ctx := context.Background()
	gh := githubtest.New(t)
	app, err := github.NewApp(gh.Config(), gh.Client())
	if err != nil {
		t.Fatal(err)
	}
	gh.AddRepo("alice", "app", "main", 7)
	tok := gh.AddUser("alice", 7)
	gh.AddUser("bob", 7)
	s, st := newSessions(t, "http://127.0.0.1:8080", app)
	repos := func(user string) []string {
		t.Helper()
		s.access.forget(GitHubUser(user))
		all, repos, err := s.Access().Repos(ctx, GitHubUser(user))
		if err != nil || all {
			t.Fatalf("Repos(%s) = %v %v %v", user, all, repos, err)
		}
		return repos
	}

	sealed := s.seal.seal("alice", tok)
	if strings.Contains(sealed, tok) || !strings.HasPrefix(sealed, sealPrefix) {
		t.Fatalf("sealed token %q shows the token", sealed)
	}
	if again := s.seal.seal("alice", tok); again == sealed {
		t.Error("two seals of one token are equal (nonce reused)")
	}
	if err := st.PutGitHubUserToken(ctx, "alice", sealed); err != nil {
		t.Fatal(err)
	}
	if got := repos("alice"); len(got) != 1 || got[0] != "alice/app" {
		t.Fatalf("alice's repos with a sealed token = %v", got)
	}

	// Copied to bob's row: bound to alice, it does not open.
	if err := st.PutGitHubUserToken(ctx, "bob", sealed); err != nil {
		t.Fatal(err)
	}
	if got := repos("bob"); len(got) != 0 {
		t.Errorf("bob with alice's sealed token sees %v", got)
	}
	// Stored in plain (before tokens were sealed): not used.
	if err := st.PutGitHubUserToken(ctx, "alice", tok); err != nil {
		t.Fatal(err)
	}
	if got := repos("alice"); len(got) != 0 {
		t.Errorf("a plain stored token gave %v", got)
	}
	// Sealed under another client secret (rotated): not used.
	cfg := gh.Config()
	cfg.ClientSecret = "rotated-" + cfg.ClientSecret
	other, err := github.NewApp(cfg, gh.Client())
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := newSealer(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutGitHubUserToken(ctx, "alice", rotated.seal("alice", tok)); err != nil {
		t.Fatal(err)
	}
	if got := repos("alice"); len(got) != 0 {
		t.Errorf("a token sealed under another secret gave %v", got)
	}
	if _, err := s.seal.open("alice", "v1.not-base64!"); err == nil {
		t.Error("a malformed sealed token opened")
	}
}

func TestVeloCookie(t *testing.T) {
	for name, want := range map[string]bool{
		"velo_session": true, "velo_oauth_state": true, "__Host-velo_session": true,
		"__Secure-velo_session": true, "__host-VELO_session": true, "velo_": true,
		"velo": false, "session": false, "__Host-session": false, "xvelo_session": false,
		"__Host-__Secure-velo_x": false, "": false,
	} {
		if got := VeloCookie(name); got != want {
			t.Errorf("VeloCookie(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestReposAskedNow: Sessions.Repos (the router's) asks GitHub each time:
// GitHub refusing the user's token means no repositories, GitHub not
// answering is an error (the router then says "try again" instead of
// remembering no access for a minute).
func TestReposAskedNow(t *testing.T) {
	ctx := context.Background()
	gh := githubtest.New(t)
	app, err := github.NewApp(gh.Config(), gh.Client())
	if err != nil {
		t.Fatal(err)
	}
	gh.AddRepo("alice", "app", "main", 7)
	tok := gh.AddUser("alice", 7)
	s, st := newSessions(t, "http://127.0.0.1:8080", app)
	if err := st.PutGitHubUserToken(ctx, "alice", s.seal.seal("alice", tok)); err != nil {
		t.Fatal(err)
	}
	if _, repos, err := s.Repos(ctx, GitHubUser("alice")); err != nil || len(repos) != 1 {
		t.Fatalf("alice's repos = %v %v", repos, err)
	}

	// GitHub away: an error, for this one and for the dashboard's cached
	// Access none.
	cfg := gh.Config()
	cfg.APIURL = "http://127.0.0.1:1/" // nothing listens on port 1
	down, err := github.NewApp(cfg, &http.Client{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	d, dst := newSessions(t, "http://127.0.0.1:8080", down)
	if err := dst.PutGitHubUserToken(ctx, "alice", d.seal.seal("alice", tok)); err != nil {
		t.Fatal(err)
	}
	if _, repos, err := d.Repos(ctx, GitHubUser("alice")); err == nil {
		t.Errorf("with GitHub away: repos %v and no error", repos)
	}
	if _, repos, err := d.Access().Repos(ctx, GitHubUser("alice")); err != nil || len(repos) != 0 {
		t.Errorf("the dashboard's Access with GitHub away: %v %v, want none", repos, err)
	}

	// The token revoked on GitHub: no repositories, no error.
	gh.RevokeUser("alice")
	if _, repos, err := s.Repos(ctx, GitHubUser("alice")); err != nil || len(repos) != 0 {
		t.Errorf("with the token revoked: %v %v, want none and no error", repos, err)
	}
}

// TestAccessCacheBounded: however many users sign in, Access remembers the
// repositories of at most maxCachedUsers, expired ones going first.
func TestAccessCacheBounded(t *testing.T) {
	a := newAccess(nil, nil, nil, time.Minute, slog.New(slog.DiscardHandler))
	a.cache["github:old"] = cachedRepos{expires: time.Now().Add(-time.Second)}
	for i := range maxCachedUsers + 100 {
		a.remember(fmt.Sprintf("github:u%d", i), []string{"o/r"})
	}
	if n := len(a.cache); n > maxCachedUsers {
		t.Fatalf("%d users remembered, want at most %d", n, maxCachedUsers)
	}
	if _, ok := a.cache["github:old"]; ok {
		t.Error("the expired entry outlived a full cache")
	}
	if c, ok := a.cache[fmt.Sprintf("github:u%d", maxCachedUsers+99)]; !ok || len(c.repos) != 1 {
		t.Error("the newest user is not remembered")
	}
}
