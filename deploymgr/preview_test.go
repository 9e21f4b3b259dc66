package deploymgr_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/testsupport"
)

// ghEnv is a whole in-process Velo (velo up) connected to the GitHub
// stand-in, with a domain, so that components also answer at
// NAME.<domain>.
type ghEnv struct {
	*env
	gh     *githubtest.Server
	domain string
}

func startGitHub(t *testing.T) *ghEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	gh := githubtest.New(t)
	cfg := gh.Config()
	const domain = "velo.test"
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), GitHub: &cfg, Domain: domain})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return &ghEnv{env: &env{t: t, ctx: ctx, n: n, c: client.New(n.URL, n.Token, nil)}, gh: gh, domain: domain}
}

func (e *ghEnv) hook() string { return e.n.URL + github.WebhookPath }

// deliver checks that the webhook was answered 202.
func (e *ghEnv) deliver(resp *http.Response, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("webhook answered %d %s, want 202", resp.StatusCode, b)
	}
}

// env GETs /env of component name (its environment, one VAR=value a
// line), by path or, with host set, at that Host.
func (e *ghEnv) envOf(name, host string) (int, string) {
	e.t.Helper()
	path := "/fn/" + name + "/env"
	hdr := []string{}
	if host != "" {
		path, hdr = "/env", []string{"Host", host}
	}
	req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, e.n.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(hdr) == 2 {
		req.Host = hdr[1]
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// sees waits until name's environment has every want and none of the
// absent.
func (e *ghEnv) sees(name, what string, want, absent []string) {
	e.t.Helper()
	var last string
	testsupport.EventuallyShow(e.t, 60*time.Second, what+": "+name+" sees "+strings.Join(want, ", ")+" and not "+strings.Join(absent, ", "), func() bool {
		code, body := e.envOf(name, "")
		last = fmt.Sprintf("%d %s", code, body)
		if code != http.StatusOK {
			return false
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		for _, a := range absent {
			if strings.Contains(body, a) {
				return false
			}
		}
		return true
	}, func() string { return last })
}

func siteFiles(version string) map[string]string {
	return map[string]string{
		"velo.toml": "name = \"site\"\nmodule = \"echo.wasm\"\n[env]\nVERSION = \"" + version + "\"\n",
		"echo.wasm": string(echoWasm),
	}
}

// TestPreviewSecretsAndHost: a pull request's preview gets only the
// secrets of its component marked for previews, as environment variables;
// marking and unmarking one reaches the running preview; a component
// named like a preview but uploaded by hand gets none; and the preview
// answers at NAME--pr-N.<domain> through the router.
func TestPreviewSecretsAndHost(t *testing.T) {
	e := startGitHub(t)
	ctx, gh := e.ctx, e.gh
	repo := gh.AddRepo("octo", "site-repo", "main", 42)
	repo.Commit(siteFiles("main"), "main")
	e.deliver(gh.Push(ctx, e.hook(), repo, "main", "", ""))
	e.sees("site", "the push deployed", []string{"VERSION=main"}, nil)

	const sandbox, prod = "sandbox-7d1c0f", "prod-94be22"
	if _, err := e.c.SetSecretMarked(ctx, "site", "SANDBOX_KEY", sandbox, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.SetSecret(ctx, "site", "PROD_KEY", prod); err != nil {
		t.Fatal(err)
	}
	list, err := e.c.Secrets(ctx, "site")
	if err != nil || len(list) != 2 || list[0].Name != "PROD_KEY" || list[0].Preview || list[1].Name != "SANDBOX_KEY" || !list[1].Preview {
		t.Fatalf("secrets of site = %+v, %v", list, err)
	}
	e.sees("site", "the component's own secrets", []string{"SANDBOX_KEY=" + sandbox, "PROD_KEY=" + prod}, nil)

	pr := gh.OpenPullRequest(repo, "", "feature", "Shout")
	name := fmt.Sprintf("site--pr-%d", pr.Number)
	pr.Commit(siteFiles("pr-one"), "shout")
	e.deliver(gh.PullRequestEvent(ctx, e.hook(), pr, "opened", "", ""))
	e.sees(name, "the preview with the marked secret only", []string{"VERSION=pr-one", "SANDBOX_KEY=" + sandbox}, []string{"PROD_KEY"})

	// The preview's host name serves it, through the router.
	host := name + "." + e.domain
	if code, body := e.envOf(name, host); code != http.StatusOK || !strings.Contains(body, "VERSION=pr-one") || !strings.Contains(body, "SANDBOX_KEY="+sandbox) || strings.Contains(body, "PROD_KEY") {
		t.Errorf("GET /env at Host %s = %d %q", host, code, body)
	}
	if code, body := e.envOf("site", "site."+e.domain); code != http.StatusOK || !strings.Contains(body, "VERSION=main") {
		t.Errorf("GET /env at Host site.%s = %d %q", e.domain, code, body)
	}

	// Marking PROD_KEY and unmarking SANDBOX_KEY reach the running
	// preview (its instances restart with them), values unchanged.
	if _, err := e.c.SetSecretMarked(ctx, "site", "PROD_KEY", prod, true); err != nil {
		t.Fatal(err)
	}
	e.sees(name, "after marking PROD_KEY", []string{"PROD_KEY=" + prod, "SANDBOX_KEY=" + sandbox}, nil)
	if _, err := e.c.SetSecretMarked(ctx, "site", "SANDBOX_KEY", sandbox, false); err != nil {
		t.Fatal(err)
	}
	e.sees(name, "after unmarking SANDBOX_KEY", []string{"PROD_KEY=" + prod}, []string{"SANDBOX_KEY"})
	// Setting a value again without saying keeps its mark.
	if s, err := e.c.SetSecret(ctx, "site", "PROD_KEY", prod+"-2"); err != nil || !s.Preview {
		t.Fatalf("PROD_KEY set again = %+v, %v; want the mark kept", s, err)
	}
	e.sees(name, "after PROD_KEY's new value", []string{"PROD_KEY=" + prod + "-2"}, []string{"SANDBOX_KEY"})
	e.sees("site", "the component keeps both", []string{"PROD_KEY=" + prod + "-2", "SANDBOX_KEY=" + sandbox}, nil)

	// A mark on the preview itself makes no sense and is refused.
	if _, err := e.c.SetSecretMarked(ctx, name, "OTHER", "x", true); !isStatus(err, http.StatusBadRequest) {
		t.Errorf("marking a secret of the preview itself: %v, want 400", err)
	}

	// An upload named like a preview of site is no preview: no secrets.
	fake := "site--pr-99"
	d, err := e.c.Deploy(ctx, fake, bytes.NewReader(archivetest.TarGz(t, echoFiles("fake"))))
	if err != nil {
		t.Fatal(err)
	}
	e.settle(d.ID)
	e.sees(fake, "an upload named like a preview", []string{"GREETING=fake"}, []string{"PROD_KEY", "SANDBOX_KEY"})
}
