package webui_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestDashboardAccess: a component with [access] dashboard = true is
// called with the dashboard session: its repository's user gets through
// with their identity (and without Velo's cookie), another signed-in
// user gets 403, a caller without a session 401 with WWW-Authenticate, a
// browser is sent to sign in, and a signed-out session stops working.
func TestDashboardAccess(t *testing.T) {
	gh := githubtest.New(t)
	cfg := gh.Config()
	v := startVelo(t, &cfg)
	site := gh.AddRepo("alice", "site", "main", 1)
	gh.AddRepo("bob", "other", "main", 2)
	gh.AddUser("alice", 1)
	gh.AddUser("bob", 2)
	site.Commit(map[string]string{"velo.toml": "name = \"alice-site\"\nmodule = \"echo.wasm\"\n[access]\ndashboard = true\n", "echo.wasm": string(echoWasm)}, "private site")
	res, err := gh.Push(v.ctx, v.n.URL+"/webhooks/github", site, "main", "", "")
	if err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("push: %v %v", res, err)
	}
	testsupport.Eventually(t, 60*time.Second, "alice-site live", func() bool {
		c, err := v.c.Component(v.ctx, "alice-site")
		return err == nil && c.Status == "live"
	})
	gh.SignIn("alice")
	a := v.browser()
	a.signInGitHub()
	gh.SignIn("bob")
	b := v.browser()
	b.signInGitHub()

	// Alice reaches the repository: the call goes through as her.
	testsupport.Eventually(t, 30*time.Second, "alice's call served", func() bool {
		code, _ := a.get("/fn/alice-site/env")
		return code == 200
	})
	code, env := a.get("/fn/alice-site/env")
	if code != 200 || !strings.Contains(env, "HTTP_X_VELO_AUTH_SUBJECT=github:alice\n") || strings.Contains(env, "velo_session") {
		t.Errorf("alice's call: %d\n%s", code, env)
	}
	// Bob is signed in but cannot reach alice/site.
	res, body := b.do(http.MethodGet, "/fn/alice-site/env", nil)
	if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "github:bob, who cannot reach repository alice/site") || res.Header.Get("X-Velo-Worker") != "" {
		t.Errorf("bob's call: %d %q", res.StatusCode, body)
	}
	// No session: 401 with a challenge; a browser is sent to sign in.
	anon := v.browser()
	res, body = anon.do(http.MethodGet, "/fn/alice-site/env", nil)
	if res.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), `Bearer realm="alice-site"`) || !strings.Contains(body, "sign in") {
		t.Errorf("call without a session: %d %q %q", res.StatusCode, res.Header.Get("WWW-Authenticate"), body)
	}
	res, _ = anon.do(http.MethodGet, "/fn/alice-site/env", nil, "Accept", "text/html,application/xhtml+xml")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != v.n.URL+"/" {
		t.Errorf("browser without a session: %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	// A forged cookie is no session.
	res, _ = anon.do(http.MethodGet, "/fn/alice-site/env", nil, "Cookie", "velo_session=forged")
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged session: %d", res.StatusCode)
	}
	// Alice signs out: her session, remembered by the router, is refused
	// at once (sent by hand: the sign-out clears it in her browser).
	var cookie string
	if u, err := url.Parse(v.n.URL); err == nil {
		for _, k := range a.jar.Cookies(u) {
			if k.Name == auth.SessionCookie {
				cookie = k.String()
			}
		}
	}
	res, _ = a.do(http.MethodPost, auth.LogoutPath, url.Values{"csrf": {a.csrf()}})
	if cookie == "" || res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d (cookie %q)", res.StatusCode, cookie)
	}
	testsupport.Eventually(t, 30*time.Second, "alice's signed-out session refused", func() bool {
		res, _ := anon.do(http.MethodGet, "/fn/alice-site/env", nil, "Cookie", cookie)
		return res.StatusCode == http.StatusUnauthorized
	})
}
