package deploymgr

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// Kinds of GitHub jobs.
const (
	jobPush         = "push"
	jobInstallation = "installation"
	jobStart        = "start"
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

// webhookReply is the JSON body of a webhook answer; GitHub shows it in
// the delivery's log.
type webhookReply struct {
	Status string `json:"status"` // queued | ignored | duplicate | pong
	Reason string `json:"reason,omitempty"`
}

// Handler serves POST /webhooks/github. It verifies the signature (401 and
// nothing stored when it is missing or wrong), records the delivery as a
// job and answers at once (202); the job runs in the background.
// Redeliveries of a delivery already recorded are acknowledged and
// dropped.
func (g *GitHub) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "webhooks are POSTed"})
			return
		}
		ev, err := github.ParseWebhook(r, g.secret, 0)
		if err != nil {
			status := http.StatusBadRequest
			switch {
			case errors.Is(err, github.ErrSignature):
				status = http.StatusUnauthorized
			case errors.Is(err, github.ErrTooLarge):
				status = http.StatusRequestEntityTooLarge
			}
			g.log.Warn("webhook refused", "status", status, "err", err)
			writeJSON(w, status, map[string]string{"error": err.Error()})
			return
		}
		status, reply, err := g.accept(r.Context(), ev)
		if err != nil {
			g.log.Error("webhook not recorded", "delivery", ev.Delivery, "event", ev.Type, "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "could not record the delivery; redeliver it"})
			return
		}
		writeJSON(w, status, reply)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// accept records a verified delivery and wakes the job runner.
func (g *GitHub) accept(ctx context.Context, ev github.Event) (int, webhookReply, error) {
	if ev.Ping {
		return http.StatusOK, webhookReply{Status: "pong"}, nil
	}
	if ev.Delivery == "" {
		return http.StatusBadRequest, webhookReply{Status: "ignored", Reason: "no " + github.HeaderDelivery + " header"}, nil
	}
	var j store.GitHubJob
	switch {
	case ev.Push != nil:
		p := ev.Push
		j = store.GitHubJob{Delivery: ev.Delivery, Kind: jobPush, Repo: p.FullName}
		if reason := ignorePush(p); reason != "" {
			j.State, j.Note = store.JobDone, "ignored: "+reason
		}
		var err error
		if j.Payload, err = json.Marshal(p); err != nil {
			return 0, webhookReply{}, fmt.Errorf("encode push: %w", err)
		}
	case ev.Installation != nil:
		j = store.GitHubJob{Delivery: ev.Delivery, Kind: jobInstallation}
		var err error
		if j.Payload, err = json.Marshal(ev.Installation); err != nil {
			return 0, webhookReply{}, fmt.Errorf("encode installation: %w", err)
		}
	default:
		return http.StatusOK, webhookReply{Status: "ignored", Reason: "event " + ev.Type + " is not used"}, nil
	}
	if _, err := g.st.CreateGitHubJob(ctx, j); errors.Is(err, store.ErrConflict) {
		return http.StatusOK, webhookReply{Status: "duplicate", Reason: "delivery " + ev.Delivery + " was received before"}, nil
	} else if err != nil {
		return 0, webhookReply{}, err
	}
	if j.State == store.JobDone {
		g.log.Info("push ignored", "delivery", ev.Delivery, "repo", j.Repo, "reason", j.Note)
		return http.StatusOK, webhookReply{Status: "ignored", Reason: strings.TrimPrefix(j.Note, "ignored: ")}, nil
	}
	g.poke()
	return http.StatusAccepted, webhookReply{Status: "queued"}, nil
}

// ignorePush says why a push deploys nothing, or "" when it deploys.
func ignorePush(p *github.Push) string {
	switch {
	case p.InstallationID == 0:
		return "the push does not come from an installation of the App"
	case p.Deleted:
		return "ref " + p.Ref + " was deleted"
	case p.IsTag():
		return "tag push " + p.Ref
	case !p.IsDefaultBranch():
		return fmt.Sprintf("%s is not the default branch %s", p.Ref, p.DefaultBranch)
	}
	return ""
}

// poke wakes Run without blocking.
func (g *GitHub) poke() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// Run runs jobs until ctx is done. At start it requeues the jobs a previous
// process left running, and refreshes the installations and repositories
// from GitHub. On return every job it started has stopped; an interrupted
// one stays running in the store and is resumed by the next Run.
func (g *GitHub) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if err := g.requeue(ctx); err != nil && ctx.Err() == nil {
		g.log.Warn("requeue interrupted github jobs failed", "err", err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := g.Sync(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("sync github installations failed", "err", err)
		}
	}()
	tick := time.NewTicker(g.cfg.Rescan)
	defer tick.Stop()
	for {
		jobs, err := g.st.GitHubJobs(ctx, store.JobQueued)
		if err != nil && ctx.Err() == nil {
			g.log.Warn("read github jobs failed", "err", err)
		}
		for _, j := range jobs {
			won, err := g.st.ClaimGitHubJob(ctx, j.Delivery, store.JobQueued)
			if err != nil || !won {
				continue
			}
			j.State = store.JobRunning
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.execute(ctx, j)
			}()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-g.wake:
		case <-tick.C:
		}
	}
}

// requeue puts the jobs left running by a stopped process back in the
// queue, noting it; they resume from their recorded progress.
func (g *GitHub) requeue(ctx context.Context) error {
	jobs, err := g.st.GitHubJobs(ctx, store.JobRunning)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		j.State, j.Note = store.JobQueued, "resumed after a restart"
		if err := g.st.UpdateGitHubJob(ctx, j); err != nil {
			return err
		}
		g.log.Info("github job resumed after restart", "delivery", j.Delivery, "kind", j.Kind, "repo", j.Repo, "deployment", j.Deployment)
	}
	return nil
}

// execute runs one claimed job to its end. When ctx ends first the job is
// left running, to be resumed.
func (g *GitHub) execute(ctx context.Context, j store.GitHubJob) {
	var err error
	switch j.Kind {
	case jobPush, jobStart:
		err = g.runPush(ctx, &j)
	case jobInstallation:
		err = g.runInstallation(ctx, &j)
	default:
		err = fmt.Errorf("unknown job kind %q", j.Kind)
	}
	if ctx.Err() != nil {
		return
	}
	switch {
	case err == nil && j.State == store.JobRunning:
		j.State = store.JobDone
	case err != nil:
		j.State, j.Note = store.JobFailed, err.Error()
		g.log.Warn("github job failed", "delivery", j.Delivery, "kind", j.Kind, "repo", j.Repo, "err", err)
	}
	if err := g.st.UpdateGitHubJob(ctx, j); err != nil {
		g.log.Error("record github job result failed", "delivery", j.Delivery, "err", err)
	}
}

// runInstallation records an installation event's installation and
// repositories.
func (g *GitHub) runInstallation(ctx context.Context, j *store.GitHubJob) error {
	var ie github.InstallationEvent
	if err := json.Unmarshal(j.Payload, &ie); err != nil {
		return fmt.Errorf("decode installation event: %w", err)
	}
	in := ie.Installation
	if ie.Action == "deleted" {
		if err := g.st.DeleteGitHubInstallation(ctx, in.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		j.Note = fmt.Sprintf("installation %d on %s removed", in.ID, in.Account)
		g.log.Info("github app uninstalled", "installation", in.ID, "account", in.Account)
		return nil
	}
	if err := g.st.PutGitHubInstallation(ctx, store.GitHubInstallation{ID: in.ID, Account: in.Account, AccountType: in.AccountType}); err != nil {
		return err
	}
	for _, r := range ie.Added {
		if err := g.st.PutGitHubRepo(ctx, store.GitHubRepo{ID: r.ID, FullName: r.FullName, Installation: in.ID}); err != nil {
			return err
		}
	}
	for _, r := range ie.Removed {
		if err := g.st.DeleteGitHubRepo(ctx, r.ID); err != nil {
			return err
		}
	}
	j.Note = fmt.Sprintf("installation %d on %s %s: %d repositories added, %d removed", in.ID, in.Account, ie.Action, len(ie.Added), len(ie.Removed))
	g.log.Info("github installation changed", "installation", in.ID, "account", in.Account, "action", ie.Action,
		"added", len(ie.Added), "removed", len(ie.Removed))
	return nil
}

// Sync records every installation of the App and its repositories as
// GitHub lists them, and forgets installations GitHub no longer lists. It
// repairs what missed webhooks (Velo down, App installed before the hook
// pointed here) left out.
func (g *GitHub) Sync(ctx context.Context) error {
	ins, err := g.app.Installations(ctx)
	if err != nil {
		return err
	}
	seen := make(map[int64]bool, len(ins))
	for _, in := range ins {
		seen[in.ID] = true
		if err := g.st.PutGitHubInstallation(ctx, store.GitHubInstallation{ID: in.ID, Account: in.Account, AccountType: in.AccountType}); err != nil {
			return err
		}
		repos, err := g.app.InstallationRepos(ctx, in.ID)
		if err != nil {
			return err
		}
		for _, r := range repos {
			if err := g.st.PutGitHubRepo(ctx, store.GitHubRepo{ID: r.ID, FullName: r.FullName, Installation: in.ID}); err != nil {
				return err
			}
		}
	}
	known, err := g.st.GitHubInstallations(ctx)
	if err != nil {
		return err
	}
	for _, in := range known {
		if !seen[in.ID] {
			if err := g.st.DeleteGitHubInstallation(ctx, in.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// remember records the repository of a push: GitHub only sends pushes of
// repositories the App is installed on, so a missed installation webhook
// is repaired here.
func (g *GitHub) remember(ctx context.Context, p *github.Push) {
	r := store.GitHubRepo{ID: p.RepoID, FullName: p.FullName, Installation: p.InstallationID}
	if r.ID == 0 {
		return
	}
	err := g.st.PutGitHubRepo(ctx, r)
	if errors.Is(err, store.ErrNotFound) {
		if err = g.st.PutGitHubInstallation(ctx, store.GitHubInstallation{ID: p.InstallationID, Account: p.Owner}); err == nil {
			err = g.st.PutGitHubRepo(ctx, r)
		}
	}
	if err != nil {
		g.log.Warn("record github repo failed", "repo", p.FullName, "err", err)
	}
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

// staleError is a push that must not replace what is live.
type staleError struct{ msg string }

func (e *staleError) Error() string { return e.msg }

// runPush deploys a push (or a start request) and reports to GitHub. It
// picks up where the job left off: a job with a deployment only waits for
// it to settle.
func (g *GitHub) runPush(ctx context.Context, j *store.GitHubJob) error {
	var p github.Push
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		return fmt.Errorf("decode push: %w", err)
	}
	if j.Deployment == 0 {
		g.remember(ctx, &p)
		_, err := g.deployPush(ctx, j, &p)
		var se *staleError
		if errors.As(err, &se) {
			j.Note = se.msg
			return nil
		}
		if err != nil {
			return err
		}
	}
	return g.report(ctx, j, &p)
}

// deployPush is the first half of a push job: stale check, GitHub
// deployment and in_progress status, tarball, Manager.Deploy. On success
// j.Deployment is set and saved. Failures are reported to GitHub before
// they are returned; a *staleError is not a failure and reports nothing.
func (g *GitHub) deployPush(ctx context.Context, j *store.GitHubJob, p *github.Push) (store.Deployment, error) {
	l := g.repoLock(p.FullName)
	l.Lock()
	defer l.Unlock()

	sha := p.After
	existing, err := g.check(ctx, p)
	if err != nil {
		return store.Deployment{}, err
	}
	if j.GitHubDeployment == 0 {
		id, err := g.app.CreateDeployment(ctx, p.InstallationID, p.Owner, p.Repo, sha, "production", "Velo deploys "+short(sha))
		if err != nil {
			g.log.Warn("create github deployment failed", "repo", p.FullName, "sha", sha, "err", err)
		} else {
			j.GitHubDeployment = id
			g.save(ctx, j)
		}
	}
	g.status(ctx, j, p, github.StateInProgress, "Deploying "+short(sha), "", "")
	if existing.ID != 0 {
		// An earlier run of this job got as far as Deploy before it was
		// interrupted: adopt its deployment rather than make a second.
		j.Deployment = existing.ID
		g.save(ctx, j)
		return existing, nil
	}
	d, err := g.deployCommit(ctx, p)
	if err != nil {
		if ctx.Err() != nil {
			return store.Deployment{}, ctx.Err()
		}
		reason := err.Error()
		logURL := g.recordFailure(ctx, p, err)
		g.status(ctx, j, p, github.StateFailure, reason, "", logURL)
		return store.Deployment{}, err
	}
	j.Deployment = d.ID
	g.save(ctx, j)
	return d, nil
}

// check refuses a push older than what its repository's components serve
// or are rolling out, and returns the deployment of the same commit when
// one is already live or being rolled out.
func (g *GitHub) check(ctx context.Context, p *github.Push) (store.Deployment, error) {
	comps, err := g.m.store.Components(ctx)
	if err != nil {
		return store.Deployment{}, fmt.Errorf("read components: %w", err)
	}
	for _, c := range comps {
		if !strings.EqualFold(c.Repo, p.FullName) {
			continue
		}
		for _, id := range []int64{c.Live, c.Target} {
			if id == 0 {
				continue
			}
			d, err := g.m.store.Deployment(ctx, id)
			if err != nil {
				return store.Deployment{}, fmt.Errorf("read deployment %d: %w", id, err)
			}
			if d.Commit == p.After {
				return d, nil
			}
			when := p.HeadCommit.Time
			if !when.IsZero() && !d.CommitTime.IsZero() && when.Before(d.CommitTime) {
				return store.Deployment{}, &staleError{msg: fmt.Sprintf("stale push ignored: commit %s (%s) is older than %s (%s) of deployment %d",
					short(p.After), when.UTC().Format(time.RFC3339), short(d.Commit), d.CommitTime.UTC().Format(time.RFC3339), d.ID)}
			}
		}
	}
	return store.Deployment{}, nil
}

// deployCommit fetches the pushed commit's tarball and deploys it.
func (g *GitHub) deployCommit(ctx context.Context, p *github.Push) (store.Deployment, error) {
	rc, err := g.app.Tarball(ctx, p.InstallationID, p.Owner, p.Repo, p.After, g.m.cfg.Limits.Compressed)
	if err != nil {
		return store.Deployment{}, fmt.Errorf("fetch %s@%s: %w", p.FullName, short(p.After), err)
	}
	defer rc.Close()
	author := p.HeadCommit.Author
	if author == "" {
		author = p.HeadCommit.AuthorLogin
	}
	d, err := g.m.Deploy(ctx, DeployRequest{
		DefaultName: p.Repo,
		Archive:     rc,
		StripTop:    true,
		Source:      SourceGitHub,
		Repo:        p.FullName,
		Commit:      p.After,
		Message:     p.HeadCommit.Message,
		Author:      author,
	})
	if err != nil {
		return store.Deployment{}, err
	}
	if !p.HeadCommit.Time.IsZero() {
		if err := g.st.SetDeploymentCommitTime(ctx, d.ID, p.HeadCommit.Time); err != nil {
			return store.Deployment{}, err
		}
		d.CommitTime = p.HeadCommit.Time
	}
	g.log.Info("push deployed", "repo", p.FullName, "sha", p.After, "component", d.Component, "deployment", d.ID)
	return d, nil
}

// recordFailure records a push that could not be deployed as a failed
// deployment of the repository's component, so that the dashboard shows
// why, and returns that deployment's page ("" when there is no component
// to record it on).
func (g *GitHub) recordFailure(ctx context.Context, p *github.Push, cause error) string {
	comps, err := g.m.store.Components(ctx)
	if err != nil {
		return ""
	}
	name := ""
	for _, c := range comps {
		if strings.EqualFold(c.Repo, p.FullName) {
			name = c.Name
			break
		}
	}
	var ce *ConflictError
	if name == "" && !errors.As(cause, &ce) {
		// The repository's first push failed: give it a component named
		// like the repository, where the failure shows, unless the name
		// is taken.
		n := manifest.Sanitize(p.Repo)
		if manifest.ValidName(n) != nil {
			return ""
		}
		if err := g.m.store.CreateComponent(ctx, store.Component{Name: n, Repo: p.FullName}); err != nil {
			return ""
		}
		name = n
	}
	if name == "" {
		return ""
	}
	d, err := g.m.store.CreateDeployment(ctx, store.Deployment{
		Component:  name,
		Source:     SourceGitHub,
		Commit:     p.After,
		Message:    p.HeadCommit.Message,
		Author:     p.HeadCommit.Author,
		CommitTime: p.HeadCommit.Time,
		Status:     store.StatusFailed,
		Error:      cause.Error(),
	})
	if err != nil {
		g.log.Warn("record failed push failed", "repo", p.FullName, "err", err)
		return ""
	}
	_ = g.m.store.AppendBuildLog(ctx, d.ID, fmt.Sprintf("push of %s@%s failed: %s\n", p.FullName, short(p.After), cause))
	return g.m.DeploymentURL(name, d.ID)
}

// DeploymentURL is the dashboard's page of a deployment.
func (m *Manager) DeploymentURL(component string, id int64) string {
	return fmt.Sprintf("%s/components/%s/deployments/%d", m.cfg.PublicURL, component, id)
}

// report waits for the job's deployment to settle and reports the outcome
// to GitHub.
func (g *GitHub) report(ctx context.Context, j *store.GitHubJob, p *github.Push) error {
	d, live, err := g.waitSettled(ctx, j.Deployment)
	if err != nil {
		if ctx.Err() == nil {
			g.status(ctx, j, p, github.StateError, err.Error(), "", "")
		}
		return err
	}
	logURL := g.m.DeploymentURL(d.Component, d.ID)
	switch {
	case live:
		url := g.m.ComponentURL(d.Component)
		g.status(ctx, j, p, github.StateSuccess, "Live at "+url, url, logURL)
		j.Note = fmt.Sprintf("deployment %d of %s is live", d.ID, d.Component)
	case d.Status == store.StatusFailed:
		g.status(ctx, j, p, github.StateFailure, d.Error, "", logURL)
		return fmt.Errorf("deployment %d of %s failed: %s", d.ID, d.Component, d.Error)
	default:
		g.status(ctx, j, p, "inactive", "Superseded by a newer deployment", "", logURL)
		j.Note = fmt.Sprintf("deployment %d of %s was superseded", d.ID, d.Component)
	}
	return nil
}

// waitSettled waits until deployment id is live (live true), failed, or
// prepared but superseded by a newer target.
func (g *GitHub) waitSettled(ctx context.Context, id int64) (store.Deployment, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SettleTimeout)
	defer cancel()
	changes, err := g.m.store.Listen(ctx, ChannelRoutes)
	if err != nil {
		return store.Deployment{}, false, fmt.Errorf("listen for routes: %w", err)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := g.m.store.Deployment(ctx, id)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return d, false, fmt.Errorf("deployment %d was removed", id)
			}
			if ctx.Err() == nil {
				return d, false, err
			}
		}
		if err == nil {
			c, err := g.m.store.Component(ctx, d.Component)
			switch {
			case errors.Is(err, store.ErrNotFound):
				return d, false, fmt.Errorf("component %s was removed", d.Component)
			case err == nil && c.Live == id:
				return d, true, nil
			case err == nil && d.Status == store.StatusFailed:
				return d, false, nil
			case err == nil && d.Status == store.StatusReady && c.Target != id:
				return d, false, nil
			}
		}
		select {
		case <-ctx.Done():
			return d, false, fmt.Errorf("deployment %d did not settle within %s", id, g.cfg.SettleTimeout)
		case <-changes:
		case <-tick.C:
		}
	}
}

// status posts a deployment status to GitHub when the job has a GitHub
// deployment; failures are logged, never fatal to the deploy.
func (g *GitHub) status(ctx context.Context, j *store.GitHubJob, p *github.Push, state, desc, envURL, logURL string) {
	if j.GitHubDeployment == 0 {
		return
	}
	if err := g.app.SetDeploymentStatus(ctx, p.InstallationID, p.Owner, p.Repo, j.GitHubDeployment, state, desc, envURL, logURL); err != nil {
		g.log.Warn("github deployment status failed", "repo", p.FullName, "state", state, "err", err)
	}
}

// save records a job's progress; a failure is logged, the job goes on.
func (g *GitHub) save(ctx context.Context, j *store.GitHubJob) {
	if err := g.st.UpdateGitHubJob(ctx, *j); err != nil {
		g.log.Warn("record github job progress failed", "delivery", j.Delivery, "err", err)
	}
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// Start deploys the head of fullName's default branch, as a push of it
// would: the dashboard's Start button. It returns once the deployment is
// recorded; the rollout and the report to GitHub continue in the
// background. Errors: 404 when the App is not installed on the repository.
func (g *GitHub) Start(ctx context.Context, fullName string) (store.Deployment, error) {
	r, err := g.st.GitHubRepo(ctx, fullName)
	if errors.Is(err, store.ErrNotFound) {
		return store.Deployment{}, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("the GitHub App is not installed on %s", fullName))
	} else if err != nil {
		return store.Deployment{}, err
	}
	owner, name, _ := strings.Cut(r.FullName, "/")
	branch, sha, err := g.app.DefaultBranchHead(ctx, r.Installation, owner, name)
	if errors.Is(err, github.ErrNotFound) {
		return store.Deployment{}, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("%s has no default branch the App can read", r.FullName))
	} else if err != nil {
		return store.Deployment{}, err
	}
	ci, err := g.app.Commit(ctx, r.Installation, owner, name, sha)
	if err != nil {
		return store.Deployment{}, err
	}
	p := github.Push{
		InstallationID: r.Installation, RepoID: r.ID, Owner: owner, Repo: name, FullName: r.FullName,
		Ref: "refs/heads/" + branch, DefaultBranch: branch, After: sha, HeadCommit: ci,
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return store.Deployment{}, fmt.Errorf("encode start: %w", err)
	}
	j, err := g.st.CreateGitHubJob(ctx, store.GitHubJob{
		Delivery: "start-" + rand.Text(), Kind: jobStart, Repo: r.FullName, Payload: payload, State: store.JobRunning,
	})
	if err != nil {
		return store.Deployment{}, err
	}
	// The deploy half runs here, without the request's cancellation so a
	// client hanging up cannot leave it half done; the job then goes back
	// to the queue for Run to wait for the rollout and report.
	d, err := g.deployPush(context.WithoutCancel(ctx), &j, &p)
	var se *staleError
	switch {
	case errors.As(err, &se):
		j.State, j.Note = store.JobDone, se.msg
		g.save(ctx, &j)
		return store.Deployment{}, &ConflictError{Msg: se.msg}
	case err != nil:
		j.State, j.Note = store.JobFailed, err.Error()
		g.save(ctx, &j)
		return store.Deployment{}, err
	}
	j.State = store.JobQueued
	g.save(ctx, &j)
	g.poke()
	return d, nil
}
