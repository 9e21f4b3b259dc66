package deploymgr

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
)

// Kinds of GitHub jobs.
const (
	jobPush         = "push"
	jobInstallation = "installation"
	jobStart        = "start"
	jobPullRequest  = "pull_request"
)

// GitHubStore is what the GitHub integration needs from the store besides
// Store.
type GitHubStore interface {
	CreateGitHubJob(ctx context.Context, j store.GitHubJob) (store.GitHubJob, error)
	GitHubJob(ctx context.Context, delivery string) (store.GitHubJob, error)
	GitHubJobs(ctx context.Context, states ...string) ([]store.GitHubJob, error)
	ClaimGitHubJob(ctx context.Context, delivery, from string) (bool, error)
	UpdateGitHubJob(ctx context.Context, j store.GitHubJob) error

	PutGitHubInstallation(ctx context.Context, in store.GitHubInstallation) error
	DeleteGitHubInstallation(ctx context.Context, id int64) error
	GitHubInstallations(ctx context.Context) ([]store.GitHubInstallation, error)
	PutGitHubRepo(ctx context.Context, r store.GitHubRepo) error
	DeleteGitHubRepo(ctx context.Context, id int64) error
	GitHubRepo(ctx context.Context, fullName string) (store.GitHubRepo, error)

	SetDeploymentCommitTime(ctx context.Context, id int64, t time.Time) error

	GitHubPreview(ctx context.Context, repo string, number int) (store.GitHubPreview, error)
	PutGitHubPreview(ctx context.Context, p store.GitHubPreview) error
	GitHubPreviewComponents(ctx context.Context, repo string, number int) ([]store.GitHubPreviewComponent, error)
	PutGitHubPreviewComponent(ctx context.Context, p store.GitHubPreviewComponent) error
}

// GitHubConfig configures the GitHub App integration.
type GitHubConfig struct {
	// App is the GitHub App client (installation tokens, tarballs,
	// deployments API).
	App *github.App
	// Store holds the jobs, installations and repositories.
	Store GitHubStore
	// SettleTimeout is how long a job waits for its deployment to go live
	// before reporting failure to GitHub (default 30m: Docker builds can
	// be slow).
	SettleTimeout time.Duration
	// Rescan is how often queued jobs are looked for without a wake-up
	// (default 5s); it picks up jobs queued by other processes.
	Rescan time.Duration
}

// GitHub is the GitHub App integration of a Manager: it serves the webhook,
// persists every accepted delivery as a job, runs the jobs in the
// background (a push to the default branch becomes a deployment), and
// reports deployments back through GitHub's Deployments API.
//
// Jobs survive a restart: Run puts jobs left running back in the queue and
// resumes them from their recorded progress (a job that already created
// its deployment only waits for it to settle). Jobs of one repository run
// one at a time, and a push whose commit is older than the one live (or
// being rolled out) never replaces it.
type GitHub struct {
	m      *Manager
	app    *github.App
	st     GitHubStore
	secret []byte
	cfg    GitHubConfig
	log    *slog.Logger

	wake chan struct{}

	mu    sync.Mutex
	locks map[string]*sync.Mutex // by lower-case repo
}

// EnableGitHub turns on the GitHub App integration: m then accepts webhooks
// through the returned GitHub's Handler, and POST /api/v1/components starts
// repositories. Call it before serving; run the returned GitHub's Run.
func (m *Manager) EnableGitHub(cfg GitHubConfig) (*GitHub, error) {
	if cfg.App == nil {
		return nil, errors.New("deploymgr github: App is required")
	}
	if cfg.Store == nil {
		return nil, errors.New("deploymgr github: Store is required")
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = 30 * time.Minute
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = 5 * time.Second
	}
	g := &GitHub{
		m:      m,
		app:    cfg.App,
		st:     cfg.Store,
		secret: cfg.App.Config().WebhookSecret,
		cfg:    cfg,
		log:    m.log.With("part", "github"),
		wake:   make(chan struct{}, 1),
		locks:  make(map[string]*sync.Mutex),
	}
	m.github = g
	return g, nil
}

// repoLock returns the lock that serializes the jobs of repo.
func (g *GitHub) repoLock(repo string) *sync.Mutex {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := strings.ToLower(repo)
	l, ok := g.locks[key]
	if !ok {
		l = &sync.Mutex{}
		g.locks[key] = l
	}
	return l
}

// previewSep separates a component's name from the number of the pull
// request a preview deploys: NAME--pr-N.
const previewSep = "--pr-"

// isPreview reports whether name is the name of a preview.
func isPreview(name string) bool { return strings.Contains(name, previewSep) }

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}
