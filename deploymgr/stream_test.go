package deploymgr_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/store"
)

// streamEnv is deploymgr's API and the dashboard's sign-in on one test
// server, GitHub faked, with a log stream that rechecks its caller often.
type streamEnv struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	gh  *githubtest.Server
	srv *httptest.Server
}

func startStreams(t *testing.T) *streamEnv {
	t.Helper()
	ctx := t.Context()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "velo.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	gh := githubtest.New(t)
	app, err := github.NewApp(gh.Config(), gh.Client())
	if err != nil {
		t.Fatal(err)
	}
	e := &streamEnv{t: t, ctx: ctx, st: st, gh: gh}
	mux := http.NewServeMux()
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	sessions, err := auth.New(auth.Config{Store: st, PublicURL: e.srv.URL, App: app, CacheTTL: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := deploymgr.New(deploymgr.Config{PublicURL: e.srv.URL, StreamRecheck: 100 * time.Millisecond}, st)
	if err != nil {
		t.Fatal(err)
	}
	mgr.AddAuthenticator(sessions.Authenticator())
	mgr.SetAccess(sessions.Access())
	if _, err := mgr.EnableGitHub(deploymgr.GitHubConfig{App: app, Store: st}); err != nil {
		t.Fatal(err)
	}
	mux.Handle("/api/", mgr.Handler())
	mux.Handle("/auth/", sessions.Handler())

	gh.AddRepo("alice", "site", "main", 1)
	gh.AddUser("alice", 1)
	if err := st.CreateComponent(ctx, store.Component{Name: "site", Runtime: "wasm", Repo: "alice/site"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// signIn signs alice in through the stand-in's OAuth and returns her
// browser.
func (e *streamEnv) signIn() *http.Client {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	res, err := c.Get(e.srv.URL + auth.GitHubLoginPath)
	if err != nil {
		e.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusNotFound || !strings.HasSuffix(res.Request.URL.Path, "/") {
		e.t.Fatalf("sign-in ended at %s with %d", res.Request.URL, res.StatusCode)
	}
	return c
}

// csrf is the CSRF header value of c's session.
func (e *streamEnv) csrf(c *http.Client) string {
	for _, ck := range c.Jar.Cookies(mustURL(e.srv.URL)) {
		if ck.Name == auth.SessionCookie {
			return auth.CSRFTokenOf(ck.Value)
		}
	}
	e.t.Fatal("no session cookie")
	return ""
}

// follow opens the log stream of "site" and returns the lines it sends;
// the channel closes when the server ends the stream.
func (e *streamEnv) follow(c *http.Client, token string) <-chan string {
	e.t.Helper()
	req, _ := http.NewRequestWithContext(e.ctx, http.MethodGet, e.srv.URL+"/api/v1/components/site/logs?follow=1&tail=0", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := *c
	hc.Timeout = 0 // a stream
	res, err := hc.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		e.t.Fatalf("follow = %d", res.StatusCode)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var l api.LogLine
				if json.Unmarshal([]byte(data), &l) == nil {
					lines <- l.Line
				}
			}
		}
	}()
	return lines
}

// log appends a line to "site"'s log.
func (e *streamEnv) log(line string) {
	e.t.Helper()
	if err := e.st.AppendLogs(e.ctx, []store.LogLine{{Component: "site", Stream: "stdout", Line: line, Time: time.Now()}}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.Notify(e.ctx, store.LogsWritten("site")); err != nil {
		e.t.Fatal(err)
	}
}

// receives waits for line on the stream.
func (e *streamEnv) receives(lines <-chan string, want string) {
	e.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got, ok := <-lines:
			if !ok {
				e.t.Fatalf("stream ended before %q arrived", want)
			}
			if got == want {
				return
			}
		case <-timeout:
			e.t.Fatalf("%q did not arrive", want)
		}
	}
}

// ends waits for the server to end the stream; no line after the cut
// (secret) may arrive.
func (e *streamEnv) ends(lines <-chan string, secret string) {
	e.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		e.log(secret)
		select {
		case got, ok := <-lines:
			if !ok {
				return
			}
			if got == secret {
				e.t.Fatalf("the stream sent %q after access was gone", got)
			}
		case <-timeout:
			e.t.Fatal("the stream still runs after access was gone")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// A log stream opened with a session or a token checks, as it goes, that
// the session still exists, the token is not revoked, and the user still
// reaches the component on GitHub; it ends when any fails.
func TestLogStreamRechecksAccess(t *testing.T) {
	e := startStreams(t)

	t.Run("sign-out", func(t *testing.T) {
		e.t = t
		c := e.signIn()
		lines := e.follow(c, "")
		e.log("one")
		e.receives(lines, "one")
		// Still allowed across many rechecks: the stream goes on.
		time.Sleep(500 * time.Millisecond)
		e.log("two")
		e.receives(lines, "two")

		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+auth.LogoutPath, nil)
		req.Header.Set(auth.CSRFHeader, e.csrf(c))
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		e.ends(lines, "after sign-out")
	})

	t.Run("github access revoked", func(t *testing.T) {
		e.t = t
		c := e.signIn()
		lines := e.follow(c, "")
		e.log("three")
		e.receives(lines, "three")
		e.gh.RevokeUser("alice")
		// What GitHub said is remembered for CacheTTL (50ms here, 1m by
		// default): past it, the next check asks GitHub again.
		time.Sleep(100 * time.Millisecond)
		e.ends(lines, "after revocation")
	})

	t.Run("token revoked", func(t *testing.T) {
		e.t = t
		e.gh.SignIn("alice")
		c := e.signIn()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/tokens", strings.NewReader(`{"name":"stream"}`))
		req.Header.Set(auth.CSRFHeader, e.csrf(c))
		req.Header.Set("Content-Type", "application/json")
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var tok api.Token
		err = json.NewDecoder(res.Body).Decode(&tok)
		res.Body.Close()
		if err != nil || tok.Token == "" || tok.ID == "" {
			t.Fatalf("create token: %d %+v %v", res.StatusCode, tok, err)
		}
		lines := e.follow(http.DefaultClient, tok.Token)
		e.log("four")
		e.receives(lines, "four")
		req, _ = http.NewRequest(http.MethodDelete, e.srv.URL+"/api/v1/tokens/"+tok.ID, nil)
		req.Header.Set(auth.CSRFHeader, e.csrf(c))
		if res, err = c.Do(req); err != nil || res.StatusCode != http.StatusNoContent {
			t.Fatalf("revoke token: %v %v", res.StatusCode, err)
		}
		res.Body.Close()
		e.ends(lines, "after token revocation")
	})
}

// GET /api/v1/repos lists the repositories a user reaches through the
// App, with the component deployed from each: the dashboard's onboarding
// reads it there rather than asking GitHub itself.
func TestReposThroughAPI(t *testing.T) {
	e := startStreams(t)
	e.gh.AddRepo("alice", "blog", "main", 1)
	e.gh.AddRepo("bob", "site", "main", 2)
	c := e.signIn()
	res, err := c.Get(e.srv.URL + "/api/v1/repos")
	if err != nil {
		t.Fatal(err)
	}
	var repos []api.Repo
	err = json.NewDecoder(res.Body).Decode(&repos)
	res.Body.Close()
	want := []api.Repo{{FullName: "alice/blog"}, {FullName: "alice/site", Component: "site"}}
	if err != nil || res.StatusCode != http.StatusOK || !slices.Equal(repos, want) {
		t.Errorf("alice's GET /api/v1/repos = %d %+v %v, want %+v", res.StatusCode, repos, err, want)
	}
}
