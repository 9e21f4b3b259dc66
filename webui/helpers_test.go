package webui_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/node"
)

// velo is a whole in-process Velo (velo up) on the embedded store.
type velo struct {
	t   *testing.T
	ctx context.Context
	n   *node.Node
	c   *client.Client
}

func startVelo(t *testing.T, gh *github.Config) *velo {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), GitHub: gh})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &velo{t: t, ctx: ctx, n: n, c: client.New(n.URL, n.Token, nil)}
}

var echoWasm = func() []byte {
	b, err := os.ReadFile("../worker/wasm/testdata/echo.wasm")
	if err != nil {
		panic(err)
	}
	return b
}()

// echoFiles is the C WAGI test module as a component with env.
func echoFiles(env map[string]string) map[string][]byte {
	var b strings.Builder
	b.WriteString("module = \"echo.wasm\"\n[env]\n")
	for k, v := range env {
		fmt.Fprintf(&b, "%s = %q\n", k, v)
	}
	return map[string][]byte{"echo.wasm": echoWasm, "velo.toml": []byte(b.String())}
}

// deploy uploads files as component name and waits until it is live.
func (v *velo) deploy(name string, files map[string][]byte) api.Deployment {
	v.t.Helper()
	d, err := v.c.Deploy(v.ctx, name, bytes.NewReader(archivetest.TarGz(v.t, files)))
	if err != nil {
		v.t.Fatalf("deploy %s: %v", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err = v.c.Deployment(v.ctx, d.ID)
		if err != nil {
			v.t.Fatal(err)
		}
		if d.Status == "failed" {
			v.t.Fatalf("deployment %d failed: %s", d.ID, d.Error)
		}
		if d.Status == "ready" && d.Live {
			return d
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("deployment %d still %s", d.ID, d.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get requests path on the node without credentials and returns the
// status and body.
func (v *velo) get(path string) (int, string) {
	v.t.Helper()
	res, err := http.Get(v.n.URL + path)
	if err != nil {
		v.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// browser is an HTTP client with a cookie jar that does not follow
// redirects, standing for a browser in httptest-level tests.
type browser struct {
	t    *testing.T
	v    *velo // nil for a browser on a cluster
	ctx  context.Context
	base string // where paths are requested: the dashboard
	hc   *http.Client
	jar  *cookiejar.Jar
}

func (v *velo) browser() *browser {
	b := newBrowser(v.t, v.ctx, v.n.URL)
	b.v = v
	return b
}

// newBrowser is a browser on the dashboard at base.
func newBrowser(t *testing.T, ctx context.Context, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, ctx: ctx, base: base, jar: jar, hc: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do requests path on the dashboard, or the absolute URL path.
func (b *browser) do(method, path string, form url.Values, header ...string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	u := path
	if !strings.HasPrefix(path, "http://") && !strings.HasPrefix(path, "https://") {
		u = b.base + path
	}
	req, err := http.NewRequestWithContext(b.ctx, method, u, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return res, string(raw)
}

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	res, body := b.do(http.MethodGet, path, nil)
	return res.StatusCode, body
}

// signInAdmin follows the one-click link velo up prints.
func (b *browser) signInAdmin() {
	b.t.Helper()
	res, _ := b.do(http.MethodGet, strings.TrimPrefix(b.v.n.LoginURL, b.v.n.URL), nil)
	if res.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("one-click sign-in = %d", res.StatusCode)
	}
}

// signInGitHub goes through the stand-in's OAuth consent as whoever is
// signed in there.
func (b *browser) signInGitHub() {
	b.t.Helper()
	hc := &http.Client{Jar: b.jar, Timeout: 10 * time.Second}
	res, err := hc.Get(b.base + auth.GitHubLoginPath)
	if err != nil {
		b.t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Request.URL.Path != "/" {
		b.t.Fatalf("GitHub sign-in ended at %s with %d", res.Request.URL, res.StatusCode)
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf reads the CSRF token from a dashboard page, as a form would send it.
func (b *browser) csrf() string {
	b.t.Helper()
	_, page := b.get("/new")
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no CSRF field on /new:\n%s", page)
	}
	return m[1]
}

// artifacts is where screenshots go: $VELO_TEST_ARTIFACTS/webui, else a
// temporary directory.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("VELO_TEST_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, "webui")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustDeployments(t *testing.T, v *velo, name string) []api.Deployment {
	t.Helper()
	ds, err := v.c.Deployments(v.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	// Oldest first.
	for i, j := 0, len(ds)-1; i < j; i, j = i+1, j-1 {
		ds[i], ds[j] = ds[j], ds[i]
	}
	return ds
}
