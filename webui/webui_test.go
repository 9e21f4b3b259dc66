package webui_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// Signed out, every page is the sign-in page and nothing about any
// component shows; no action does anything.
func TestSignedOutRevealsNothing(t *testing.T) {
	v := startVelo(t, nil)
	d := v.deploy("topsecret", echoFiles(map[string]string{"PASSWORD": "hunter2"}))
	b := v.browser()
	for _, path := range []string{
		"/", "/new", "/components/topsecret", "/components/topsecret?range=24h",
		fmt.Sprintf("/components/topsecret/deployments/%d", d.ID), "/no/such/page",
	} {
		code, body := b.get(path)
		want := http.StatusUnauthorized
		if path == "/" {
			want = http.StatusOK
		}
		if code != want || !strings.Contains(body, "Sign in to Velo") {
			t.Errorf("GET %s signed out = %d, want the sign-in page with %d", path, code, want)
		}
		for _, secret := range []string{"topsecret", "hunter2", d.Digest} {
			if strings.Contains(body, secret) {
				t.Errorf("GET %s signed out shows %q", path, secret)
			}
		}
	}
	// Without a session, actions fail and change nothing.
	for _, action := range []string{"pause", "delete", "rollback"} {
		res, body := b.do(http.MethodPost, "/components/topsecret/"+action, url.Values{"confirm": {"topsecret"}, "csrf": {"x"}})
		if res.StatusCode != http.StatusUnauthorized || strings.Contains(body, "topsecret") {
			t.Errorf("POST %s signed out = %d", action, res.StatusCode)
		}
	}
	if c, err := v.c.Component(v.ctx, "topsecret"); err != nil || c.Paused {
		t.Errorf("after signed-out actions: %+v %v", c, err)
	}
	// The sign-in page offers the admin token form and explains the link,
	// but no GitHub button when GitHub is not configured.
	_, body := b.get("/")
	for _, want := range []string{`action="/login"`, "velo up", "dashboard:"} {
		if !strings.Contains(body, want) {
			t.Errorf("sign-in page lacks %q", want)
		}
	}
	if strings.Contains(body, "Sign in with GitHub") {
		t.Error("GitHub sign-in offered without GitHub")
	}
	// A wrong pasted token gets no session; the right one does.
	res, _ := b.do(http.MethodPost, "/login", url.Values{"token": {"wrong"}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/?signin=failed" || len(res.Cookies()) != 0 {
		t.Errorf("wrong token: %d to %q, cookies %v", res.StatusCode, res.Header.Get("Location"), res.Cookies())
	}
	if _, body := b.get("/?signin=failed"); !strings.Contains(body, "That token is not right") {
		t.Error("no message after a wrong token")
	}
	res, _ = b.do(http.MethodPost, "/login", url.Values{"token": {v.n.Token}})
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Fatalf("pasted token: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	if code, body := b.get("/"); code != 200 || !strings.Contains(body, `href="/components/topsecret"`) {
		t.Errorf("after pasting the token: %d", code)
	}
}

// Every dashboard response carries the security headers.
func TestSecurityHeaders(t *testing.T) {
	v := startVelo(t, nil)
	v.deploy("echo", echoFiles(nil))
	out, in := v.browser(), v.browser()
	in.signInAdmin()
	check := func(who string, res *http.Response) {
		t.Helper()
		h := res.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s %s: CSP %q lacks %s", who, res.Request.URL.Path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s %s: CSP allows inline code: %q", who, res.Request.URL.Path, csp)
		}
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"} {
			if got := h.Get(k); got != want {
				t.Errorf("%s %s: %s = %q, want %q", who, res.Request.URL.Path, k, got, want)
			}
		}
	}
	for _, path := range []string{"/", "/new", "/components/echo", "/components/echo/deployments/1", "/components/nope", "/static/velo.css", "/static/velo.js", "/nope"} {
		for who, b := range map[string]*browser{"signed out": out, "signed in": in} {
			res, body := b.do(http.MethodGet, path, nil)
			check(who, res)
			if strings.HasSuffix(path, ".html") || res.Header.Get("Content-Type") == "text/html; charset=utf-8" {
				// No inline script or style: the CSP would block them.
				if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, " onclick=") {
					t.Errorf("%s %s: inline script or style in the page", who, path)
				}
			}
		}
	}
	res, _ := in.do(http.MethodPost, "/components/echo/pause", url.Values{})
	check("signed in", res)
	// Static files have their types.
	for path, ct := range map[string]string{"/static/velo.css": "text/css; charset=utf-8", "/static/velo.js": "text/javascript; charset=utf-8"} {
		if res, _ := in.do(http.MethodGet, path, nil); res.StatusCode != 200 || res.Header.Get("Content-Type") != ct {
			t.Errorf("%s = %d %q", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
}

// State changes with a session cookie need the session's CSRF token, in the
// dashboard's forms and on the REST API; with a bearer token they do not.
func TestCSRF(t *testing.T) {
	v := startVelo(t, nil)
	v.deploy("echo", echoFiles(nil))
	b, other := v.browser(), v.browser()
	b.signInAdmin()
	other.signInAdmin()
	tok, otherTok := b.csrf(), other.csrf()
	if tok == otherTok {
		t.Fatal("two sessions share a CSRF token")
	}
	paused := func() bool {
		c, err := v.c.Component(v.ctx, "echo")
		if err != nil {
			t.Fatal(err)
		}
		return c.Paused
	}
	for name, form := range map[string]url.Values{
		"no token":                {},
		"wrong token":             {"csrf": {strings.Repeat("0", 64)}},
		"another session's token": {"csrf": {otherTok}},
	} {
		res, body := b.do(http.MethodPost, "/components/echo/pause", form)
		if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "expired") {
			t.Errorf("form, %s: %d", name, res.StatusCode)
		}
		res, _ = b.do(http.MethodPost, "/components/echo/delete", url.Values{"confirm": {"echo"}, "csrf": form["csrf"]})
		if res.StatusCode != http.StatusForbidden {
			t.Errorf("delete form, %s: %d", name, res.StatusCode)
		}
		// The REST API with the cookie alone.
		res, _ = b.do(http.MethodPost, "/api/v1/components/echo/pause", nil, auth.CSRFHeader, form.Get("csrf"))
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("API with cookie, %s: %d, want 401", name, res.StatusCode)
		}
		res, _ = b.do(http.MethodDelete, "/api/v1/components/echo", nil, auth.CSRFHeader, form.Get("csrf"))
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("API DELETE with cookie, %s: %d, want 401", name, res.StatusCode)
		}
	}
	if paused() {
		t.Fatal("paused by a forged request")
	}
	if _, err := v.c.Component(v.ctx, "echo"); err != nil {
		t.Fatalf("deleted by a forged request: %v", err)
	}
	// Reads need no token.
	if res, _ := b.do(http.MethodGet, "/api/v1/components/echo", nil); res.StatusCode != 200 {
		t.Errorf("API GET with cookie: %d", res.StatusCode)
	}
	// The right token works, in a form and in the header.
	res, _ := b.do(http.MethodPost, "/components/echo/pause", url.Values{"csrf": {tok}})
	if res.StatusCode != http.StatusSeeOther || !paused() {
		t.Fatalf("form with the token: %d, paused %v", res.StatusCode, paused())
	}
	res, _ = b.do(http.MethodPost, "/api/v1/components/echo/resume", nil, auth.CSRFHeader, tok)
	if res.StatusCode != 200 || paused() {
		t.Fatalf("API with the token: %d, paused %v", res.StatusCode, paused())
	}
	// A bearer token needs no CSRF token.
	res, _ = v.browser().do(http.MethodPost, "/api/v1/components/echo/pause", nil, "Authorization", "Bearer "+v.n.Token)
	if res.StatusCode != 200 || !paused() {
		t.Errorf("API with a bearer token: %d", res.StatusCode)
	}
	// Sign-out needs the token too.
	if res, _ := b.do(http.MethodPost, auth.LogoutPath, url.Values{}); res.StatusCode != http.StatusForbidden {
		t.Errorf("sign-out without the token: %d", res.StatusCode)
	}
	if code, _ := b.get("/components/echo"); code != 200 {
		t.Fatalf("forged sign-out ended the session: %d", code)
	}
	if res, _ := b.do(http.MethodPost, auth.LogoutPath, url.Values{"csrf": {tok}}); res.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-out: %d", res.StatusCode)
	}
	if code, _ := b.get("/components/echo"); code != http.StatusUnauthorized {
		t.Errorf("after sign-out: %d", code)
	}
}

const hostile = `<script>alert("x")</script><img src=x onerror=alert(1)>`

// Text from components and commits is escaped wherever it shows.
func TestEscaping(t *testing.T) {
	v := startVelo(t, nil)
	d := v.deploy("echo", echoFiles(map[string]string{"EVIL": hostile}))
	if err := v.n.Store.AppendLogs(v.ctx, []store.LogLine{{Component: "echo", Deployment: d.ID, Time: time.Now(), Stream: "stderr", Line: hostile}}); err != nil {
		t.Fatal(err)
	}
	if err := v.n.Store.AppendBuildLog(v.ctx, d.ID, hostile+"\n"); err != nil {
		t.Fatal(err)
	}
	b := v.browser()
	b.signInAdmin()
	for _, path := range []string{"/components/echo", fmt.Sprintf("/components/echo/deployments/%d", d.ID)} {
		code, body := b.get(path)
		if code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
			t.Errorf("%s: hostile text not escaped", path)
		}
		if !strings.Contains(body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Errorf("%s: hostile text not shown escaped", path)
		}
	}
	// Error messages from the API are escaped too.
	if code, body := b.get("/components/" + url.PathEscape(`<b>x</b>`)); code != http.StatusNotFound || strings.Contains(body, "<b>x</b>") {
		t.Errorf("unknown hostile name: %d", code)
	}
}

// Two GitHub users each see and control only the components of the
// repositories their account reaches, on every page and action; a hostile
// commit message is escaped; onboarding lists each one's repositories with
// a Start button.
func TestTwoGitHubUsers(t *testing.T) {
	gh := githubtest.New(t)
	cfg := gh.Config()
	v := startVelo(t, &cfg)
	wasm := string(echoWasm)
	alice := gh.AddRepo("alice", "site", "main", 1)
	blog := gh.AddRepo("alice", "blog", "main", 1)
	bob := gh.AddRepo("bob", "site", "main", 2)
	gh.AddUser("alice", 1)
	gh.AddUser("bob", 2)
	blog.Commit(map[string]string{"velo.toml": "name = \"alice-blog\"\n", "echo.wasm": wasm}, "blog")
	for _, r := range []*githubtest.Repo{alice, bob} {
		r.Commit(map[string]string{"velo.toml": "name = \"" + r.Owner + "-site\"\n[env]\nTOKEN = \"" + r.Owner + "-secret\"\n", "echo.wasm": wasm}, r.Owner+"'s commit "+hostile)
		res, err := gh.Push(v.ctx, v.n.URL+"/webhooks/github", r, "main", "", "")
		if err != nil || res.StatusCode != http.StatusAccepted {
			t.Fatalf("push %s: %v %v", r.FullName(), res, err)
		}
		name := r.Owner + "-site"
		testsupport.Eventually(t, 15*time.Second, name+" live", func() bool {
			c, err := v.c.Component(v.ctx, name)
			return err == nil && c.Status == "live"
		})
	}
	bobComp, _ := v.c.Component(v.ctx, "bob-site")
	bobDep := bobComp.Live.ID

	gh.SignIn("alice")
	a := v.browser()
	a.signInGitHub()
	gh.SignIn("bob")
	bb := v.browser()
	bb.signInGitHub()

	_, list := a.get("/")
	if !strings.Contains(list, `href="/components/alice-site"`) || strings.Contains(list, "bob") {
		t.Errorf("alice's list:\n%s", list)
	}
	if strings.Contains(list, "<script>alert") || !strings.Contains(list, "alice&#39;s commit &lt;script&gt;") {
		t.Errorf("alice's list: commit message not shown escaped")
	}
	_, list = bb.get("/")
	if !strings.Contains(list, `href="/components/bob-site"`) || strings.Contains(list, "alice") {
		t.Errorf("bob's list shows alice's components")
	}
	// Alice on bob's pages: not found, nothing of bob's shown.
	for _, path := range []string{
		"/components/bob-site", "/components/bob-site?range=24h",
		fmt.Sprintf("/components/bob-site/deployments/%d", bobDep),
		fmt.Sprintf("/components/alice-site/deployments/%d", bobDep),
	} {
		code, body := a.get(path)
		if code != http.StatusNotFound {
			t.Errorf("alice GET %s = %d, want 404", path, code)
		}
		for _, leak := range []string{"bob's commit", "bob-secret", bobComp.Live.Digest} {
			if strings.Contains(body, leak) {
				t.Errorf("alice GET %s shows %q", path, leak)
			}
		}
	}
	// Alice's actions on bob's component, with her valid CSRF token.
	tok := a.csrf()
	for _, tc := range []struct {
		path string
		form url.Values
	}{
		{"/components/bob-site/pause", url.Values{}},
		{"/components/bob-site/rollback", url.Values{"deployment": {strconv.FormatInt(bobDep, 10)}}},
		{"/components/bob-site/delete", url.Values{"confirm": {"bob-site"}}},
		{"/start", url.Values{"repo": {"bob/site"}}},
	} {
		tc.form.Set("csrf", tok)
		res, body := a.do(http.MethodPost, tc.path, tc.form)
		if res.StatusCode != http.StatusNotFound || strings.Contains(body, "bob-secret") {
			t.Errorf("alice POST %s = %d, want 404", tc.path, res.StatusCode)
		}
	}
	if c, err := v.c.Component(v.ctx, "bob-site"); err != nil || c.Paused || c.Live.ID != bobDep {
		t.Errorf("bob-site after alice's attempts: %+v %v", c, err)
	}
	// Her own: the page, her env, pause.
	code, page := a.get("/components/alice-site")
	if code != 200 || !strings.Contains(page, "alice-secret") || strings.Contains(page, "bob") {
		t.Errorf("alice's component page: %d", code)
	}
	if res, _ := a.do(http.MethodPost, "/components/alice-site/pause", url.Values{"csrf": {tok}}); res.StatusCode != http.StatusSeeOther {
		t.Errorf("alice pausing her component: %d", res.StatusCode)
	}
	if c, _ := v.c.Component(v.ctx, "alice-site"); !c.Paused {
		t.Error("alice-site not paused")
	}
	// Onboarding: her repositories, a Start button for the one not
	// deployed yet; bob's not at all.
	_, onboarding := a.get("/new")
	if !strings.Contains(onboarding, `aria-label="Start alice/blog"`) || !strings.Contains(onboarding, `href="/components/alice-site"`) || strings.Contains(onboarding, "bob/site") {
		t.Errorf("alice's onboarding:\n%s", onboarding)
	}
	res, _ := a.do(http.MethodPost, "/start", url.Values{"csrf": {tok}, "repo": {"alice/blog"}})
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/components/alice-blog") {
		t.Fatalf("Start alice/blog: %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	testsupport.Eventually(t, 15*time.Second, "alice-blog live", func() bool {
		c, err := v.c.Component(v.ctx, "alice-blog")
		return err == nil && c.Status == "live"
	})
	_, list = a.get("/")
	var names []string
	for _, n := range []string{"alice-blog", "alice-site", "bob-site"} {
		if strings.Contains(list, `href="/components/`+n+`"`) {
			names = append(names, n)
		}
	}
	if !slices.Equal(names, []string{"alice-blog", "alice-site"}) {
		t.Errorf("alice's list after Start: %v", names)
	}
	// The sign-in page offers GitHub.
	if _, body := v.browser().get("/"); !strings.Contains(body, `href="/auth/github/login"`) {
		t.Error("no GitHub sign-in button with GitHub configured")
	}
}

// The list shows a component's pull request previews (NAME--pr-N) under
// it, ordered by number; a preview whose component is not listed stands
// on its own.
func TestListGroupsPreviews(t *testing.T) {
	v := startVelo(t, nil)
	for _, name := range []string{"shop", "shop--pr-12", "shop--pr-3", "blog--pr-1", "shop-2"} {
		v.deploy(name, echoFiles(nil))
	}
	b := v.browser()
	b.signInAdmin()
	_, page := b.get("/")
	shop := strings.Index(page, `<li class="comp" data-name="shop">`)
	pr3 := strings.Index(page, `<li class="comp preview" data-name="shop--pr-3">`)
	pr12 := strings.Index(page, `<li class="comp preview" data-name="shop--pr-12">`)
	shop2 := strings.Index(page, `<li class="comp" data-name="shop-2">`)
	if shop < 0 || pr3 < shop || pr12 < pr3 || !strings.Contains(page[shop:pr12], `<ul class="previews"`) || !strings.Contains(page, "preview of #12") {
		t.Errorf("previews not grouped under shop (shop %d, #3 %d, #12 %d):\n%s", shop, pr3, pr12, page)
	}
	if shop2 < 0 || strings.Contains(page[shop2:], "shop--pr") && strings.Index(page[shop2:], "shop--pr") < strings.Index(page[shop2:], "</li>") {
		t.Errorf("shop-2 got shop's previews")
	}
	if !strings.Contains(page, `<li class="comp preview" data-name="blog--pr-1">`) {
		t.Errorf("a preview without its component is not listed")
	}
}
