package deploymgr

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// staleError is a push that must not replace what is live.
type staleError struct {
	msg string
	// component is the component whose served commit is newer.
	component string
}

func (e *staleError) Error() string { return e.msg }

// pushJob is a push job's payload: the push and, for one component of a
// repository whose root velo.toml lists several, its directory and name.
type pushJob struct {
	github.Push
	Dir       string `json:",omitempty"`
	Component string `json:",omitempty"`
}

// fannedOut is a push of a repository with several components: it queued
// one job per changed component and deploys nothing itself.
type fannedOut struct{ note string }

func (e *fannedOut) Error() string { return e.note }

// runPush deploys a push (or a start request) and reports to GitHub. It
// picks up where the job left off: a job with a deployment only waits for
// it to settle.
func (g *GitHub) runPush(ctx context.Context, j *store.GitHubJob) error {
	var pj pushJob
	if err := json.Unmarshal(j.Payload, &pj); err != nil {
		return fmt.Errorf("decode push: %w", err)
	}
	p := &pj.Push
	if j.Deployment == 0 {
		g.remember(ctx, p)
		_, err := g.deployPush(ctx, j, &pj)
		var se *staleError
		var fo *fannedOut
		switch {
		case errors.As(err, &se):
			j.Note = se.msg
			return nil
		case errors.As(err, &fo):
			j.Note = fo.note
			return nil
		case err != nil:
			return err
		}
	}
	return g.report(ctx, j, p)
}

// deployPush is the first half of a push job: stale check, GitHub
// deployment and in_progress status, tarball, Manager.Deploy. On success
// j.Deployment is set and saved. Failures are reported to GitHub before
// they are returned; a *staleError is not a failure and reports nothing
// but the skip. A repository whose root velo.toml lists components fans
// out (a *fannedOut): one job per changed component.
func (g *GitHub) deployPush(ctx context.Context, j *store.GitHubJob, pj *pushJob) (store.Deployment, error) {
	p := &pj.Push
	l := g.repoLock(p.FullName)
	l.Lock()
	defer l.Unlock()

	sha := p.After
	existing, err := g.check(ctx, p, pj.Component)
	var se *staleError
	if errors.As(err, &se) {
		g.skip(ctx, j, p, se)
	}
	if err != nil {
		return store.Deployment{}, err
	}
	// The tree says whether the repository lists several components (a
	// deployment of the pushed commit found above may then be any one of
	// them's, not this push's).
	var tree *archive.Tree
	var fetchErr error
	if existing.ID == 0 || pj.Component == "" {
		tree, fetchErr = g.fetchTree(ctx, p)
		if fetchErr == nil && pj.Dir == "" {
			dirs, ok, err := manifest.ComponentDirs(tree)
			if err != nil {
				fetchErr = &InputError{Err: err}
			} else if ok {
				return store.Deployment{}, g.fanOut(ctx, j, pj, tree, dirs)
			}
		}
		if existing.ID != 0 {
			fetchErr = nil
		}
	}
	if j.GitHubDeployment == 0 {
		env := "production"
		if pj.Component != "" {
			env += "/" + pj.Component
		}
		id, err := g.app.CreateDeployment(ctx, p.InstallationID, p.Owner, p.Repo, sha, env, "Velo deploys "+short(sha))
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
	var d store.Deployment
	err = fetchErr
	if err == nil {
		d, err = g.deployCommit(ctx, pj, tree)
	}
	if err != nil {
		if ctx.Err() != nil {
			return store.Deployment{}, ctx.Err()
		}
		reason := err.Error()
		logURL := g.recordFailure(ctx, p, pj.Component, err)
		g.status(ctx, j, p, github.StateFailure, reason, "", logURL)
		return store.Deployment{}, err
	}
	j.Deployment = d.ID
	g.save(ctx, j)
	return d, nil
}

// fetchTree downloads and reads the pushed commit's tarball.
func (g *GitHub) fetchTree(ctx context.Context, p *github.Push) (*archive.Tree, error) {
	return g.fetchCommit(ctx, p.InstallationID, p.Owner, p.Repo, p.FullName, p.After)
}

// fetchCommit downloads and reads the tarball of commit sha of owner/repo
// (fullName), within the archive limits.
func (g *GitHub) fetchCommit(ctx context.Context, installation int64, owner, repo, fullName, sha string) (*archive.Tree, error) {
	rc, err := g.app.Tarball(ctx, installation, owner, repo, sha, g.m.cfg.Limits.Compressed)
	if err != nil {
		return nil, fmt.Errorf("fetch %s@%s: %w", fullName, short(sha), err)
	}
	defer rc.Close()
	tree, err := archive.Read(rc, g.m.cfg.Limits, true)
	if err != nil {
		return nil, &InputError{Err: err, TooLarge: errors.Is(err, archive.ErrTooLarge)}
	}
	return tree, nil
}

// fanOut queues a job per component of a repository that lists several,
// for those whose files the push changed (or that have no deployment
// yet); each then deploys, and reports to GitHub, on its own.
func (g *GitHub) fanOut(ctx context.Context, j *store.GitHubJob, pj *pushJob, tree *archive.Tree, dirs []string) error {
	p := &pj.Push
	names := map[string]string{}
	cmp := map[string][]string{} // changed files since a served commit, by commit
	var deploy, same []string
	for _, dir := range dirs {
		name := manifest.Sanitize(path.Base(dir))
		if sub, err := tree.Sub(dir); err == nil {
			if m, err := manifest.Load(sub, path.Base(dir)); err == nil {
				name = m.Name
			}
		}
		if other, dup := names[name]; dup {
			return &InputError{Err: fmt.Errorf("components %s and %s are both named %q; give one another name in its %s", other, dir, name, manifest.FileName)}
		}
		names[name] = dir
		if !g.changed(ctx, p, name, dir, cmp) {
			same = append(same, name)
			continue
		}
		payload, err := json.Marshal(pushJob{Push: *p, Dir: dir, Component: name})
		if err != nil {
			return fmt.Errorf("encode push of %s: %w", name, err)
		}
		child := store.GitHubJob{Delivery: j.Delivery + "/" + name, Kind: j.Kind, Repo: p.FullName, Payload: payload}
		if _, err := g.st.CreateGitHubJob(ctx, child); err != nil && !errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("queue the push of %s: %w", name, err)
		}
		deploy = append(deploy, name)
	}
	g.poke()
	note := fmt.Sprintf("%d components listed: deploying %s; unchanged: %s", len(dirs), list(deploy), list(same))
	g.log.Info("push of several components", "repo", p.FullName, "sha", p.After, "deploy", deploy, "unchanged", same)
	return &fannedOut{note: note}
}

func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// changed reports whether component name (in dir) must deploy p: it has
// no deployment yet, or files under dir changed since the commit it
// serves. Those come from the push's commits when the push starts at
// that commit and lists them all, else from GitHub's compare API (both
// ways, so a force-push back counts what it takes away); when in doubt, it
// deploys.
func (g *GitHub) changed(ctx context.Context, p *github.Push, name, dir string, cache map[string][]string) bool {
	c, err := g.m.store.Component(ctx, name)
	if err != nil || !strings.EqualFold(c.Repo, p.FullName) {
		return true // new, or Deploy will say whose it is
	}
	id := c.Target
	if id == 0 {
		id = c.Live
	}
	if id == 0 {
		return true
	}
	d, err := g.m.store.Deployment(ctx, id)
	if err != nil || d.Commit == "" {
		return true
	}
	if d.Commit == p.After {
		return false
	}
	files, known := cache[d.Commit]
	if !known {
		if d.Commit == p.Before && p.ChangesKnown() {
			files = p.Changed
		} else {
			fwd, err := g.app.Compare(ctx, p.InstallationID, p.Owner, p.Repo, d.Commit, p.After)
			if err != nil || fwd.FilesTruncated {
				return true
			}
			files = fwd.Files
			if fwd.Status == github.CompareBehind || fwd.Status == github.CompareDiverged {
				back, err := g.app.Compare(ctx, p.InstallationID, p.Owner, p.Repo, p.After, d.Commit)
				if err != nil || back.FilesTruncated {
					return true
				}
				files = append(slices.Clone(files), back.Files...)
			}
		}
		cache[d.Commit] = files
	}
	prefix := dir + "/"
	return slices.ContainsFunc(files, func(f string) bool { return strings.HasPrefix(f, prefix) })
}

// check refuses a push older than what its repository's components serve
// or are rolling out, and returns the deployment of the same commit when
// one is already live or being rolled out.
//
// Age is judged by ancestry, never by clocks (a pusher's clock may be
// off, and a force-push may move the branch back to an older commit): a
// push whose before is a commit Velo serves, or that is forced, is the
// branch's new head; otherwise GitHub's compare API says whether the
// pushed commit descends from the served one. Only a commit that the
// served one descends from (behind), or one that diverged from it and is
// no longer on the branch, is stale.
//
// only, when set, limits the check to that component (one component of a
// repository that lists several).
func (g *GitHub) check(ctx context.Context, p *github.Push, only string) (store.Deployment, error) {
	comps, err := g.m.store.Components(ctx)
	if err != nil {
		return store.Deployment{}, fmt.Errorf("read components: %w", err)
	}
	var served []store.Deployment
	for _, c := range comps {
		if !strings.EqualFold(c.Repo, p.FullName) || isPreview(c.Name) || only != "" && c.Name != only {
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
			if d.Commit != "" {
				served = append(served, d)
			}
		}
	}
	if p.Forced {
		return store.Deployment{}, nil
	}
	for _, d := range served {
		if d.Commit == p.Before {
			return store.Deployment{}, nil
		}
	}
	seen := map[string]bool{}
	for _, d := range served {
		if seen[d.Commit] {
			continue
		}
		seen[d.Commit] = true
		if err := g.newer(ctx, p, d); err != nil {
			return store.Deployment{}, err
		}
	}
	return store.Deployment{}, nil
}

// newer returns nil when p.After may replace d's commit, a *staleError
// when it is older, or why it could not tell.
func (g *GitHub) newer(ctx context.Context, p *github.Push, d store.Deployment) error {
	cmp, err := g.app.Compare(ctx, p.InstallationID, p.Owner, p.Repo, d.Commit, p.After)
	status := cmp.Status
	if errors.Is(err, github.ErrNotFound) {
		// The served commit is gone from the repository (force-pushed
		// away and collected) or shares no history with the push.
		status = github.CompareDiverged
	} else if err != nil {
		return fmt.Errorf("compare %s with the served %s: %w", short(p.After), short(d.Commit), err)
	}
	switch status {
	case github.CompareAhead, github.CompareIdentical:
		return nil
	case github.CompareBehind:
		return &staleError{component: d.Component, msg: fmt.Sprintf("stale push ignored: commit %s is an ancestor of %s, which deployment %d of %s serves",
			short(p.After), short(d.Commit), d.ID, d.Component)}
	}
	// Diverged: the push is the newer one only if it is still on the
	// branch (what the branch points to now descends from it).
	head, err := g.app.Commit(ctx, p.InstallationID, p.Owner, p.Repo, p.Ref)
	if err != nil {
		return fmt.Errorf("read the head of %s: %w", p.Ref, err)
	}
	if head.SHA == p.After {
		return nil
	}
	onBranch, err := g.app.Compare(ctx, p.InstallationID, p.Owner, p.Repo, p.After, head.SHA)
	if err == nil && (onBranch.Status == github.CompareAhead || onBranch.Status == github.CompareIdentical) {
		return nil
	}
	if err != nil && !errors.Is(err, github.ErrNotFound) {
		return fmt.Errorf("compare %s with the head %s: %w", short(p.After), short(head.SHA), err)
	}
	return &staleError{component: d.Component, msg: fmt.Sprintf("stale push ignored: commit %s diverged from %s (deployment %d of %s) and is no longer on %s",
		short(p.After), short(d.Commit), d.ID, d.Component, p.Branch())}
}

// skip records a stale push where people look: Velo's log, a skipped
// deployment on the component (with the reason as its error), and an
// inactive GitHub deployment of the commit that says why.
func (g *GitHub) skip(ctx context.Context, j *store.GitHubJob, p *github.Push, se *staleError) {
	g.log.Info("stale push skipped", "repo", p.FullName, "sha", p.After, "component", se.component, "reason", se.msg)
	logURL := ""
	if se.component != "" {
		d, err := g.m.store.CreateDeployment(ctx, store.Deployment{
			Component: se.component, Source: SourceGitHub, Commit: p.After, Message: p.HeadCommit.Message,
			Author: p.HeadCommit.Author, CommitTime: p.HeadCommit.Time, Status: store.StatusSkipped, Error: se.msg,
		})
		if err != nil {
			g.log.Warn("record skipped push failed", "repo", p.FullName, "err", err)
		} else {
			_ = g.m.store.AppendBuildLog(ctx, d.ID, se.msg+"\n")
			logURL = g.m.DeploymentURL(se.component, d.ID)
		}
	}
	if j.GitHubDeployment == 0 {
		id, err := g.app.CreateDeployment(ctx, p.InstallationID, p.Owner, p.Repo, p.After, "production", "Velo skips "+short(p.After))
		if err != nil {
			g.log.Warn("create github deployment failed", "repo", p.FullName, "sha", p.After, "err", err)
			return
		}
		j.GitHubDeployment = id
		g.save(ctx, j)
	}
	g.status(ctx, j, p, github.StateInactive, se.msg, "", logURL)
}

// deployCommit deploys the pushed commit's tree (fetched now when tree is
// nil): the whole of it, or the component's directory.
func (g *GitHub) deployCommit(ctx context.Context, pj *pushJob, tree *archive.Tree) (store.Deployment, error) {
	p := &pj.Push
	if tree == nil {
		var err error
		if tree, err = g.fetchTree(ctx, p); err != nil {
			return store.Deployment{}, err
		}
	}
	author := p.HeadCommit.Author
	if author == "" {
		author = p.HeadCommit.AuthorLogin
	}
	defName := p.Repo
	if pj.Dir != "" {
		defName = path.Base(pj.Dir)
	}
	d, err := g.m.Deploy(ctx, DeployRequest{
		DefaultName: defName,
		Tree:        tree,
		Dir:         pj.Dir,
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
func (g *GitHub) recordFailure(ctx context.Context, p *github.Push, component string, cause error) string {
	comps, err := g.m.store.Components(ctx)
	if err != nil {
		return ""
	}
	name := ""
	if component != "" {
		if c, err := g.m.store.Component(ctx, component); err == nil && strings.EqualFold(c.Repo, p.FullName) {
			name = component
		} else if err == nil {
			return "" // another repository's: Deploy said so
		}
	}
	for _, c := range comps {
		if name == "" && component == "" && strings.EqualFold(c.Repo, p.FullName) && !isPreview(c.Name) {
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
		if component != "" {
			n = component
		}
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

// Start deploys the head of fullName's default branch, as a push of it
// would: the dashboard's Start button. It returns once the deployment is
// recorded; the rollout and the report to GitHub continue in the
// background. Errors: 404 when the App is not installed on the repository.
func (g *GitHub) Start(ctx context.Context, fullName string) (store.Deployment, error) {
	r, err := g.st.GitHubRepo(ctx, fullName)
	if errors.Is(err, store.ErrNotFound) {
		// Velo learns of repositories from webhooks and from the sync at
		// start; one added since without its webhook reaching Velo is
		// only known to GitHub: ask it before saying no.
		if err := g.Sync(ctx); err != nil {
			return store.Deployment{}, fmt.Errorf("list the App's installations on GitHub: %w", err)
		}
		r, err = g.st.GitHubRepo(ctx, fullName)
	}
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
	d, err := g.deployPush(context.WithoutCancel(ctx), &j, &pushJob{Push: p})
	var se *staleError
	var fo *fannedOut
	switch {
	case errors.As(err, &fo):
		j.State, j.Note = store.JobDone, fo.note
		g.save(ctx, &j)
		g.poke()
		return store.Deployment{}, echo.NewHTTPError(http.StatusAccepted, fo.note)
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
