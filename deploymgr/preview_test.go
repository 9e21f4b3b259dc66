package deploymgr_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

// ghEnv is a whole in-process Velo (velo up) connected to the GitHub
// stand-in, with a domain, so that components also answer at
// NAME.<domain>.
type ghEnv struct {
	*env
	gh     *githubtest.Server
	domain string
}

func startGitHub(t *testing.T, opts ...func(*node.Config)) *ghEnv {
	t.Helper()
	gh := githubtest.New(t)
	cfg := gh.Config()
	const domain = "velo.test"
	nc := node.Config{GitHub: &cfg, Domain: domain}
	for _, o := range opts {
		o(&nc)
	}
	return &ghEnv{env: startWith(t, nc), gh: gh, domain: domain}
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

	// A preview whose [env] sets a name site marks for previews is refused,
	// as site's own deploy would be: which value it saw would be a surprise.
	clash := gh.OpenPullRequest(repo, "", "clash", "Clash")
	cf := siteFiles("clash")
	cf["velo.toml"] += "PROD_KEY = \"plain\"\n"
	clash.Commit(cf, "env clash")
	e.deliver(gh.PullRequestEvent(ctx, e.hook(), clash, "opened", "", ""))
	testsupport.Eventually(t, 60*time.Second, "the clash reported on the pull request", func() bool {
		cs := gh.Comments(repo.Owner, repo.Name, clash.Number)
		return len(cs) == 1 && strings.Contains(cs[0].Body, "failed") && strings.Contains(cs[0].Body, "PROD_KEY") && strings.Contains(cs[0].Body, `"site"`)
	})

	// An upload named like a preview of site is no preview: no secrets.
	fake := "site--pr-99"
	d, err := e.c.Deploy(ctx, fake, bytes.NewReader(archivetest.TarGz(t, echoFiles("fake"))))
	if err != nil {
		t.Fatal(err)
	}
	e.settle(d.ID)
	e.sees(fake, "an upload named like a preview", []string{"GREETING=fake"}, []string{"PROD_KEY", "SANDBOX_KEY"})
}

// TestPreviewSeveralComponents: a pull request of a repository whose root
// velo.toml lists components previews only the components it changes (by
// GitHub's pull request files API), each as NAME--pr-N with its own
// transient GitHub deployment (environment preview/NAME); the one comment
// lists every preview and is edited on each push; closing removes them
// all and marks their deployments inactive.
func TestPreviewSeveralComponents(t *testing.T) {
	e := startGitHub(t)
	ctx, gh := e.ctx, e.gh
	comp := func(name, version string) string {
		return "name = \"" + name + "\"\nmodule = \"echo.wasm\"\n[env]\nVERSION = \"" + version + "\"\n"
	}
	tree := map[string]string{
		"velo.toml":                 "components = [\"services/*\"]\n\n[[component]]\npath = \"web\"\n",
		"README.md":                 "mono\n",
		"services/api/velo.toml":    comp("api", "api-1"),
		"services/api/echo.wasm":    string(echoWasm),
		"services/worker/velo.toml": comp("jobs", "jobs-1"),
		"services/worker/echo.wasm": string(echoWasm),
		"web/velo.toml":             comp("web", "web-1"),
		"web/echo.wasm":             string(echoWasm),
	}
	files := func(edits map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range tree {
			out[k] = v
		}
		for k, v := range edits {
			out[k] = v
		}
		return out
	}
	repo := gh.AddRepo("octo", "mono", "main", 42)
	repo.Commit(files(nil), "three components")
	e.deliver(gh.Push(ctx, e.hook(), repo, "main", "", ""))
	for _, n := range []string{"api", "jobs", "web"} {
		e.sees(n, "the push", []string{"VERSION=" + n + "-1"}, nil)
	}
	settled := func() {
		t.Helper()
		testsupport.Eventually(t, 60*time.Second, "every GitHub job to end", func() bool {
			open, err := e.n.Store.GitHubJobs(ctx, "queued", "running")
			return err == nil && len(open) == 0
		})
	}
	previews := func() map[string][]githubtest.Deployment {
		out := map[string][]githubtest.Deployment{}
		for _, d := range gh.Deployments(repo.Owner, repo.Name) {
			if strings.HasPrefix(d.Environment, "preview") {
				out[d.Environment] = append(out[d.Environment], d)
			}
		}
		return out
	}
	last := func(d githubtest.Deployment) string {
		if len(d.Statuses) == 0 {
			return ""
		}
		return d.Statuses[len(d.Statuses)-1].State
	}
	exists := func(name string) bool {
		_, err := e.n.Store.Component(ctx, name)
		return err == nil
	}

	// 1. The pull request changes services/api: api alone is previewed.
	pr := gh.OpenPullRequest(repo, "", "api-change", "API v2")
	n := pr.Number
	api, jobs, web := fmt.Sprintf("api--pr-%d", n), fmt.Sprintf("jobs--pr-%d", n), fmt.Sprintf("web--pr-%d", n)
	head1 := pr.Commit(files(map[string]string{"services/api/velo.toml": comp("api", "api-pr")}), "api v2")
	e.deliver(gh.PullRequestEvent(ctx, e.hook(), pr, "opened", "", ""))
	e.sees(api, "the api preview", []string{"VERSION=api-pr"}, nil)
	testsupport.Eventually(t, 60*time.Second, "the api preview reported live", func() bool {
		ps := previews()["preview/api"]
		return len(ps) == 1 && last(ps[0]) == "success"
	})
	settled()
	if exists(jobs) || exists(web) {
		t.Errorf("unchanged components were previewed: %s %v, %s %v", jobs, exists(jobs), web, exists(web))
	}
	ps := previews()
	// With a domain, a preview's URL is its host.
	apiURL, webURL := "http://"+api+"."+e.domain+"/", "http://"+web+"."+e.domain+"/"
	if d := ps["preview/api"][0]; len(ps) != 1 || d.SHA != head1 || !d.TransientEnvironment || d.ProductionEnvironment || d.Statuses[len(d.Statuses)-1].EnvironmentURL != apiURL {
		t.Errorf("preview deployments after opening = %+v", ps)
	}
	for _, n := range []string{"api", "jobs", "web"} {
		e.sees(n, "production untouched", []string{"VERSION=" + n + "-1"}, nil)
	}
	cs := gh.Comments(repo.Owner, repo.Name, n)
	if len(cs) != 1 || !strings.Contains(cs[0].Body, apiURL) || strings.Contains(cs[0].Body, web) || !strings.Contains(cs[0].Body, head1[:7]) {
		t.Fatalf("comments after opening = %+v", cs)
	}

	// 2. A push that changes web too: web is previewed, api (previewed
	// already) follows the new head; one comment, edited, lists both.
	head2 := pr.Commit(files(map[string]string{"services/api/velo.toml": comp("api", "api-pr"), "web/velo.toml": comp("web", "web-pr")}), "web v2")
	e.deliver(gh.PullRequestEvent(ctx, e.hook(), pr, "synchronize", "", ""))
	e.sees(web, "the web preview", []string{"VERSION=web-pr"}, nil)
	testsupport.Eventually(t, 60*time.Second, "both previews live at the new head", func() bool {
		ps := previews()
		a, w := ps["preview/api"], ps["preview/web"]
		return len(a) == 2 && len(w) == 1 && a[1].SHA == head2 && last(a[1]) == "success" && last(a[0]) == "inactive" && last(w[0]) == "success"
	})
	settled()
	if exists(jobs) {
		t.Errorf("%s previewed; the pull request does not change it", jobs)
	}
	if d, err := e.n.Store.Deployment(ctx, mustComponent(t, e, api).Live); err != nil || d.Commit != head2 {
		t.Errorf("%s serves %q (%v), want %s", api, d.Commit, err, head2)
	}
	cs = gh.Comments(repo.Owner, repo.Name, n)
	if len(cs) != 1 || cs[0].Edits == 0 || !strings.Contains(cs[0].Body, apiURL) || !strings.Contains(cs[0].Body, webURL) || !strings.Contains(cs[0].Body, head2[:7]) {
		t.Fatalf("comments after the second push = %+v", cs)
	}

	// 3. Closed: every preview goes, every preview deployment inactive.
	pr.Close(false)
	e.deliver(gh.PullRequestEvent(ctx, e.hook(), pr, "closed", "", ""))
	settled()
	for _, name := range []string{api, web} {
		if exists(name) {
			t.Errorf("%s left after close", name)
		}
		testsupport.Eventually(t, 60*time.Second, name+" gone from the router", func() bool {
			code, _ := e.envOf(name, "")
			return code == http.StatusNotFound
		})
	}
	for env, ds := range previews() {
		for _, d := range ds {
			if last(d) != "inactive" {
				t.Errorf("%s deployment %d after close: %s", env, d.ID, last(d))
			}
		}
	}
	if cs = gh.Comments(repo.Owner, repo.Name, n); len(cs) != 1 || !strings.Contains(cs[0].Body, "closed") {
		t.Errorf("comments after close = %+v", cs)
	}
	for _, n := range []string{"api", "jobs", "web"} {
		e.sees(n, "production after close", []string{"VERSION=" + n + "-1"}, nil)
	}

	// 4. A pull request of more files than GitHub lists (3000): which
	// components it changes is unknown, so every one is previewed.
	big := gh.OpenPullRequest(repo, "", "big", "Many docs")
	edits := map[string]string{}
	for i := range 3000 {
		edits[fmt.Sprintf("docs/page%04d.md", i)] = "doc\n"
	}
	big.Commit(files(edits), "docs")
	e.deliver(gh.PullRequestEvent(ctx, e.hook(), big, "opened", "", ""))
	for _, n := range []string{"api", "jobs", "web"} {
		e.sees(fmt.Sprintf("%s--pr-%d", n, big.Number), "a cut file list previews every component", []string{"VERSION=" + n + "-1"}, nil)
	}
	settled()
}

func mustComponent(t *testing.T, e *ghEnv, name string) store.Component {
	t.Helper()
	c, err := e.n.Store.Component(e.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPreviewSecretsDocker: a Docker component's preview gets the
// secrets marked for previews as environment variables of its container
// and not the others; marking one reaches the preview's new containers.
func TestPreviewSecretsDocker(t *testing.T) {
	engine := dockertest.Engine(t)
	owner := fmt.Sprintf("velopreview-%d", os.Getpid())
	name := fmt.Sprintf("dock%d", os.Getpid())
	// Registered first, so it runs last, once the node has stopped: what
	// is left of the images (both start with name; the preview's is
	// velo/NAME-pr-N).
	t.Cleanup(func() {
		imgs, _ := engine.ImageList(context.Background(), image.ListOptions{Filters: filters.NewArgs(filters.Arg("reference", "velo/"+name+"*"))})
		for _, img := range imgs {
			_, _ = engine.ImageRemove(context.Background(), img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
	e := startGitHub(t, func(c *node.Config) {
		c.Docker = func(ctx context.Context, _ string, log *slog.Logger) (worker.Runtime, error) {
			return docker.New(ctx, docker.Config{Owner: owner, Logger: log})
		}
	})
	ctx, gh := e.ctx, e.gh
	server := string(dockertest.Server(t))
	files := map[string]string{
		"Dockerfile": dockertest.Dockerfile,
		"server":     server,
		"velo.toml":  "name = \"" + name + "\"\nruntime = \"docker\"\nport = 8080\n",
	}
	repo := gh.AddRepo("octo", "docked", "main", 42)
	repo.SetExecutable("server")
	repo.Commit(files, "docker")
	pr := gh.OpenPullRequest(repo, "", "feature", "Docker preview")
	preview := fmt.Sprintf("%s--pr-%d", name, pr.Number)
	// Leave nothing behind: the components (their containers).
	t.Cleanup(func() {
		for _, c := range []string{preview, name} {
			_ = e.c.Delete(context.Background(), c)
		}
	})
	getenv := func(component, key string) string {
		_, body := e.do("GET", "/fn/"+component+"/getenv?name="+key, "", nil)
		return body
	}
	e.deliver(gh.Push(ctx, e.hook(), repo, "main", "", ""))
	testsupport.Eventually(t, 120*time.Second, name+" serving", func() bool { return getenv(name, "PORT") == "8080" })

	const sandbox, prod = "sandbox-docker-51", "prod-docker-77"
	if _, err := e.c.SetSecretMarked(ctx, name, "SANDBOX_KEY", sandbox, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.SetSecret(ctx, name, "PROD_KEY", prod); err != nil {
		t.Fatal(err)
	}
	pr.Commit(files, "same tree, new commit")
	e.deliver(gh.PullRequestEvent(ctx, e.hook(), pr, "opened", "", ""))
	testsupport.Eventually(t, 120*time.Second, preview+" serving with the marked secret", func() bool { return getenv(preview, "SANDBOX_KEY") == sandbox })
	if got := getenv(preview, "PROD_KEY"); got != "(unset)" {
		t.Errorf("the preview's container has PROD_KEY = %q, want it unset", got)
	}
	if got := getenv(name, "PROD_KEY"); got != prod {
		t.Errorf("%s's container has PROD_KEY = %q", name, got)
	}
	if _, err := e.c.SetSecretMarked(ctx, name, "PROD_KEY", prod, true); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 120*time.Second, "the preview's new containers with PROD_KEY", func() bool { return getenv(preview, "PROD_KEY") == prod })
}
