package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// echoWasm is the C WAGI test module of package wasm; GET /env answers
// with its environment, so a component's [env] shows which commit serves.
func echoWasm(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../worker/wasm/testdata/echo.wasm")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ghVelo is an in-process Velo connected to a githubtest stand-in.
type ghVelo struct {
	t    *testing.T
	ctx  context.Context
	gh   *githubtest.Server
	n    *node.Node
	data string
	db   string
}

func newGHVelo(t *testing.T, db string) *ghVelo {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v := &ghVelo{t: t, ctx: ctx, gh: githubtest.New(t), data: t.TempDir(), db: db}
	v.start()
	return v
}

func (v *ghVelo) start() {
	v.t.Helper()
	cfg := v.gh.Config()
	n, err := node.Start(v.ctx, node.Config{Addr: "127.0.0.1:0", DataDir: v.data, DatabaseURL: v.db, GitHub: &cfg})
	if err != nil {
		v.t.Fatal(err)
	}
	v.n = n
	v.t.Cleanup(func() { n.Close() })
}

func (v *ghVelo) hook() string { return v.n.URL + github.WebhookPath }

// answer reads a webhook response, checks its status and returns the
// delivery ID.
func (v *ghVelo) answer(want int) func(*http.Response, error) string {
	return func(resp *http.Response, err error) string {
		v.t.Helper()
		return v.check(resp, err, want)
	}
}

func (v *ghVelo) check(resp *http.Response, err error, want int) string {
	v.t.Helper()
	if err != nil {
		v.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		v.t.Fatalf("webhook answered %d %s, want %d", resp.StatusCode, body, want)
	}
	return resp.Request.Header.Get(github.HeaderDelivery)
}

// body GETs path on the node.
func (v *ghVelo) body(path string) (int, string) {
	res, err := http.Get(v.n.URL + path)
	if err != nil {
		v.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func (v *ghVelo) serves(name, want string) func() bool {
	return func() bool {
		code, body := v.body("/fn/" + name + "/env")
		return code == 200 && strings.Contains(body, want)
	}
}

func (v *ghVelo) deployments(name string) []store.Deployment {
	v.t.Helper()
	ds, err := v.n.Store.Deployments(v.ctx, name, 0)
	if err != nil {
		v.t.Fatal(err)
	}
	return ds
}

func (v *ghVelo) component(name string) store.Component {
	v.t.Helper()
	c, err := v.n.Store.Component(v.ctx, name)
	if err != nil {
		v.t.Fatal(err)
	}
	return c
}

// job waits for the job of delivery to end and returns it.
func (v *ghVelo) job(delivery string) store.GitHubJob {
	v.t.Helper()
	var j store.GitHubJob
	testsupport.Eventually(v.t, 60*time.Second, "job "+delivery+" to end", func() bool {
		var err error
		j, err = v.n.Store.GitHubJob(v.ctx, delivery)
		return err == nil && (j.State == store.JobDone || j.State == store.JobFailed)
	})
	return j
}

// ghDeployments returns the GitHub deployments of repo.
func (v *ghVelo) ghDeployments(repo *githubtest.Repo) []githubtest.Deployment {
	return v.gh.Deployments(repo.Owner, repo.Name)
}

func states(d githubtest.Deployment) []string {
	var out []string
	for _, s := range d.Statuses {
		out = append(out, s.State)
	}
	return out
}

// settledOn waits until the GitHub deployment of sha has a final status.
func (v *ghVelo) settledOn(repo *githubtest.Repo, sha string) githubtest.Deployment {
	v.t.Helper()
	var got githubtest.Deployment
	testsupport.Eventually(v.t, 60*time.Second, "a final GitHub status for "+sha, func() bool {
		for _, d := range v.ghDeployments(repo) {
			if d.SHA == sha && len(d.Statuses) >= 2 {
				got = d
				return true
			}
		}
		return false
	})
	return got
}

func (v *ghVelo) apiRequest(c *http.Client, method, path, token string, body any) (int, []byte) {
	v.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(v.ctx, method, v.n.URL+path, rd)
	if err != nil {
		v.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c == nil {
		c = http.DefaultClient
	} else if c.Jar != nil {
		// What the dashboard's scripts send with the session cookie.
		for _, ck := range c.Jar.Cookies(req.URL) {
			if ck.Name == auth.SessionCookie {
				req.Header.Set(auth.CSRFHeader, auth.CSRFTokenOf(ck.Value))
			}
		}
	}
	res, err := c.Do(req)
	if err != nil {
		v.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func componentNames(t *testing.T, b []byte) []string {
	t.Helper()
	var cs []api.Component
	if err := json.Unmarshal(b, &cs); err != nil {
		t.Fatalf("components %s: %v", b, err)
	}
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	slices.Sort(out)
	return out
}

// TestGitHubPushSQLite and TestGitHubPushPostgres drive push → live end to
// end: a real in-process Velo, the GitHub stand-in delivering signed
// webhooks and serving tarballs, the Deployments API hearing back.
func TestGitHubPushSQLite(t *testing.T) {
	t.Parallel()
	testGitHubPush(t, "")
}

func TestGitHubPushPostgres(t *testing.T) {
	t.Parallel()
	testGitHubPush(t, pgtest.URL(t))
}

func testGitHubPush(t *testing.T, db string) {
	v := newGHVelo(t, db)
	ctx, gh := v.ctx, v.gh
	wasm := echoWasm(t)
	files := func(version string) map[string]string {
		return map[string]string{
			"velo.toml": "name = \"hello\"\nmodule = \"echo.wasm\"\n[env]\nVERSION = \"" + version + "\"\n",
			"echo.wasm": wasm,
			"README.md": "hello\n",
		}
	}
	// The default branch is neither main nor master.
	repo := gh.AddRepo("octo", "hello-app", "trunk", 42)

	// 1. A signed push to the default branch deploys and serves the commit;
	// GitHub hears in_progress, then success with the component's URL.
	sha1 := repo.Commit(files("v1"), "first version")
	start := time.Now()
	v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "trunk", "", ""))
	if d := time.Since(start); d > time.Second {
		t.Errorf("webhook answered after %s, want under a second", d)
	}
	testsupport.Eventually(v.t, 60*time.Second, "v1 served", v.serves("hello", "VERSION=v1"))
	d1 := v.settledOn(repo, sha1)
	if got := states(d1); !slices.Equal(got, []string{"in_progress", "success"}) {
		t.Fatalf("statuses of %s = %v, want in_progress then success", sha1, got)
	}
	if d1.Environment != "production" || d1.AutoMerge || d1.RequiredContexts == nil || len(d1.RequiredContexts) != 0 {
		t.Errorf("github deployment = %+v", d1)
	}
	wantURL := v.n.URL + "/fn/hello/"
	ok := d1.Statuses[1]
	if ok.EnvironmentURL != wantURL {
		t.Errorf("success environment_url = %q, want %q", ok.EnvironmentURL, wantURL)
	}
	comp := v.component("hello")
	if comp.Repo != "octo/hello-app" {
		t.Errorf("component repo = %q", comp.Repo)
	}
	live, err := v.n.Store.Deployment(ctx, comp.Live)
	if err != nil {
		t.Fatal(err)
	}
	if live.Commit != sha1 || live.Source != "github" || live.Message != "first version" || live.CommitTime.IsZero() {
		t.Errorf("live deployment = %+v", live)
	}
	if !strings.HasSuffix(ok.LogURL, fmt.Sprintf("/components/hello/deployments/%d", live.ID)) {
		t.Errorf("success log_url = %q", ok.LogURL)
	}
	for _, dl := range gh.Downloads() {
		if dl.Authorization != "" {
			t.Errorf("tarball download carried Authorization %q", dl.Authorization)
		}
	}
	if _, err := v.n.Store.GitHubRepo(ctx, "OCTO/hello-app"); err != nil {
		t.Errorf("pushed repository not recorded: %v", err)
	}

	// 2. A second push replaces it.
	sha2 := repo.Commit(files("v2"), "second version")
	first := v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "trunk", "", ""))
	testsupport.Eventually(v.t, 60*time.Second, "v2 served", v.serves("hello", "VERSION=v2"))
	v.settledOn(repo, sha2)
	_ = first

	// 3. Deliveries that must change nothing.
	nDeps, liveID, nGH := len(v.deployments("hello")), v.component("hello").Live, len(v.ghDeployments(repo))
	jobsBefore, _ := v.n.Store.GitHubJobs(ctx)
	payload, _ := json.Marshal(gh.PushPayload(repo, "trunk", sha1, sha2))
	for _, tc := range []struct {
		name string
		sig  string
	}{
		{"unsigned", ""},
		{"forged", "sha256=" + strings.Repeat("ab", 32)},
		{"sha1 only", ""},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, v.hook(), bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(github.HeaderEvent, "push")
		req.Header.Set(github.HeaderDelivery, "forged-"+tc.name)
		if tc.sig != "" {
			req.Header.Set(github.HeaderSignature, tc.sig)
		}
		if tc.name == "sha1 only" {
			req.Header.Set(github.HeaderSignature1, "sha1=0000000000000000000000000000000000000000")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s delivery answered %d, want 401", tc.name, res.StatusCode)
		}
	}
	if jobs, _ := v.n.Store.GitHubJobs(ctx); len(jobs) != len(jobsBefore) {
		t.Errorf("bad signatures stored jobs: %d before, %d after", len(jobsBefore), len(jobs))
	}
	feature := repo.CommitTo("feature", files("feature"), "feature work")
	v.answer(http.StatusOK)(gh.Push(ctx, v.hook(), repo, "feature", "", ""))
	v.answer(http.StatusOK)(gh.Push(ctx, v.hook(), repo, "refs/tags/v1.0.0", githubtest.ZeroSHA, feature))
	v.answer(http.StatusOK)(gh.Push(ctx, v.hook(), repo, "feature", feature, githubtest.ZeroSHA))
	v.answer(http.StatusOK)(gh.Push(ctx, v.hook(), repo, "trunk", repo.Head("trunk"), githubtest.ZeroSHA)) // default branch deleted
	v.answer(http.StatusOK)(gh.Redeliver(ctx, first))
	// A late delivery of an older commit (its push arrives after a newer
	// one went live) is refused.
	stale := gh.PushPayload(repo, "trunk", "", sha1)
	stale["head_commit"].(map[string]any)["timestamp"] = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	staleID := v.answer(http.StatusAccepted)(gh.Deliver(ctx, v.hook(), "push", stale))
	if j := v.job(staleID); j.State != store.JobDone || !strings.Contains(j.Note, "stale push ignored") {
		t.Errorf("stale push job = %s %q", j.State, j.Note)
	}
	// The redelivery of the stale push changes nothing either.
	v.answer(http.StatusOK)(gh.Redeliver(ctx, staleID))
	// Other events are acknowledged.
	v.answer(http.StatusOK)(gh.Deliver(ctx, v.hook(), "issues", map[string]any{"action": "opened"}))
	v.answer(http.StatusOK)(gh.Deliver(ctx, v.hook(), "ping", map[string]any{"zen": "Keep it logically awesome.", "hook_id": 1}))
	// What a delivery queues is recorded before it is answered: once no job
	// is left to run, whatever the deliveries set going has acted, and only
	// the stale push may have run (the others were recorded as ignored).
	testsupport.Eventually(t, 60*time.Second, "every GitHub job to end", func() bool {
		open, err := v.n.Store.GitHubJobs(ctx, store.JobQueued, store.JobRunning)
		return err == nil && len(open) == 0
	})
	jobsAfter, err := v.n.Store.GitHubJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobsAfter {
		if !slices.ContainsFunc(jobsBefore, func(b store.GitHubJob) bool { return b.Delivery == j.Delivery }) &&
			j.Delivery != staleID && !strings.HasPrefix(j.Note, "ignored: ") {
			t.Errorf("delivery %s (%s) was acted on: %s %q", j.Delivery, j.Kind, j.State, j.Note)
		}
	}
	// The stale push alone is recorded, as skipped, on the component and
	// on GitHub (an inactive deployment saying why).
	if got := len(v.deployments("hello")); got != nDeps+1 {
		t.Errorf("ignored deliveries changed deployments: %d → %d, want one skipped more", nDeps, got)
	}
	if d := v.deployments("hello")[0]; d.Status != store.StatusSkipped || d.Commit != sha1 {
		t.Errorf("stale push recorded as %+v", d)
	}
	if got := v.component("hello").Live; got != liveID {
		t.Errorf("ignored deliveries changed the live deployment: %d → %d", liveID, got)
	}
	if ds := v.ghDeployments(repo); len(ds) != nGH+1 {
		t.Errorf("ignored deliveries created GitHub deployments: %d → %d, want one inactive more", nGH, len(ds))
	} else if last := ds[len(ds)-1]; last.SHA != sha1 || !slices.Equal(states(last), []string{"inactive"}) {
		t.Errorf("stale push on GitHub: %s %v", last.SHA, states(last))
	}
	if !v.serves("hello", "VERSION=v2")() {
		t.Errorf("v2 no longer served after ignored deliveries")
	}

	// 4. A push with a bad velo.toml fails with the reason, and GitHub
	// gets failure with a log_url to the failed deployment's page.
	bad := files("v3")
	bad["velo.toml"] = "name = \"hello\"\nprot = 8080\n"
	badSHA := repo.Commit(bad, "typo")
	badID := v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "trunk", "", ""))
	fd := v.settledOn(repo, badSHA)
	if got := states(fd); !slices.Equal(got, []string{"in_progress", "failure"}) {
		t.Fatalf("statuses of bad push = %v", got)
	}
	fail := fd.Statuses[1]
	if !strings.Contains(fail.Description, `unknown key "prot"`) {
		t.Errorf("failure description = %q", fail.Description)
	}
	latest := v.deployments("hello")[0]
	if latest.Status != store.StatusFailed || latest.Commit != badSHA || !strings.Contains(latest.Error, "prot") {
		t.Errorf("failed push recorded as %+v", latest)
	}
	if want := fmt.Sprintf("%s/components/hello/deployments/%d", v.n.URL, latest.ID); fail.LogURL != want {
		t.Errorf("failure log_url = %q, want %q", fail.LogURL, want)
	}
	if j := v.job(badID); j.State != store.JobFailed || !strings.Contains(j.Note, "prot") {
		t.Errorf("bad push job = %s %q", j.State, j.Note)
	}
	if v.component("hello").Live != liveID {
		t.Errorf("a failed push changed the live deployment")
	}

	// 5. Another repository's push cannot take the name: clear failure.
	thief := gh.AddRepo("mallory", "copycat", "main", 77)
	thiefSHA := thief.Commit(files("stolen"), "take over")
	v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), thief, "main", "", ""))
	td := v.settledOn(thief, thiefSHA)
	if st := td.Statuses[len(td.Statuses)-1]; st.State != "failure" || !strings.Contains(st.Description, "already used by octo/hello-app") {
		t.Errorf("name clash reported as %s %q", st.State, st.Description)
	}
	if v.component("hello").Repo != "octo/hello-app" || v.component("hello").Live != liveID {
		t.Errorf("another repository took over hello")
	}

	// 6. Restart in the middle of a job: a job left running resumes.
	sha3 := repo.Commit(files("v3"), "third version")
	v.n.Close()
	st := openStoreOf(t, v)
	p, _ := json.Marshal(github.Push{
		InstallationID: 42, RepoID: repo.ID, Owner: "octo", Repo: "hello-app", FullName: "octo/hello-app",
		Ref: "refs/heads/trunk", DefaultBranch: "trunk", After: sha3,
		HeadCommit: github.CommitInfo{SHA: sha3, Message: "third version", Author: "Mona Lisa", Time: time.Now().UTC()},
	})
	if _, err := st.CreateGitHubJob(ctx, store.GitHubJob{Delivery: "crashed-1", Kind: "push", Repo: "octo/hello-app", Payload: p, State: store.JobRunning}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	v.start()
	testsupport.Eventually(v.t, 60*time.Second, "v3 served after restart", v.serves("hello", "VERSION=v3"))
	if j := v.job("crashed-1"); j.State != store.JobDone {
		t.Errorf("resumed job = %s %q", j.State, j.Note)
	}
	if got := states(v.settledOn(repo, sha3)); got[len(got)-1] != "success" {
		t.Errorf("statuses after resume = %v", got)
	}

	// 7. The Start button: POST /api/v1/components {"repo"} deploys the
	// head of the default branch of a repository the App was added to.
	other := gh.AddRepo("octo", "Other.Thing", "develop", 42)
	otherSHA := other.Commit(map[string]string{"echo.wasm": wasm}, "no manifest")
	v.answer(http.StatusAccepted)(gh.Deliver(ctx, v.hook(), "installation_repositories", map[string]any{
		"action":               "added",
		"installation":         map[string]any{"id": 42, "account": map[string]any{"login": "octo", "id": 1, "type": "User"}},
		"repository_selection": "selected",
		"repositories_added":   []any{map[string]any{"id": other.ID, "name": other.Name, "full_name": other.FullName(), "private": true}},
		"repositories_removed": []any{},
		"sender":               map[string]any{"login": "octo", "id": 1},
	}))
	testsupport.Eventually(v.t, 60*time.Second, "octo/Other.Thing recorded", func() bool {
		_, err := v.n.Store.GitHubRepo(ctx, "octo/other.thing")
		return err == nil
	})
	code, b := v.apiRequest(nil, http.MethodPost, "/api/v1/components", v.n.Token, map[string]string{"repo": "octo/Other.Thing"})
	if code != http.StatusAccepted {
		t.Fatalf("POST /api/v1/components = %d %s", code, b)
	}
	var started api.Deployment
	if err := json.Unmarshal(b, &started); err != nil || started.Component != "other-thing" || started.Commit != otherSHA {
		t.Fatalf("started deployment = %+v (%v)", started, err)
	}
	testsupport.Eventually(v.t, 60*time.Second, "other-thing served", v.serves("other-thing", "PATH_INFO=/env"))
	if got := states(v.settledOn(other, otherSHA)); !slices.Equal(got, []string{"in_progress", "success"}) {
		t.Errorf("statuses of start = %v", got)
	}
	code, b = v.apiRequest(nil, http.MethodPost, "/api/v1/components", v.n.Token, map[string]string{"repo": "nobody/nothing"})
	if code != http.StatusNotFound || !strings.Contains(string(b), "not installed") {
		t.Errorf("start of an uninstalled repo = %d %s", code, b)
	}
	// A repository added to the installation while its webhook did not
	// reach Velo (long after Velo's sync at start): Velo asks GitHub.
	quiet := gh.AddRepo("octo", "quiet", "main", 42)
	quiet.Commit(map[string]string{"velo.toml": "name = \"quiet\"\n", "echo.wasm": wasm}, "first")
	if code, b := v.apiRequest(nil, http.MethodPost, "/api/v1/components", v.n.Token, map[string]string{"repo": "octo/quiet"}); code != http.StatusAccepted {
		t.Fatalf("start of a repository Velo missed the webhook of = %d %s", code, b)
	}
	testsupport.Eventually(v.t, 60*time.Second, "quiet served", v.serves("quiet", "PATH_INFO=/env"))
}

// openStoreOf opens the store of a stopped node.
func openStoreOf(t *testing.T, v *ghVelo) *store.Store {
	t.Helper()
	url := v.db
	if url == "" {
		abs, err := filepath.Abs(filepath.Join(v.data, "velo.db"))
		if err != nil {
			t.Fatal(err)
		}
		url = "sqlite://" + abs
	}
	st, err := store.Open(v.ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// browser is an HTTP client with cookies that follows redirects.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

// TestGitHubSignIn signs users in through the stand-in's OAuth and checks
// that each sees and controls only the components of repositories their
// account reaches through the App's installations.
func TestGitHubSignIn(t *testing.T) {
	t.Parallel()
	v := newGHVelo(t, "")
	ctx, gh := v.ctx, v.gh
	wasm := echoWasm(t)
	alice := gh.AddRepo("alice", "site", "main", 1)
	bob := gh.AddRepo("bob", "site", "main", 2)
	gh.AddUser("alice", 1)
	gh.AddUser("bob", 2)
	for _, r := range []*githubtest.Repo{alice, bob} {
		sha := r.Commit(map[string]string{"velo.toml": "name = \"" + r.Owner + "-site\"\n", "echo.wasm": wasm}, "init")
		v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), r, "main", "", ""))
		v.settledOn(r, sha)
	}
	bobDep := v.component("bob-site").Live

	// A callback that did not start here is refused.
	if code, _ := v.body(github.CallbackPath + "?code=x&state=y"); code != http.StatusBadRequest {
		t.Errorf("callback without state cookie = %d, want 400", code)
	}

	// Alice signs in with GitHub.
	gh.SignIn("alice")
	c := browser(t)
	res, err := c.Get(v.n.URL + "/auth/github/login")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Request.URL.Path != "/" {
		t.Fatalf("sign-in ended at %s with %d", res.Request.URL, res.StatusCode)
	}
	var session *http.Cookie
	for _, ck := range c.Jar.Cookies(res.Request.URL) {
		if ck.Name == "velo_session" {
			session = ck
		}
	}
	if session == nil {
		t.Fatal("no velo_session cookie after sign-in")
	}

	code, b := v.apiRequest(c, http.MethodGet, "/api/v1/components", "", nil)
	if got := componentNames(t, b); code != 200 || !slices.Equal(got, []string{"alice-site"}) {
		t.Fatalf("alice's components = %d %v", code, got)
	}
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/components/bob-site"},
		{http.MethodGet, "/api/v1/components/bob-site/deployments"},
		{http.MethodGet, "/api/v1/deployments/" + strconv.FormatInt(bobDep, 10)},
		{http.MethodPost, "/api/v1/components/bob-site/pause"},
		{http.MethodPost, "/api/v1/components/bob-site/rollback"},
		{http.MethodGet, "/api/v1/components/bob-site/logs"},
		{http.MethodGet, "/api/v1/components/bob-site/stats"},
		{http.MethodDelete, "/api/v1/components/bob-site"},
	} {
		if code, b := v.apiRequest(c, tc.method, tc.path, "", nil); code != http.StatusNotFound {
			t.Errorf("alice: %s %s = %d %s, want 404", tc.method, tc.path, code, b)
		}
	}
	if code, b := v.apiRequest(c, http.MethodPost, "/api/v1/components", "", map[string]string{"repo": "bob/site"}); code != http.StatusNotFound {
		t.Errorf("alice starting bob/site = %d %s, want 404", code, b)
	}
	if code, b := v.apiRequest(c, http.MethodGet, "/api/v1/components/alice-site", "", nil); code != 200 {
		t.Errorf("alice: own component = %d %s", code, b)
	}
	if code, b := v.apiRequest(c, http.MethodPost, "/api/v1/components/alice-site/pause", "", nil); code != 200 {
		t.Errorf("alice: pause own component = %d %s", code, b)
	}
	if v.component("bob-site").Paused || !v.component("alice-site").Paused {
		t.Errorf("pause state wrong after alice's requests")
	}

	// A CLI token made by alice acts as alice.
	code, b = v.apiRequest(c, http.MethodPost, "/api/v1/tokens", "", map[string]string{"name": "laptop"})
	var tok struct{ Token, Name, User string }
	if err := json.Unmarshal(b, &tok); code != http.StatusCreated || err != nil || tok.Token == "" || tok.User != "github:alice" {
		t.Fatalf("POST /api/v1/tokens = %d %s", code, b)
	}
	if code, b := v.apiRequest(nil, http.MethodGet, "/api/v1/components", tok.Token, nil); code != 200 || !slices.Equal(componentNames(t, b), []string{"alice-site"}) {
		t.Errorf("alice's token lists %d %s", code, b)
	}
	if code, _ := v.apiRequest(nil, http.MethodGet, "/api/v1/components/bob-site", tok.Token, nil); code != http.StatusNotFound {
		t.Errorf("alice's token reads bob-site: %d", code)
	}
	if _, err := v.n.Store.TokenByHash(ctx, tok.Token); err == nil {
		t.Errorf("token stored in the clear")
	}

	// Bob, in another browser, sees only his.
	gh.SignIn("bob")
	cb := browser(t)
	if res, err := cb.Get(v.n.URL + "/auth/github/login"); err != nil {
		t.Fatal(err)
	} else {
		res.Body.Close()
	}
	if code, b := v.apiRequest(cb, http.MethodGet, "/api/v1/components", "", nil); code != 200 || !slices.Equal(componentNames(t, b), []string{"bob-site"}) {
		t.Errorf("bob's components = %d %s", code, b)
	}

	// Sign out ends the session.
	if code, _ := v.apiRequest(c, http.MethodPost, "/auth/logout", "", nil); code != 200 {
		t.Errorf("logout ended with %d", code)
	}
	if code, _ := v.apiRequest(c, http.MethodGet, "/api/v1/components", "", nil); code != http.StatusUnauthorized {
		t.Errorf("after logout: %d, want 401", code)
	}
	// The stolen cookie is dead too.
	req, _ := http.NewRequest(http.MethodGet, v.n.URL+"/api/v1/components", nil)
	req.AddCookie(session)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Errorf("old session cookie after logout: %v %v", res.StatusCode, err)
	}

	// The admin's one-click sign-in sees everything, and the token leaves
	// the address bar.
	ca := browser(t)
	if res, err := ca.Get(v.n.URL + "/login?token=wrong"); err != nil || res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("login with a wrong token: %v %v", res.StatusCode, err)
	}
	if !strings.Contains(v.n.LoginURL, "/login?token="+v.n.Token) {
		t.Fatalf("LoginURL = %q", v.n.LoginURL)
	}
	noRedirect := &http.Client{Jar: ca.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err = noRedirect.Get(v.n.LoginURL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Fatalf("admin login = %d to %q", res.StatusCode, res.Header.Get("Location"))
	}
	sc := res.Header.Get("Set-Cookie")
	for _, want := range []string{"velo_session=", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(sc, want) {
			t.Errorf("session cookie %q lacks %s", sc, want)
		}
	}
	if strings.Contains(sc, "Secure") {
		t.Errorf("session cookie on http is Secure: %q", sc)
	}
	if code, b := v.apiRequest(ca, http.MethodGet, "/api/v1/components", "", nil); code != 200 || !slices.Equal(componentNames(t, b), []string{"alice-site", "bob-site"}) {
		t.Errorf("admin's components = %d %s", code, b)
	}
}

// TestGitHubSetup runs velo github setup against the stand-in: the local
// page posts the manifest, GitHub sends the browser back with a code, and
// the credentials land where velo up reads them.
func TestGitHubSetup(t *testing.T) {
	t.Parallel()
	gh := githubtest.New(t)
	data := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	var errOut bytes.Buffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"github", "setup", "--data", data, "--public-url", "https://velo.example.test/",
			"--web-url", gh.WebURL(), "--api-url", gh.URL(), "--name", "velo-test-app"}, pw, &errOut)
		pw.Close()
	}()
	out, err := readUntil(pr, "/ in your browser")
	if err != nil {
		t.Fatalf("setup output %q: %v (stderr %s)", out, err, errOut.String())
	}
	local := out[strings.Index(out, "http://"):strings.Index(out, "/ in your browser")]
	go io.Copy(io.Discard, pr)

	// The browser: open the page, submit its form to GitHub, follow
	// GitHub's redirect back.
	c := browser(t)
	res, err := c.Get(local + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	action, manifest := formField(t, string(page), "action"), formField(t, string(page), "value")
	if !strings.HasPrefix(action, gh.WebURL()+"/settings/apps/new?state=") {
		t.Fatalf("form posts to %q", action)
	}
	res, err = c.PostForm(action, map[string][]string{"manifest": {manifest}})
	if err != nil {
		t.Fatal(err)
	}
	done, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(done), "is ready") {
		t.Fatalf("after GitHub: %d %s", res.StatusCode, done)
	}
	if code := <-exit; code != 0 {
		t.Fatalf("velo github setup exited %d: %s", code, errOut.String())
	}

	ms := gh.Manifests()
	if len(ms) != 1 {
		t.Fatalf("manifests posted: %d", len(ms))
	}
	hook := ms[0]["hook_attributes"].(map[string]any)
	if hook["url"] != "https://velo.example.test/webhooks/github" || ms[0]["name"] != "velo-test-app" {
		t.Errorf("manifest = %v", ms[0])
	}
	if cb := ms[0]["callback_urls"].([]any); len(cb) != 1 || cb[0] != "https://velo.example.test/auth/github/callback" {
		t.Errorf("callback_urls = %v", cb)
	}

	for _, f := range []string{"github.env", "github/private-key.pem"} {
		fi, err := os.Stat(filepath.Join(data, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	// velo up reads the file; the environment wins over it.
	getenv, err := githubEnv(data, func(k string) string {
		if k == "VELO_PUBLIC_URL" {
			return "https://override.example.test"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg, on, err := github.ConfigFromEnv(getenv)
	if err != nil || !on {
		t.Fatalf("ConfigFromEnv from github.env: %v %v", on, err)
	}
	want := gh.Config()
	if cfg.AppID != want.AppID || string(cfg.PrivateKey) != string(want.PrivateKey) || string(cfg.WebhookSecret) != string(want.WebhookSecret) ||
		cfg.ClientID != want.ClientID || cfg.ClientSecret != want.ClientSecret || cfg.APIURL != gh.URL() || cfg.WebURL != gh.WebURL() {
		t.Errorf("config from github.env = %+v", cfg)
	}
	if got := getenv("VELO_PUBLIC_URL"); got != "https://override.example.test" {
		t.Errorf("VELO_PUBLIC_URL = %q, the environment should win", got)
	}
	if got, _ := githubEnv(data, func(string) string { return "" }); got("VELO_PUBLIC_URL") != "https://velo.example.test" {
		t.Errorf("VELO_PUBLIC_URL from github.env = %q", got("VELO_PUBLIC_URL"))
	}
}

// readUntil reads r until its text contains marker.
func readUntil(r io.Reader, marker string) (string, error) {
	var b []byte
	buf := make([]byte, 256)
	for !strings.Contains(string(b), marker) {
		n, err := r.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			return string(b), err
		}
	}
	return string(b), nil
}

// formField extracts the first attr="…" value from a page, unescaped.
func formField(t *testing.T, page, attr string) string {
	t.Helper()
	i := strings.Index(page, attr+`="`)
	if i < 0 {
		t.Fatalf("no %s in page:\n%s", attr, page)
	}
	rest := page[i+len(attr)+2:]
	return html.UnescapeString(rest[:strings.IndexByte(rest, '"')])
}

// TestGitHubPushAncestry replays ordinary pushes that a clock-based stale
// check drops: a fast-forward from a pusher whose clock is slow, and a
// force-push back to an older commit. Pushes are judged by the before and
// after chain and GitHub's compare API; only a delivery that really is
// older than what is live is skipped, and the skip shows on the component
// and on GitHub.
func TestGitHubPushAncestry(t *testing.T) {
	t.Parallel()
	v := newGHVelo(t, "")
	ctx, gh := v.ctx, v.gh
	wasm := echoWasm(t)
	files := func(version string) map[string]string {
		return map[string]string{
			"velo.toml": "name = \"anc\"\nmodule = \"echo.wasm\"\n[env]\nVERSION = \"" + version + "\"\n",
			"echo.wasm": wasm,
		}
	}
	repo := gh.AddRepo("octo", "anc", "main", 42)
	a := repo.Commit(files("a"), "A")
	v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", "", ""))
	testsupport.Eventually(t, 30*time.Second, "A served", v.serves("anc", "VERSION=a"))
	v.settledOn(repo, a)

	// A fast-forward whose before is the live commit, from a pusher whose
	// clock is a minute slow: its commit looks older than the live one.
	b := repo.Commit(files("b"), "B")
	slow := gh.PushPayload(repo, "main", a, b)
	slow["head_commit"].(map[string]any)["timestamp"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	for _, c := range slow["commits"].([]any) {
		c.(map[string]any)["timestamp"] = time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	}
	v.answer(http.StatusAccepted)(gh.Deliver(ctx, v.hook(), "push", slow))
	testsupport.Eventually(t, 30*time.Second, "B served (slow clock)", v.serves("anc", "VERSION=b"))
	if got := states(v.settledOn(repo, b)); got[len(got)-1] != "success" {
		t.Errorf("statuses of B = %v", got)
	}

	// git reset --hard HEAD~1 && git push --force: the branch goes back to
	// A, whose deployment is no longer live.
	repo.SetHead("main", a)
	back := gh.PushPayload(repo, "main", b, a)
	if back["forced"] != true {
		t.Fatalf("the stand-in did not mark the reset forced")
	}
	backID := v.answer(http.StatusAccepted)(gh.Deliver(ctx, v.hook(), "push", back))
	testsupport.Eventually(t, 30*time.Second, "A served again (force-push back)", v.serves("anc", "VERSION=a"))
	if j := v.job(backID); j.State != store.JobDone || strings.Contains(j.Note, "stale") {
		t.Errorf("force-push job = %s %q", j.State, j.Note)
	}

	// C0 and C on A go live in one push; then the delivery of an earlier
	// push of C0 arrives late (C0 is an ancestor of C): skipped, and said
	// so.
	c0 := repo.Commit(files("c0"), "C0")
	c := repo.Commit(files("c"), "C")
	v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", a, c))
	testsupport.Eventually(t, 30*time.Second, "C served", v.serves("anc", "VERSION=c"))
	v.settledOn(repo, c)
	nGH := len(v.ghDeployments(repo))
	late := gh.PushPayload(repo, "main", a, c0)
	// An honest clock would not save it either: the commit time says
	// newer, the ancestry says older.
	late["head_commit"].(map[string]any)["timestamp"] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	lateID := v.answer(http.StatusAccepted)(gh.Deliver(ctx, v.hook(), "push", late))
	j := v.job(lateID)
	if j.State != store.JobDone || !strings.Contains(j.Note, "stale push ignored") || !strings.Contains(j.Note, "ancestor") {
		t.Errorf("late push job = %s %q", j.State, j.Note)
	}
	ghds := v.ghDeployments(repo)
	if len(ghds) != nGH+1 {
		t.Fatalf("late push: %d GitHub deployments, want %d", len(ghds), nGH+1)
	}
	if d := ghds[len(ghds)-1]; d.SHA != c0 || !slices.Equal(states(d), []string{"inactive"}) || !strings.Contains(d.Statuses[0].Description, "stale push ignored") {
		t.Errorf("late push on GitHub = %s %v %+v", short(d.SHA), states(d), d.Statuses)
	}
	if latest := v.deployments("anc")[0]; latest.Status != store.StatusSkipped || latest.Commit != c0 || !strings.Contains(latest.Error, "ancestor") {
		t.Errorf("late push on the component = %+v", latest)
	}
	if !v.serves("anc", "VERSION=c")() {
		t.Errorf("C no longer served after the late push")
	}

	// X diverged from C and was force-pushed away before its delivery
	// came: stale. Y on X, whose forced push Velo missed, is the branch's
	// head: deployed.
	repo.SetHead("main", a)
	x := repo.Commit(files("x"), "X")
	repo.SetHead("main", c)
	xID := v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", a, x))
	if j := v.job(xID); !strings.Contains(j.Note, "no longer on main") {
		t.Errorf("push of a commit force-pushed away = %s %q", j.State, j.Note)
	}
	repo.SetHead("main", x)
	y := repo.Commit(files("y"), "Y")
	v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", x, y))
	testsupport.Eventually(t, 30*time.Second, "Y served", v.serves("anc", "VERSION=y"))
}

func short(sha string) string { return sha[:min(len(sha), 7)] }

// TestGitHubPreview drives previews of pull requests end to end: opened,
// synchronize, closed and reopened on a branch of the repository, and a
// fork's pull request that deploys only once someone with write access
// labels it velo-preview.
func TestGitHubPreview(t *testing.T) {
	t.Parallel()
	v := newGHVelo(t, "")
	ctx, gh := v.ctx, v.gh
	wasm := echoWasm(t)
	files := func(version string) map[string]string {
		return map[string]string{
			"velo.toml": "name = \"site\"\nmodule = \"echo.wasm\"\n[env]\nVERSION = \"" + version + "\"\n",
			"echo.wasm": wasm,
		}
	}
	repo := gh.AddRepo("octo", "site-repo", "main", 42)
	repo.Commit(files("main"), "main")
	v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", "", ""))
	testsupport.Eventually(t, 30*time.Second, "site served", v.serves("site", "VERSION=main"))

	previews := func() []githubtest.Deployment {
		var out []githubtest.Deployment
		for _, d := range v.ghDeployments(repo) {
			if d.Environment == "preview" {
				out = append(out, d)
			}
		}
		return out
	}
	lastState := func(d githubtest.Deployment) string {
		if len(d.Statuses) == 0 {
			return ""
		}
		return d.Statuses[len(d.Statuses)-1].State
	}
	comment := func(n int) githubtest.Comment {
		t.Helper()
		cs := gh.Comments(repo.Owner, repo.Name, n)
		if len(cs) != 1 {
			t.Fatalf("pull request #%d has %d comments, want exactly one: %+v", n, len(cs), cs)
		}
		return cs[0]
	}

	// 1. Opened: the head deploys as site--pr-N; GitHub hears of a
	// transient preview deployment; one comment has the URL.
	pr := gh.OpenPullRequest(repo, "", "feature", "Shout")
	name := fmt.Sprintf("site--pr-%d", pr.Number)
	head1 := pr.Commit(files("pr-one"), "shout")
	v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), pr, "opened", "", ""))
	testsupport.Eventually(t, 30*time.Second, name+" served", v.serves(name, "VERSION=pr-one"))
	testsupport.Eventually(t, 30*time.Second, "the preview reported live", func() bool {
		ps := previews()
		return len(ps) == 1 && lastState(ps[0]) == "success"
	})
	d1 := previews()[0]
	wantURL := v.n.URL + "/fn/" + name + "/"
	if d1.SHA != head1 || !d1.TransientEnvironment || d1.ProductionEnvironment || !slices.Equal(states(d1), []string{"in_progress", "success"}) ||
		d1.Statuses[1].EnvironmentURL != wantURL {
		t.Errorf("preview deployment = %+v", d1)
	}
	testsupport.Eventually(t, 30*time.Second, "the comment with the URL", func() bool {
		cs := gh.Comments(repo.Owner, repo.Name, pr.Number)
		return len(cs) == 1 && strings.Contains(cs[0].Body, wantURL) && strings.Contains(cs[0].Body, head1[:7])
	})
	if !v.serves("site", "VERSION=main")() {
		t.Errorf("the preview replaced the production component")
	}
	if c := v.component(name); c.Repo != repo.FullName() {
		t.Errorf("preview component repo = %q", c.Repo)
	}

	// 2. Synchronize: the new head replaces the preview, the comment is
	// edited (not a second one), the earlier GitHub deployment goes
	// inactive.
	head2 := pr.Commit(files("pr-two"), "louder")
	v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), pr, "synchronize", "", ""))
	testsupport.Eventually(t, 30*time.Second, name+" serves the new head", v.serves(name, "VERSION=pr-two"))
	testsupport.Eventually(t, 30*time.Second, "the comment edited for the new head", func() bool {
		cs := gh.Comments(repo.Owner, repo.Name, pr.Number)
		return len(cs) == 1 && strings.Contains(cs[0].Body, head2[:7]) && cs[0].Edits >= 1
	})
	testsupport.Eventually(t, 30*time.Second, "the first preview deployment inactive", func() bool {
		ps := previews()
		return len(ps) == 2 && lastState(ps[0]) == "inactive" && lastState(ps[1]) == "success"
	})
	// A late redelivery of the first head changes nothing.
	late := gh.PullRequestPayload(pr, "synchronize", "", "")
	late["pull_request"].(map[string]any)["head"].(map[string]any)["sha"] = head1
	lateID := v.answer(http.StatusAccepted)(gh.Deliver(ctx, v.hook(), "pull_request", late))
	if j := v.job(lateID); !strings.Contains(j.Note, "stale") {
		t.Errorf("late synchronize = %s %q", j.State, j.Note)
	}
	if !v.serves(name, "VERSION=pr-two")() {
		t.Errorf("a late synchronize replaced the preview")
	}

	// 3. Closed: the preview goes, GitHub's deployment goes inactive, the
	// comment says so.
	pr.Close(false)
	closeID := v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), pr, "closed", "", ""))
	if j := v.job(closeID); j.State != store.JobDone {
		t.Fatalf("close job = %s %q", j.State, j.Note)
	}
	if _, err := v.n.Store.Component(ctx, name); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("preview component after close: %v", err)
	}
	testsupport.Eventually(t, 30*time.Second, name+" gone from the router", func() bool {
		code, _ := v.body("/fn/" + name + "/env")
		return code == http.StatusNotFound
	})
	if ps := previews(); lastState(ps[len(ps)-1]) != "inactive" {
		t.Errorf("preview deployment after close: %v", states(ps[len(ps)-1]))
	}
	if c := comment(pr.Number); !strings.Contains(c.Body, "closed") {
		t.Errorf("comment after close = %q", c.Body)
	}
	if !v.serves("site", "VERSION=main")() {
		t.Errorf("closing the pull request touched the production component")
	}

	// 4. Reopened: deployed again, still one comment.
	pr.Reopen()
	v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), pr, "reopened", "", ""))
	testsupport.Eventually(t, 30*time.Second, name+" served after reopen", v.serves(name, "VERSION=pr-two"))
	testsupport.Eventually(t, 30*time.Second, "the comment back to live", func() bool {
		cs := gh.Comments(repo.Owner, repo.Name, pr.Number)
		return len(cs) == 1 && strings.Contains(cs[0].Body, wantURL)
	})

	// Pushes in quick succession, their jobs running at once: one
	// comment, ending on the newest head.
	fast := gh.OpenPullRequest(repo, "", "fast", "Quick")
	fastName := fmt.Sprintf("site--pr-%d", fast.Number)
	fast.Commit(files("fast-1"), "1")
	v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fast, "opened", "", ""))
	fast.Commit(files("fast-2"), "2")
	v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fast, "synchronize", "", ""))
	newest := fast.Commit(files("fast-3"), "3")
	v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fast, "synchronize", "", ""))
	testsupport.Eventually(t, 30*time.Second, fastName+" serves the newest head", v.serves(fastName, "VERSION=fast-3"))
	testsupport.Eventually(t, 30*time.Second, "every GitHub job to end", func() bool {
		open, err := v.n.Store.GitHubJobs(ctx, store.JobQueued, store.JobRunning)
		return err == nil && len(open) == 0
	})
	if c := comment(fast.Number); !strings.Contains(c.Body, newest[:7]) {
		t.Errorf("comment after quick pushes = %q, want %s", c.Body, newest[:7])
	}

	// 5. A fork's pull request: nothing runs until someone with write
	// access adds velo-preview.
	fork := gh.OpenPullRequest(repo, "mallory", "evil", "Totally harmless")
	fname := fmt.Sprintf("site--pr-%d", fork.Number)
	fork.Commit(files("fork-one"), "harmless")
	notDeployed := func(delivery string) store.GitHubJob {
		t.Helper()
		j := v.job(delivery)
		if _, err := v.n.Store.Component(ctx, fname); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("fork preview deployed after %q: %v", j.Note, err)
		}
		return j
	}
	j := notDeployed(v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fork, "opened", "", "")))
	if !strings.Contains(j.Note, "waiting for someone with write access") {
		t.Errorf("fork opened = %q", j.Note)
	}
	if c := comment(fork.Number); !strings.Contains(c.Body, "velo-preview") {
		t.Errorf("fork comment = %q", c.Body)
	}
	// Someone who may label but not write (triage) adds it: not enough.
	repo.SetPermission("tri", "triage")
	fork.AddLabel("velo-preview")
	j = notDeployed(v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fork, "labeled", "tri", "velo-preview")))
	if !strings.Contains(j.Note, "no write access") {
		t.Errorf("label by triage = %q", j.Note)
	}
	// The label alone, on the next push, is not an approval either.
	fork.Commit(files("fork-two"), "more")
	notDeployed(v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fork, "synchronize", "", "")))
	// Other labels are ignored at the door.
	v.answer(http.StatusOK)(gh.PullRequestEvent(ctx, v.hook(), fork, "labeled", "octo", "bug"))
	// A maintainer's label deploys it.
	repo.SetPermission("maint", "maintain")
	v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fork, "labeled", "maint", "velo-preview"))
	testsupport.Eventually(t, 30*time.Second, "fork preview served once approved", v.serves(fname, "VERSION=fork-two"))
	// Removing the label withdraws the approval: later pushes wait.
	fork.RemoveLabel("velo-preview")
	v.job(v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fork, "unlabeled", "maint", "velo-preview")))
	fork.Commit(files("fork-three"), "sneaky")
	j = v.job(v.answer(http.StatusAccepted)(gh.PullRequestEvent(ctx, v.hook(), fork, "synchronize", "", "")))
	if !strings.Contains(j.Note, "waiting") || !v.serves(fname, "VERSION=fork-two")() {
		t.Errorf("fork push after the label was removed: %q", j.Note)
	}
	// Other actions are acknowledged and ignored.
	v.answer(http.StatusOK)(gh.PullRequestEvent(ctx, v.hook(), fork, "assigned", "", ""))
}

// TestGitHubSeveralComponents deploys a repository whose root velo.toml
// lists components: a push deploys only those whose files changed, each
// with its own GitHub deployment; a commit list GitHub cut and a
// force-push back are settled with the compare API. velo deploy in the
// root deploys them all, or one with --only.
func TestGitHubSeveralComponents(t *testing.T) {
	t.Parallel()
	v := newGHVelo(t, "")
	ctx, gh := v.ctx, v.gh
	wasm := echoWasm(t)
	comp := func(name, version string) string {
		return "name = \"" + name + "\"\nmodule = \"echo.wasm\"\n[env]\nVERSION = \"" + version + "\"\n"
	}
	tree := map[string]string{
		"velo.toml":                     "components = [\"services/*\"]\n\n[[component]]\npath = \"web\"\n",
		"README.md":                     "mono\n",
		"services/api/velo.toml":        comp("api", "api-1"),
		"services/api/echo.wasm":        wasm,
		"services/worker/velo.toml":     comp("jobs", "jobs-1"),
		"services/worker/echo.wasm":     wasm,
		"web/velo.toml":                 comp("web", "web-1"),
		"web/echo.wasm":                 wasm,
		"docs/not-a-component/notes.md": "x\n",
	}
	commit := func(msg string, edits map[string]string) string {
		for k, val := range edits {
			tree[k] = val
		}
		return gh.Repo("octo", "mono").Commit(maps.Clone(tree), msg)
	}
	repo := gh.AddRepo("octo", "mono", "main", 42)
	lastStates := func(sha string) map[string]string {
		out := map[string]string{}
		for _, d := range v.ghDeployments(repo) {
			if d.SHA == sha && len(d.Statuses) > 0 {
				out[d.Environment] = d.Statuses[len(d.Statuses)-1].State
			}
		}
		return out
	}
	liveIDs := func() map[string]int64 {
		return map[string]int64{"api": v.component("api").Live, "jobs": v.component("jobs").Live, "web": v.component("web").Live}
	}

	// 1. The first push deploys every component, each with its own GitHub
	// deployment.
	first := commit("three components", nil)
	id := v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", "", ""))
	for _, want := range []string{"api=VERSION=api-1", "jobs=VERSION=jobs-1", "web=VERSION=web-1"} {
		name, env, _ := strings.Cut(want, "=")
		testsupport.Eventually(t, 30*time.Second, name+" served", v.serves(name, env))
	}
	if j := v.job(id); !strings.Contains(j.Note, "deploying api, jobs, web") {
		t.Errorf("push job note = %q", j.Note)
	}
	testsupport.Eventually(t, 30*time.Second, "three successes on GitHub", func() bool {
		s := lastStates(first)
		return s["production/api"] == "success" && s["production/jobs"] == "success" && s["production/web"] == "success"
	})
	if c := v.component("api"); c.Repo != "octo/mono" {
		t.Errorf("api repo = %q", c.Repo)
	}

	// 2. A change under services/api deploys api alone.
	before := liveIDs()
	second := commit("api v2", map[string]string{"services/api/velo.toml": comp("api", "api-2")})
	v.job(v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", "", "")))
	testsupport.Eventually(t, 30*time.Second, "api v2 served", v.serves("api", "VERSION=api-2"))
	testsupport.Eventually(t, 30*time.Second, "api's success on GitHub", func() bool { return lastStates(second)["production/api"] == "success" })
	if s := lastStates(second); len(s) != 1 {
		t.Errorf("GitHub deployments of the api-only push: %v", s)
	}
	if after := liveIDs(); after["jobs"] != before["jobs"] || after["web"] != before["web"] || after["api"] == before["api"] {
		t.Errorf("live deployments %v → %v, want api alone changed", before, after)
	}

	// 3. A change outside every component deploys nothing.
	before = liveIDs()
	commit("docs", map[string]string{"README.md": "mono, documented\n"})
	if j := v.job(v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", "", ""))); !strings.Contains(j.Note, "deploying none") {
		t.Errorf("README push = %q", j.Note)
	}
	if after := liveIDs(); !maps.Equal(after, before) {
		t.Errorf("a README change deployed: %v → %v", before, after)
	}

	// 4. More commits than GitHub lists in a push (2048): the change to
	// jobs is in a commit the payload leaves out; the compare API finds
	// it.
	base := repo.Head("main")
	for i := range githubtest.DefaultMaxPushCommits {
		commit("chore", map[string]string{"README.md": fmt.Sprintf("mono %d\n", i)})
	}
	commit("jobs v2", map[string]string{"services/worker/velo.toml": comp("jobs", "jobs-2")})
	long := gh.PushPayload(repo, "main", base, "")
	if n := len(long["commits"].([]any)); n != githubtest.DefaultMaxPushCommits {
		t.Fatalf("payload lists %d commits", n)
	}
	v.job(v.answer(http.StatusAccepted)(gh.Deliver(ctx, v.hook(), "push", long)))
	testsupport.Eventually(t, 30*time.Second, "jobs v2 served (cut commit list)", v.serves("jobs", "VERSION=jobs-2"))

	// 5. A force-push back to the first commit redeploys what it changes
	// back (api, jobs) and leaves web, which serves that very commit.
	webLive := v.component("web").Live
	old := repo.Head("main")
	repo.SetHead("main", first)
	v.job(v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", old, first)))
	testsupport.Eventually(t, 30*time.Second, "api back to v1", v.serves("api", "VERSION=api-1"))
	testsupport.Eventually(t, 30*time.Second, "jobs back to v1", v.serves("jobs", "VERSION=jobs-1"))
	if v.component("web").Live != webLive {
		t.Errorf("the force-push redeployed web, which did not change")
	}

	// 6. velo deploy in the root of such a tree: all, then --only one.
	dir := t.TempDir()
	for p, body := range map[string]string{
		"velo.toml":          "[[component]]\npath = \"a\"\n[[component]]\npath = \"b\"\n",
		"a/velo.toml":        comp("cli-a", "a-1"),
		"a/echo.wasm":        wasm,
		"b/velo.toml":        comp("cli-b", "b-1"),
		"b/echo.wasm":        wasm,
		"b/ignored-by-a.txt": "b\n",
		"unlisted/velo.toml": comp("cli-unlisted", "u"),
		"unlisted/echo.wasm": wasm,
	} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conn := []string{"--server", v.n.URL, "--token", v.n.Token}
	if out, errOut, code := velo(t, append([]string{"deploy", dir}, conn...)...); code != 0 {
		t.Fatalf("velo deploy of the root: exit %d\n%s\n%s", code, out, errOut)
	}
	testsupport.Eventually(t, 30*time.Second, "cli-a served", v.serves("cli-a", "VERSION=a-1"))
	testsupport.Eventually(t, 30*time.Second, "cli-b served", v.serves("cli-b", "VERSION=b-1"))
	if _, err := v.n.Store.Component(ctx, "cli-unlisted"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unlisted directory was deployed: %v", err)
	}
	aLive := v.component("cli-a").Live
	if err := os.WriteFile(filepath.Join(dir, "b/velo.toml"), []byte(comp("cli-b", "b-2")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := velo(t, append([]string{"deploy", dir, "--only", "cli-b"}, conn...)...); code != 0 {
		t.Fatalf("velo deploy --only: exit %d\n%s\n%s", code, out, errOut)
	}
	testsupport.Eventually(t, 30*time.Second, "cli-b v2 served", v.serves("cli-b", "VERSION=b-2"))
	if v.component("cli-a").Live != aLive {
		t.Errorf("--only cli-b redeployed cli-a")
	}
	if _, errOut, code := velo(t, append([]string{"deploy", dir, "--only", "nope"}, conn...)...); code == 0 || !strings.Contains(errOut, "cli-a, cli-b") {
		t.Errorf("--only of an unknown component: exit %d, %q", code, errOut)
	}
}
