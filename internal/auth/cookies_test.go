package auth

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
)

// cookieNamed returns the cookie the answer set under name, or nil.
func cookieNamed(rec *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range rec.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Over HTTPS the dashboard's cookies take the __Host- prefix (Secure,
// Path=/, no Domain), so that no sibling host or plain-HTTP page can plant
// one; over plain HTTP they keep their plain names. Every name is one of
// VeloCookie's.
func TestHostPrefixOverHTTPS(t *testing.T) {
	gh := githubtest.New(t)
	app, err := github.NewApp(gh.Config(), gh.Client())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what      string
		publicURL string
		tls       bool
		prefix    string
	}{
		{"https public URL", "https://velo.example.test", false, "__Host-"},
		{"TLS request", "http://127.0.0.1:8080", true, "__Host-"},
		{"plain HTTP", "http://127.0.0.1:8080", false, ""},
	} {
		t.Run(tc.what, func(t *testing.T) {
			s, _ := newSessions(t, tc.publicURL, app)
			req := func(target string) *http.Request {
				r := httptest.NewRequest(http.MethodGet, target, nil)
				if tc.tls {
					r.TLS = &tls.ConnectionState{}
				}
				return r
			}
			for _, step := range []struct{ path, cookie string }{
				{"/login?token=secret-admin", SessionCookie},
				{GitHubLoginPath, stateCookie},
			} {
				rec := httptest.NewRecorder()
				s.Handler().ServeHTTP(rec, req(step.path))
				c := cookieNamed(rec, tc.prefix+step.cookie)
				if c == nil {
					t.Fatalf("%s: no cookie %s%s among %v", step.path, tc.prefix, step.cookie, rec.Result().Cookies())
				}
				if c.Secure != (tc.prefix != "") || c.Path != "/" || c.Domain != "" || !c.HttpOnly {
					t.Errorf("%s: %s Secure=%v Path=%q Domain=%q HttpOnly=%v", step.path, c.Name, c.Secure, c.Path, c.Domain, c.HttpOnly)
				}
				if !VeloCookie(c.Name) {
					t.Errorf("%s is not one of VeloCookie's names: the router would let components see it", c.Name)
				}
				if step.cookie != SessionCookie {
					continue
				}
				r := req("/")
				r.AddCookie(c)
				if user, ok := s.User(r); !ok || user != AdminUser || s.CSRFToken(r) == "" {
					t.Errorf("session cookie %s not recognized", c.Name)
				}
				if tc.prefix != "" {
					// A plain-named cookie over HTTPS may have been planted
					// (by a sibling host, or over HTTP): it counts for nothing.
					r := req("/")
					r.AddCookie(&http.Cookie{Name: SessionCookie, Value: c.Value})
					if _, ok := s.User(r); ok {
						t.Errorf("over HTTPS a plain %s cookie was accepted", SessionCookie)
					}
				}
			}
		})
	}
}

// The sign-in binds GitHub's code to the browser that started it (PKCE,
// S256): the code of one sign-in replayed into another browser's callback
// (login CSRF, a code stolen from a redirect) fails the exchange, and no
// session starts.
func TestGitHubSignInPKCE(t *testing.T) {
	gh := githubtest.New(t)
	app, err := github.NewApp(gh.Config(), gh.Client())
	if err != nil {
		t.Fatal(err)
	}
	gh.AddUser("mallory")
	s, _ := newSessions(t, "http://127.0.0.1:8080", app)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	// start begins a sign-in and returns the state cookie and the code
	// GitHub sends back.
	start := func() (*http.Cookie, url.Values) {
		t.Helper()
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, GitHubLoginPath, nil))
		authURL, err := url.Parse(rec.Header().Get("Location"))
		if err != nil || authURL.Query().Get("code_challenge_method") != "S256" || len(authURL.Query().Get("code_challenge")) != 43 {
			t.Fatalf("authorize redirect without an S256 PKCE challenge: %s", rec.Header().Get("Location"))
		}
		c := cookieNamed(rec, stateCookie)
		if c == nil || strings.Contains(authURL.String(), strings.SplitN(c.Value, ".", 2)[1]) {
			t.Fatalf("state cookie %v (the verifier must not travel to GitHub)", c)
		}
		res, err := noFollow.Get(authURL.String())
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		back, err := url.Parse(res.Header.Get("Location"))
		if err != nil || res.StatusCode != http.StatusFound {
			t.Fatalf("authorize = %d %s", res.StatusCode, res.Header.Get("Location"))
		}
		return c, back.Query()
	}
	callback := func(c *http.Cookie, q url.Values) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, CallbackPath+"?"+q.Encode(), nil)
		req.AddCookie(c)
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		return rec
	}

	// Mallory's code, planted into the victim's sign-in (the victim's own
	// state, so the state check passes), is refused: it was issued to
	// Mallory's verifier.
	_, malloryQ := start()
	victimCookie, victimQ := start()
	planted := url.Values{"code": {malloryQ.Get("code")}, "state": {victimQ.Get("state")}}
	if rec := callback(victimCookie, planted); rec.Code != http.StatusBadGateway || cookieNamed(rec, SessionCookie) != nil {
		t.Errorf("a code of another sign-in: %d, cookies %v; want 502 and no session", rec.Code, rec.Result().Cookies())
	}
	// A cookie without its verifier (as before PKCE) is refused.
	if rec := callback(&http.Cookie{Name: stateCookie, Value: victimQ.Get("state")}, victimQ); rec.Code != http.StatusBadRequest {
		t.Errorf("state cookie without a verifier: %d, want 400", rec.Code)
	}
	// The victim's own code and cookie sign in.
	if rec := callback(victimCookie, victimQ); rec.Code != http.StatusSeeOther || cookieNamed(rec, SessionCookie) == nil {
		t.Errorf("own sign-in: %d, cookies %v", rec.Code, rec.Result().Cookies())
	}
}
