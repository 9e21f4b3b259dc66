package webui_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/testsupport"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// cluster is a Velo cluster's roles in this process, each on its own
// port, on one Postgres: deploymgr (API, scheduler, GitHub webhook), a
// worker, a router (velo router) and the dashboard (velo webui). Browsers
// reach the dashboard and the router on one host name, 127.0.0.1, which
// is what lets the dashboard's host-only session cookie reach the router.
type cluster struct {
	t                    *testing.T
	ctx                  context.Context
	deploymgr, dashboard string // base URLs
	router               string
	c                    *client.Client // the API, as the admin
}

func startCluster(t *testing.T, gh *github.Config) *cluster {
	t.Helper()
	db := pgtest.URL(t)
	const admin, token = "velo_admin_cluster_test", "cluster-token"
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	role := func() (node.Cluster, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() }) // a role that never ran; Run closes it
		return node.Cluster{Addr: ln.Addr().String(), DatabaseURL: db, AdminToken: admin, Listener: ln, Logger: log}, "http://" + ln.Addr().String()
	}
	dmc, dmURL := role()
	wc, wURL := role()
	rc, rURL := role()
	uc, uURL := role()
	// Registered after the listeners' Close: run before it.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	builds := []func() (*node.Role, error){
		func() (*node.Role, error) {
			return node.NewDeploymgr(ctx, node.DeploymgrConfig{Cluster: dmc, ClusterToken: token, PublicURL: rURL, GitHub: gh})
		},
		func() (*node.Role, error) {
			return node.NewWorker(ctx, node.WorkerConfig{Cluster: wc, ClusterToken: token, Name: "w", Advertise: wURL, DataDir: t.TempDir()})
		},
		func() (*node.Role, error) {
			return node.NewRouter(ctx, node.RouterConfig{Cluster: rc, ClusterToken: token, DashboardURL: uURL, GitHub: gh})
		},
		func() (*node.Role, error) {
			return node.NewWebUI(ctx, node.WebUIConfig{Cluster: uc, PublicURL: rURL, DashboardURL: uURL, GitHub: gh})
		},
	}
	for _, build := range builds {
		r, err := build()
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				t.Errorf("role: %v", err)
			}
		})
	}
	return &cluster{t: t, ctx: ctx, deploymgr: dmURL, dashboard: uURL, router: rURL, c: client.New(dmURL, admin, nil)}
}

// privateSite pushes alice/site, a component with [access] dashboard =
// true, to the cluster (bob has a repository of his own elsewhere), and
// waits until every router serves it.
func (c *cluster) privateSite(gh *githubtest.Server) {
	c.t.Helper()
	site := gh.AddRepo("alice", "site", "main", 1)
	gh.AddRepo("bob", "other", "main", 2)
	gh.AddUser("alice", 1)
	gh.AddUser("bob", 2)
	site.Commit(map[string]string{"velo.toml": "name = \"alice-site\"\nmodule = \"echo.wasm\"\n[access]\ndashboard = true\n", "echo.wasm": string(echoWasm)}, "private site")
	res, err := gh.Push(c.ctx, c.deploymgr+github.WebhookPath, site, "main", "", "")
	if err != nil || res.StatusCode != http.StatusAccepted {
		c.t.Fatalf("push: %v %v", res, err)
	}
	// Live means every router reporting serves it.
	testsupport.Eventually(c.t, 60*time.Second, "alice-site live", func() bool {
		comp, err := c.c.Component(c.ctx, "alice-site")
		return err == nil && comp.Status == "live"
	})
}

// TestClusterDashboardAccess: velo router, a process apart from the
// dashboard, admits the dashboard's signed-in users to a component with
// [access] dashboard = true by their session cookie (read from the
// cluster's store) and their repositories (asked of GitHub with their
// token, which the router opens with the App's OAuth secret): the
// repository's user gets through as github:alice, another signed-in user
// gets 403, a caller without a session 401 (a browser a 303 to the
// dashboard's sign-in, on the dashboard's own origin), and a sign-out on
// the dashboard ends the session on the router too.
func TestClusterDashboardAccess(t *testing.T) {
	gh := githubtest.New(t)
	cfg := gh.Config()
	c := startCluster(t, &cfg)
	c.privateSite(gh)
	call := c.router + "/fn/alice-site/env"

	gh.SignIn("alice")
	a := newBrowser(t, c.ctx, c.dashboard)
	a.signInGitHub()
	gh.SignIn("bob")
	b := newBrowser(t, c.ctx, c.dashboard)
	b.signInGitHub()

	// The router has never seen these sessions; it reads them.
	res, env := a.do(http.MethodGet, call, nil)
	if res.StatusCode != 200 || !strings.Contains(env, "HTTP_X_VELO_AUTH_SUBJECT=github:alice\n") || strings.Contains(env, "velo_session") {
		t.Fatalf("alice's call through the router: %d\n%s", res.StatusCode, env)
	}
	if res.Header.Get("X-Velo-Worker") != "w" {
		t.Errorf("alice's call answered by worker %q", res.Header.Get("X-Velo-Worker"))
	}
	res, body := b.do(http.MethodGet, call, nil)
	if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "github:bob, who cannot reach repository alice/site") || res.Header.Get("X-Velo-Worker") != "" {
		t.Errorf("bob's call: %d %q", res.StatusCode, body)
	}

	anon := newBrowser(t, c.ctx, c.dashboard)
	res, body = anon.do(http.MethodGet, call, nil)
	if res.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(res.Header.Get("WWW-Authenticate"), `Bearer realm="alice-site"`) || !strings.Contains(body, "sign in") {
		t.Errorf("call without a session: %d %q %q", res.StatusCode, res.Header.Get("WWW-Authenticate"), body)
	}
	res, _ = anon.do(http.MethodGet, call, nil, "Accept", "text/html,application/xhtml+xml")
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != c.dashboard+"/" {
		t.Errorf("browser without a session: %d, Location %q (want the dashboard, %s/)", res.StatusCode, res.Header.Get("Location"), c.dashboard)
	}
	res, _ = anon.do(http.MethodGet, call, nil, "Cookie", auth.SessionCookie+"=forged")
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged session: %d", res.StatusCode)
	}

	// Alice signs out on the dashboard: the router, which remembers her
	// session (for up to a minute), is told. The cookie is sent on after
	// the sign-out, as a copy of it would be (the dashboard clears it in
	// her browser).
	cookie := ""
	if u, err := url.Parse(c.dashboard); err == nil {
		for _, k := range a.jar.Cookies(u) {
			if k.Name == auth.SessionCookie {
				cookie = k.String()
			}
		}
	}
	if res, _ := anon.do(http.MethodGet, call, nil, "Cookie", cookie); cookie == "" || res.StatusCode != 200 {
		t.Fatalf("alice's session cookie %q, sent by hand: %d", cookie, res.StatusCode)
	}
	res, _ = a.do(http.MethodPost, auth.LogoutPath, url.Values{"csrf": {a.csrf()}})
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", res.StatusCode)
	}
	testsupport.Eventually(t, 30*time.Second, "alice's signed-out session refused", func() bool {
		res, _ := anon.do(http.MethodGet, call, nil, "Cookie", cookie)
		return res.StatusCode == http.StatusUnauthorized
	})
	// Bob's session, remembered alongside, still holds.
	if res, _ := b.do(http.MethodGet, call, nil); res.StatusCode != http.StatusForbidden {
		t.Errorf("bob's call after alice signed out: %d", res.StatusCode)
	}
}

// TestClusterDashboardSignInInChromium: in a real Chromium, a component
// with [access] dashboard = true behind velo router sends a browser
// without a session to the dashboard (another role, another port) to sign
// in; signed in there with GitHub, the browser opens the component's URL
// on the router and gets its answer; signed out, it is sent to sign in
// again.
func TestClusterDashboardSignInInChromium(t *testing.T) {
	gh := githubtest.New(t)
	cfg := gh.Config()
	c := startCluster(t, &cfg)
	b := newTab(t, nil)
	b.base = c.dashboard
	c.privateSite(gh)
	gh.SignIn("alice")
	call := c.router + "/fn/alice-site/env"

	signInPage := func(when string) {
		t.Helper()
		if loc := run(b, chromedp.Location()); loc != c.dashboard+"/" {
			t.Fatalf("%s: at %s, want the dashboard's sign-in %s/", when, loc, c.dashboard)
		}
		if body := b.eval(`document.body.innerText`); !strings.Contains(body, "Sign in to Velo") {
			t.Fatalf("%s: not the sign-in page:\n%s", when, body)
		}
	}
	b.do(chromedp.Navigate(call), chromedp.WaitReady(chromedp.CSS("body")))
	signInPage("the component opened without a session")
	b.shot("cluster-signin")

	b.do(chromedp.Click(chromedp.CSS(`a[href="/auth/github/login"]`)), chromedp.WaitVisible(chromedp.CSS(".comps")))
	if got := b.text(".comp .c-name"); got != "alice-site" {
		t.Fatalf("alice's dashboard lists %q", got)
	}
	b.do(chromedp.Navigate(call), chromedp.WaitReady(chromedp.CSS("body")))
	if env := b.eval(`document.body.innerText`); !strings.Contains(env, "HTTP_X_VELO_AUTH_SUBJECT=github:alice") || strings.Contains(env, "velo_") {
		t.Fatalf("the component, opened signed in on the dashboard:\n%s", env)
	}
	b.shot("cluster-component")

	b.open("/")
	b.do(chromedp.Click(chromedp.CSS(`form[action="/auth/logout"] button`)), chromedp.WaitVisible(chromedp.CSS(`a[href="/auth/github/login"]`)))
	testsupport.Eventually(t, 30*time.Second, "the signed-out browser sent to sign in", func() bool {
		b.do(chromedp.Navigate(call), chromedp.WaitReady(chromedp.CSS("body")))
		return run(b, chromedp.Location()) == c.dashboard+"/"
	})
	signInPage("the component opened after signing out")
}
