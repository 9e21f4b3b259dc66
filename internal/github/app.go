package github

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/golang-jwt/jwt/v4"
	gh "github.com/google/go-github/v50/github"
)

// userAgent is sent on every API call; GitHub rejects requests without one.
const userAgent = "velo"

// Errors callers branch on.
var (
	// ErrNotFound: GitHub answered 404 — the repository, commit or
	// installation does not exist or the token may not see it (GitHub does
	// not distinguish the two).
	ErrNotFound = errors.New("not found on github")
	// ErrUnauthorized: GitHub answered 401 — the token is not (or no
	// longer) valid: expired, revoked, or the App was uninstalled by the
	// user.
	ErrUnauthorized = errors.New("github refused the token")
	// ErrTooLarge: a tarball or webhook body exceeds the caller's limit.
	ErrTooLarge = errors.New("too large")
)

// App is a GitHub App client. It keeps one token-caching transport per
// installation, so installation tokens are fetched once and renewed shortly
// before they expire. Safe for concurrent use.
type App struct {
	cfg    Config
	apiURL *url.URL
	key    *rsa.PrivateKey
	// base carries every request; plain is a client on base without any
	// GitHub credentials, used for downloads from other hosts.
	base  http.RoundTripper
	plain *http.Client
	// app is authenticated as the App itself (JWT).
	app *gh.Client

	mu       sync.Mutex
	installs map[int64]*gh.Client
}

// NewApp returns a client for the App in cfg. httpClient supplies the
// transport and timeout; nil means http.DefaultClient.
func NewApp(cfg Config, httpClient *http.Client) (*App, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(cfg.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("github app key: %w", err)
	}
	apiURL, err := url.Parse(cfg.APIURL)
	if err != nil {
		return nil, fmt.Errorf("github api url: %w", err)
	}
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	base := httpClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	a := &App{
		cfg:      cfg,
		apiURL:   apiURL,
		key:      key,
		base:     base,
		plain:    &http.Client{Transport: base, Timeout: httpClient.Timeout},
		installs: make(map[int64]*gh.Client),
	}
	a.app = a.client(&http.Client{Transport: a.appsTransport(), Timeout: httpClient.Timeout})
	return a, nil
}

// Config returns the configuration a was built with, defaults applied.
func (a *App) Config() Config { return a.cfg }

// appsTransport signs each request with a fresh App JWT. ghinstallation
// wants BaseURL as scheme, host and API path without the trailing slash
// (it appends "/app/installations/{id}/access_tokens"), e.g.
// "https://api.github.com" or "https://ghe.example.com/api/v3".
func (a *App) appsTransport() *ghinstallation.AppsTransport {
	atr := ghinstallation.NewAppsTransportFromPrivateKey(a.base, a.cfg.AppID, a.key)
	atr.BaseURL = strings.TrimSuffix(a.cfg.APIURL, "/")
	return atr
}

// client returns a go-github client on hc whose base URL is exactly
// APIURL. NewEnterpriseClient is not used on purpose: it appends "api/v3/"
// to any host not named api.*, which would break a stand-in or a proxy.
func (a *App) client(hc *http.Client) *gh.Client {
	c := gh.NewClient(hc)
	u := *a.apiURL
	c.BaseURL = &u
	up := *a.apiURL
	c.UploadURL = &up
	c.UserAgent = userAgent
	return c
}

// installation returns the cached client acting as installation id.
func (a *App) installation(id int64) *gh.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.installs[id]; ok {
		return c
	}
	// Each installation transport gets its own AppsTransport: ghinstallation
	// writes BaseURL and Client into the AppsTransport on every token
	// refresh, which would race if the AppsTransport were shared.
	itr := ghinstallation.NewFromAppsTransport(a.appsTransport(), id)
	c := a.client(&http.Client{Transport: itr, Timeout: a.plain.Timeout})
	a.installs[id] = c
	return c
}

// apiError wraps err with context, marking 404 answers with ErrNotFound.
func apiError(what string, resp *gh.Response, err error) error {
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	var herr *ghinstallation.HTTPError
	if errors.As(err, &herr) && herr.Response != nil {
		status = herr.Response.StatusCode
	}
	switch status {
	case http.StatusNotFound:
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, err)
	case http.StatusUnauthorized:
		return fmt.Errorf("%s: %w: %w", what, ErrUnauthorized, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Tarball downloads the gzipped tarball of owner/repo at sha. GitHub answers
// the API call with a 302 to a short-lived, self-authenticating URL on
// another host (codeload); that URL is fetched without the installation
// token, so the token never leaves the API host. The body fails with
// ErrTooLarge once more than maxBytes have been read (maxBytes <= 0: no
// limit). The caller closes it.
func (a *App) Tarball(ctx context.Context, installationID int64, owner, repo, sha string, maxBytes int64) (io.ReadCloser, error) {
	c := a.installation(installationID)
	opts := &gh.RepositoryContentGetOptions{Ref: sha}
	link, resp, err := c.Repositories.GetArchiveLink(ctx, owner, repo, gh.Tarball, opts, false)
	if err != nil {
		return nil, apiError(fmt.Sprintf("tarball link %s/%s@%s", owner, repo, sha), resp, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("tarball %s/%s@%s: %w", owner, repo, sha, err)
	}
	req.Header.Set("User-Agent", userAgent)
	dl, err := a.plain.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download tarball %s/%s@%s: %w", owner, repo, sha, err)
	}
	if dl.StatusCode != http.StatusOK {
		dl.Body.Close()
		err := fmt.Errorf("download tarball %s/%s@%s: %s", owner, repo, sha, dl.Status)
		if dl.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", err, ErrNotFound)
		}
		return nil, err
	}
	if maxBytes > 0 && dl.ContentLength > maxBytes {
		dl.Body.Close()
		return nil, fmt.Errorf("download tarball %s/%s@%s: %d bytes: %w", owner, repo, sha, dl.ContentLength, ErrTooLarge)
	}
	if maxBytes <= 0 {
		return dl.Body, nil
	}
	return &cappedBody{rc: dl.Body, left: maxBytes}, nil
}

// cappedBody fails with ErrTooLarge instead of silently truncating, so a
// cut archive is never mistaken for a whole one.
type cappedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, fmt.Errorf("tarball: %w", ErrTooLarge)
	}
	// Read one byte past the limit to tell "exactly maxBytes" from "more".
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n + int(b.left), fmt.Errorf("tarball: %w", ErrTooLarge)
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// DefaultBranchHead returns the repository's default branch and the SHA of
// its head commit.
func (a *App) DefaultBranchHead(ctx context.Context, installationID int64, owner, repo string) (branch, sha string, err error) {
	c := a.installation(installationID)
	r, resp, err := c.Repositories.Get(ctx, owner, repo)
	if err != nil {
		return "", "", apiError(fmt.Sprintf("get repo %s/%s", owner, repo), resp, err)
	}
	branch = r.GetDefaultBranch()
	ci, err := a.Commit(ctx, installationID, owner, repo, branch)
	if err != nil {
		return "", "", err
	}
	return branch, ci.SHA, nil
}

// Commit returns the commit ref names (a SHA, branch or tag).
func (a *App) Commit(ctx context.Context, installationID int64, owner, repo, ref string) (CommitInfo, error) {
	c := a.installation(installationID)
	rc, resp, err := c.Repositories.GetCommit(ctx, owner, repo, ref, nil)
	if err != nil {
		return CommitInfo{}, apiError(fmt.Sprintf("get commit %s/%s@%s", owner, repo, ref), resp, err)
	}
	ci := CommitInfo{
		SHA:         rc.GetSHA(),
		Message:     rc.GetCommit().GetMessage(),
		Author:      rc.GetCommit().GetAuthor().GetName(),
		AuthorLogin: rc.GetAuthor().GetLogin(),
		Time:        rc.GetCommit().GetAuthor().GetDate().Time,
		URL:         rc.GetHTMLURL(),
	}
	if ci.SHA == "" {
		return CommitInfo{}, fmt.Errorf("get commit %s/%s@%s: answer has no sha", owner, repo, ref)
	}
	return ci, nil
}

// CreateDeployment records a deployment of sha on GitHub and returns its ID.
// It never merges the default branch in (auto_merge false) and never waits
// for commit checks (required_contexts empty): Velo deploys exactly the
// pushed commit. environment defaults to "production".
func (a *App) CreateDeployment(ctx context.Context, installationID int64, owner, repo, sha, environment, description string) (int64, error) {
	if environment == "" {
		environment = "production"
	}
	return a.createDeployment(ctx, installationID, owner, repo, sha, environment, description, false)
}

// createDeployment records a deployment of sha on GitHub: to a production
// environment, or to a transient one (preview).
func (a *App) createDeployment(ctx context.Context, installationID int64, owner, repo, sha, environment, description string, preview bool) (int64, error) {
	c := a.installation(installationID)
	req := &gh.DeploymentRequest{
		Ref:                   gh.String(sha),
		Task:                  gh.String("deploy"),
		AutoMerge:             gh.Bool(false),
		RequiredContexts:      &[]string{},
		Environment:           gh.String(environment),
		Description:           gh.String(truncate(description, maxDescription)),
		TransientEnvironment:  gh.Bool(preview),
		ProductionEnvironment: gh.Bool(!preview),
	}
	d, resp, err := c.Repositories.CreateDeployment(ctx, owner, repo, req)
	if err != nil {
		return 0, apiError(fmt.Sprintf("create deployment %s/%s@%s", owner, repo, sha), resp, err)
	}
	return d.GetID(), nil
}

// Deployment states Velo reports.
const (
	StateInProgress = "in_progress"
	StateSuccess    = "success"
	StateFailure    = "failure"
	StateError      = "error"
	// StateInactive marks a deployment that no longer serves, or never
	// did (a skipped push, a closed pull request's preview).
	StateInactive = "inactive"
)

// maxDescription is GitHub's limit on deployment and status descriptions.
const maxDescription = 140

// SetDeploymentStatus adds a status to a deployment. description is cut to
// GitHub's 140 characters; empty URLs are left out.
func (a *App) SetDeploymentStatus(ctx context.Context, installationID int64, owner, repo string, deploymentID int64, state, description, environmentURL, logURL string) error {
	c := a.installation(installationID)
	req := &gh.DeploymentStatusRequest{
		State:       gh.String(state),
		Description: gh.String(truncate(description, maxDescription)),
	}
	if environmentURL != "" {
		req.EnvironmentURL = gh.String(environmentURL)
	}
	if logURL != "" {
		req.LogURL = gh.String(logURL)
	}
	_, resp, err := c.Repositories.CreateDeploymentStatus(ctx, owner, repo, deploymentID, req)
	if err != nil {
		return apiError(fmt.Sprintf("deployment %d status %s", deploymentID, state), resp, err)
	}
	return nil
}

// truncate cuts s to at most n characters (not bytes), ending in "…" when
// cut.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// perPage is the largest page GitHub serves.
const perPage = 100

// Installations lists every installation of the App.
func (a *App) Installations(ctx context.Context) ([]Installation, error) {
	var out []Installation
	opts := &gh.ListOptions{PerPage: perPage}
	for {
		page, resp, err := a.app.Apps.ListInstallations(ctx, opts)
		if err != nil {
			return nil, apiError("list installations", resp, err)
		}
		for _, in := range page {
			out = append(out, installationFrom(in))
		}
		if resp.NextPage == 0 {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}

// InstallationRepos lists the repositories an installation covers.
func (a *App) InstallationRepos(ctx context.Context, installationID int64) ([]Repo, error) {
	c := a.installation(installationID)
	return listRepos(func(opts *gh.ListOptions) (*gh.ListRepositories, *gh.Response, error) {
		return c.Apps.ListRepos(ctx, opts)
	}, fmt.Sprintf("list repos of installation %d", installationID))
}

func listRepos(list func(*gh.ListOptions) (*gh.ListRepositories, *gh.Response, error), what string) ([]Repo, error) {
	var out []Repo
	opts := &gh.ListOptions{PerPage: perPage}
	for {
		page, resp, err := list(opts)
		if err != nil {
			return nil, apiError(what, resp, err)
		}
		out = append(out, reposFrom(page.Repositories)...)
		if resp.NextPage == 0 {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}
