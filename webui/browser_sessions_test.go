package webui_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
)

// Sessions in a real Chromium: signing out ends the live log tail of a
// page still open (the server ends the stream, the browser's reconnect is
// refused), and the tokens page creates, lists and revokes API tokens.
func TestSessionsInChromium(t *testing.T) {
	v := startVelo(t, nil)
	b := newTab(t, v)
	v.deploy("echo", echoFiles(nil))
	b.do(chromedp.EmulateViewport(1280, 900))
	b.do(chromedp.Navigate(v.n.LoginURL), chromedp.WaitVisible(chromedp.CSS(".comps")))

	// The tokens page: create one, see its secret once, find it listed
	// without the secret, revoke it.
	b.open("/tokens")
	if got := b.text("#no-tokens"); !strings.Contains(got, "No API tokens") {
		t.Errorf("tokens page before any: %q", got)
	}
	if bad := b.eval(unlabelled); bad != "" {
		t.Errorf("/tokens: controls without a label:\n%s", bad)
	}
	b.do(chromedp.SetValue(chromedp.CSS("#token-name"), "laptop"), chromedp.Click(chromedp.CSS(`form[action="/tokens"] button`)),
		chromedp.WaitVisible(chromedp.CSS(".snippet")))
	snippet := b.text(".snippet")
	secret := snippet[strings.Index(snippet, "VELO_TOKEN=")+len("VELO_TOKEN="):]
	if !strings.HasPrefix(secret, "velo_") {
		t.Fatalf("token page snippet: %q", snippet)
	}
	b.shot("token-created")
	b.do(chromedp.Click(chromedp.CSS(`a[href="/tokens"]`)), chromedp.WaitVisible(chromedp.CSS("#tokens")))
	if body := b.eval(`document.body.innerText`); !strings.Contains(body, "laptop") || strings.Contains(body, secret) {
		t.Errorf("tokens page: the token missing, or its secret shown:\n%s", body)
	}
	b.shot("tokens")
	b.do(chromedp.Click(chromedp.CSS(`button[aria-label^="Revoke token laptop"]`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if got := b.text(".flash"); !strings.Contains(got, "revoked") {
		t.Errorf("after revoke: %q", got)
	}
	if n := b.eval(`String(document.querySelectorAll("#tokens tbody tr").length)`); n != "0" {
		t.Errorf("%s tokens listed after revoking the only one", n)
	}

	// A component page with its log tail live.
	b.open("/components/echo")
	b.waitFor("the log tail to connect", `document.getElementById("log-state").textContent === "live"`)
	if code, _ := v.get("/fn/echo/stderr"); code != 200 {
		t.Fatalf("GET /fn/echo/stderr = %d", code)
	}
	b.waitFor("the stderr line in the live tail", `[...document.querySelectorAll("#log li.log-stderr .line")].some(l => l.textContent === "first line")`)

	// Sign out from this page without leaving it (as another tab would):
	// the server ends the stream within its recheck, and the browser's
	// reconnect is refused.
	b.eval(`(() => { fetch("/auth/logout", {method: "POST", headers: {"X-CSRF-Token": document.querySelector("input[name=csrf]").value}, redirect: "manual"}); return ""; })()`)
	b.waitFor("the log tail to stop after sign-out", `document.getElementById("log-state").textContent.startsWith("stopped")`)
	before := b.eval(`String(document.querySelectorAll("#log li.log-stderr").length)`)
	if code, _ := v.get("/fn/echo/stderr"); code != 200 {
		t.Fatalf("GET /fn/echo/stderr = %d", code)
	}
	if after := b.eval(`String(document.querySelectorAll("#log li.log-stderr").length)`); after != before {
		t.Errorf("lines arrived after sign-out: %s → %s", before, after)
	}
	b.shot("stream-stopped")
	b.open("/")
	if body := b.eval(`document.body.innerText`); !strings.Contains(body, "Sign in to Velo") {
		t.Errorf("after sign-out the dashboard still shows:\n%s", body)
	}
}

// A component under /fn/NAME/ shares the dashboard's origin, yet cannot
// read a signed-in visitor's session: the router keeps Velo's cookies
// from it (the visitor's other cookies pass), and the session cookie is
// HttpOnly, out of its pages' scripts.
func TestComponentCannotReadSessionInChromium(t *testing.T) {
	v := startVelo(t, nil)
	b := newTab(t, v)
	v.deploy("echo", echoFiles(nil))
	b.do(chromedp.Navigate(v.n.LoginURL), chromedp.WaitVisible(chromedp.CSS(".comps")))
	// A cookie of the visitor's own, set on the shared origin.
	b.eval(`(() => { document.cookie = "theme=dark; path=/"; return ""; })()`)

	b.open("/fn/echo/env")
	env := b.eval(`document.body.innerText`)
	cookieLine := ""
	for _, l := range strings.Split(env, "\n") {
		if strings.HasPrefix(l, "HTTP_COOKIE=") {
			cookieLine = l
		}
	}
	if !strings.Contains(cookieLine, "theme=dark") {
		t.Fatalf("the visitor's own cookie did not reach the component (so this test shows nothing):\n%s", env)
	}
	if strings.Contains(env, "velo_") {
		t.Errorf("the component saw one of Velo's cookies:\n%s", env)
	}
	// Its page runs sandboxed (an opaque origin: document.cookie throws);
	// were it not, the HttpOnly session would still not show.
	if got := b.eval(`(() => { try { return document.cookie; } catch (e) { return "blocked: " + e.name; } })()`); strings.Contains(got, "velo_") {
		t.Errorf("a component page's script reads %q", got)
	}
	// The visitor is still signed in on the dashboard.
	b.open("/")
	if n := b.eval(`String(document.querySelectorAll(".comp").length)`); n != "1" {
		t.Errorf("dashboard after visiting the component lists %s components", n)
	}
}

// Behind a TLS-terminating proxy (VELO_PUBLIC_URL https), Chromium keeps
// the dashboard's __Host- session cookie (it refuses one that breaks the
// prefix's rules: not Secure, a Domain, a Path other than /) and sends it
// back: the sign-in holds.
func TestHostCookieOverHTTPSInChromium(t *testing.T) {
	var (
		mu      sync.Mutex
		names   = map[string]bool{}
		backend *url.URL
	)
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		for _, c := range r.Cookies() {
			names[c.Name] = true
		}
		target := backend
		mu.Unlock()
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	proxy.StartTLS()
	t.Cleanup(proxy.Close)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), PublicURL: proxy.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	mu.Lock()
	backend, _ = url.Parse(n.URL)
	mu.Unlock()
	v := &velo{t: t, ctx: ctx, n: n, c: client.New(n.URL, n.Token, nil)}
	v.deploy("echo", echoFiles(nil))

	b := newTab(t, v, chromedp.Flag("ignore-certificate-errors", true))
	b.base = proxy.URL
	b.do(chromedp.Navigate(n.LoginURL), chromedp.WaitVisible(chromedp.CSS(".comps")))
	if got := b.text(".comp .c-name"); got != "echo" {
		t.Fatalf("signed in over HTTPS, the list shows %q", got)
	}
	b.open("/components/echo")
	b.waitFor("the log tail to connect", `document.getElementById("log-state").textContent === "live"`)
	mu.Lock()
	defer mu.Unlock()
	if !names["__Host-velo_session"] || names["velo_session"] {
		t.Errorf("cookies Chromium sent over HTTPS: %v, want __Host-velo_session and no plain velo_session", names)
	}
	if got := b.eval(`document.cookie`); strings.Contains(got, "velo_") {
		t.Errorf("the page's script reads %q", got)
	}
}
