package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// Previews of a repository whose root velo.toml lists several components.
// A pull_request job there fans out, as a push does: one job per
// component the pull request changes (by GitHub's pull request files
// API), each deploying NAME--pr-N from the component's directory with its
// own GitHub deployment (environment preview/NAME) and status. A component
// once previewed in the pull request stays previewed, and is updated, until
// the pull request closes. The pull request's one comment lists every
// component's preview.

// previewJob is a pull_request job's payload: the event and, for one
// component of a repository that lists several, its directory and name.
type previewJob struct {
	github.PullRequest
	Dir       string `json:",omitempty"`
	Component string `json:",omitempty"`
}

// PreviewComponentEnvironment is the GitHub environment of the preview of
// component name, in a repository that lists several components.
func PreviewComponentEnvironment(name string) string { return PreviewEnvironment + "/" + name }

// fetchPRTree downloads and reads the tree of the pull request's head.
func (g *GitHub) fetchPRTree(ctx context.Context, pr *github.PullRequest) (*archive.Tree, error) {
	return g.fetchCommit(ctx, pr.InstallationID, pr.Owner, pr.Repo, pr.FullName, pr.HeadSHA)
}

// fanOutPreview handles a pull request of a repository that lists several
// components (handled true), queuing a job per component to preview; for
// any other it returns the head's tree (nil when it could not be read:
// the single-component path fetches it again and reports why). Called
// under the pull request's lock.
func (g *GitHub) fanOutPreview(ctx context.Context, j *store.GitHubJob, pr *github.PullRequest, prev *store.GitHubPreview) (*archive.Tree, bool, error) {
	tree, err := g.fetchPRTree(ctx, pr)
	if err != nil {
		return nil, false, nil
	}
	dirs, ok, err := manifest.ComponentDirs(tree)
	if err != nil || !ok {
		return tree, false, nil // Deploy says what is wrong with it
	}
	if prev.Head != "" && prev.Head != pr.HeadSHA && !prev.Closed {
		cmp, err := g.app.Compare(ctx, pr.InstallationID, pr.Owner, pr.Repo, prev.Head, pr.HeadSHA)
		if err == nil && cmp.Status == github.CompareBehind {
			j.Note = fmt.Sprintf("stale pull request event ignored: %s is an ancestor of the previewed %s", short(pr.HeadSHA), short(prev.Head))
			return tree, true, nil
		}
	}
	rows, err := g.st.GitHubPreviewComponents(ctx, pr.FullName, pr.Number)
	if err != nil {
		return tree, true, err
	}
	// When GitHub cannot say (or cut the list), every component is
	// previewed: when in doubt, deploy.
	files, truncated, filesErr := g.app.PullRequestFiles(ctx, pr.InstallationID, pr.Owner, pr.Repo, pr.Number)
	if filesErr != nil {
		g.log.Warn("pull request files failed; previewing every component", "repo", pr.FullName, "pr", pr.Number, "err", filesErr)
	}
	names := map[string]string{}
	var deploy, same []string
	for _, dir := range dirs {
		name := manifest.Sanitize(path.Base(dir))
		if sub, err := tree.Sub(dir); err == nil {
			if m, err := manifest.Load(sub, path.Base(dir)); err == nil {
				name = m.Name
			}
		}
		if other, dup := names[name]; dup {
			return tree, true, &InputError{Err: fmt.Errorf("components %s and %s are both named %q; give one another name in its %s", other, dir, name, manifest.FileName)}
		}
		names[name] = dir
		prefix := dir + "/"
		had := slices.ContainsFunc(rows, func(r store.GitHubPreviewComponent) bool { return r.Component == name })
		if !had && filesErr == nil && !truncated && !slices.ContainsFunc(files, func(f string) bool { return strings.HasPrefix(f, prefix) }) {
			same = append(same, name)
			continue
		}
		payload, err := json.Marshal(previewJob{PullRequest: *pr, Dir: dir, Component: name})
		if err != nil {
			return tree, true, fmt.Errorf("encode preview of %s: %w", name, err)
		}
		child := store.GitHubJob{Delivery: j.Delivery + "/" + name, Kind: j.Kind, Repo: pr.FullName, Payload: payload}
		if _, err := g.st.CreateGitHubJob(ctx, child); err != nil && !errors.Is(err, store.ErrConflict) {
			return tree, true, fmt.Errorf("queue the preview of %s: %w", name, err)
		}
		if !had {
			row := store.GitHubPreviewComponent{Repo: pr.FullName, Number: pr.Number, Component: name, Dir: dir,
				Preview: PreviewName(name, pr.Number), Head: "", Line: "deploying " + short(pr.HeadSHA) + "…"}
			if err := g.st.PutGitHubPreviewComponent(ctx, row); err != nil {
				return tree, true, err
			}
		}
		deploy = append(deploy, name)
	}
	prev.Head, prev.Closed = pr.HeadSHA, false
	if err := g.st.PutGitHubPreview(ctx, *prev); err != nil {
		return tree, true, err
	}
	if len(deploy) == 0 {
		g.comment(ctx, pr, prev, fmt.Sprintf("This pull request changes none of the %d components of %s (%s) at %s: no preview.",
			len(dirs), manifest.FileName, list(same), short(pr.HeadSHA)))
	}
	g.poke()
	j.Note = fmt.Sprintf("%d components listed: previewing %s; unchanged: %s", len(dirs), list(deploy), list(same))
	g.log.Info("preview of several components", "repo", pr.FullName, "pr", pr.Number, "sha", pr.HeadSHA, "deploy", deploy, "unchanged", same)
	return tree, true, nil
}

// runComponentPreview runs the job of one component's preview: deploy,
// then report. Like every job, it picks up where it left off.
func (g *GitHub) runComponentPreview(ctx context.Context, j *store.GitHubJob, pj *previewJob) error {
	if j.Deployment == 0 {
		if done, err := g.deployComponentPreview(ctx, j, pj); err != nil || done {
			return err
		}
	}
	return g.reportComponentPreview(ctx, j, pj)
}

// row returns the record of component's preview in the pull request (a
// new one when there is none).
func (g *GitHub) row(ctx context.Context, pj *previewJob) (store.GitHubPreviewComponent, error) {
	rows, err := g.st.GitHubPreviewComponents(ctx, pj.FullName, pj.Number)
	if err != nil {
		return store.GitHubPreviewComponent{}, err
	}
	for _, r := range rows {
		if r.Component == pj.Component {
			return r, nil
		}
	}
	return store.GitHubPreviewComponent{Repo: pj.FullName, Number: pj.Number, Component: pj.Component, Dir: pj.Dir,
		Preview: PreviewName(pj.Component, pj.Number)}, nil
}

// deployComponentPreview is the first half of a component's preview job;
// done says nothing is left to wait for.
func (g *GitHub) deployComponentPreview(ctx context.Context, j *store.GitHubJob, pj *previewJob) (done bool, err error) {
	pr := &pj.PullRequest
	l := g.prLock(pr.FullName, pr.Number)
	l.Lock()
	defer l.Unlock()
	prev, err := g.preview(ctx, pr)
	if err != nil {
		return true, err
	}
	switch {
	case prev.Closed:
		j.Note = fmt.Sprintf("pull request #%d closed before %s's preview was deployed", pr.Number, pj.Component)
		return true, nil
	case prev.Head != pr.HeadSHA:
		j.Note = fmt.Sprintf("preview of %s at %s superseded by %s", pj.Component, short(pr.HeadSHA), short(prev.Head))
		return true, nil
	}
	row, err := g.row(ctx, pj)
	if err != nil {
		return true, err
	}
	rl := g.repoLock(pr.FullName)
	rl.Lock()
	defer rl.Unlock()
	if c, err := g.m.store.Component(ctx, row.Preview); err == nil {
		for _, id := range []int64{c.Target, c.Live} {
			if d, err := g.m.store.Deployment(ctx, id); id != 0 && err == nil && d.Commit == pr.HeadSHA {
				j.Deployment, j.GitHubDeployment = d.ID, row.GitHubDeployment
				g.save(ctx, j)
				return false, nil
			}
		}
	}
	if j.GitHubDeployment == 0 {
		id, err := g.app.CreatePreviewDeployment(ctx, pr.InstallationID, pr.Owner, pr.Repo, pr.HeadSHA, PreviewComponentEnvironment(pj.Component),
			fmt.Sprintf("Velo previews %s of #%d at %s", pj.Component, pr.Number, short(pr.HeadSHA)))
		if err != nil {
			g.log.Warn("create github deployment failed", "repo", pr.FullName, "pr", pr.Number, "component", pj.Component, "err", err)
		} else {
			j.GitHubDeployment = id
			g.save(ctx, j)
		}
	}
	g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateInProgress, "Deploying "+short(pr.HeadSHA), "", "")
	if old := row.GitHubDeployment; old != 0 && old != j.GitHubDeployment {
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, old, github.StateInactive, "Superseded by "+short(pr.HeadSHA), "", "")
	}
	row.Head, row.Dir = pr.HeadSHA, pj.Dir
	if j.GitHubDeployment != 0 {
		row.GitHubDeployment = j.GitHubDeployment
	}
	row.Line = "deploying " + short(pr.HeadSHA) + "…"
	fail := func(err error) (bool, error) {
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateFailure, err.Error(), "", "")
		row.Line = fmt.Sprintf("failed at %s: %s", short(pr.HeadSHA), err)
		_ = g.st.PutGitHubPreviewComponent(ctx, row)
		g.commentComponents(ctx, pr, &prev)
		return true, err
	}
	tree, err := g.fetchPRTree(ctx, pr)
	if err != nil {
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		return fail(err)
	}
	d, err := g.m.Deploy(ctx, DeployRequest{
		DefaultName: path.Base(pj.Dir),
		NameSuffix:  fmt.Sprintf("%s%d", previewSep, pr.Number),
		Tree:        tree,
		Dir:         pj.Dir,
		Source:      SourceGitHub,
		Repo:        pr.FullName,
		Commit:      pr.HeadSHA,
		Message:     fmt.Sprintf("#%d %s", pr.Number, pr.Title),
		Author:      pr.Author,
	})
	if err != nil {
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		return fail(err)
	}
	row.Preview = d.Component
	if err := g.st.PutGitHubPreviewComponent(ctx, row); err != nil {
		return true, err
	}
	g.commentComponents(ctx, pr, &prev)
	g.log.Info("preview deployed", "repo", pr.FullName, "pr", pr.Number, "sha", pr.HeadSHA, "component", d.Component, "deployment", d.ID)
	j.Deployment = d.ID
	g.save(ctx, j)
	return false, nil
}

// reportComponentPreview waits for a component's preview to settle and
// says how it went: its GitHub deployment's status and its line in the
// comment.
func (g *GitHub) reportComponentPreview(ctx context.Context, j *store.GitHubJob, pj *previewJob) error {
	pr := &pj.PullRequest
	d, live, err := g.previewSettled(ctx, j, pr)
	if err != nil {
		return err
	}
	l := g.prLock(pr.FullName, pr.Number)
	l.Lock()
	defer l.Unlock()
	prev, err := g.preview(ctx, pr)
	if err != nil {
		return err
	}
	row, err := g.row(ctx, pj)
	if err != nil {
		return err
	}
	logURL := g.m.DeploymentURL(d.Component, d.ID)
	switch {
	case live && (row.Head != d.Commit || prev.Head != d.Commit):
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateInactive, "Superseded by "+short(prev.Head), "", logURL)
		j.Note = fmt.Sprintf("preview deployment %d of %s went live, superseded by %s", d.ID, d.Component, short(prev.Head))
		return nil
	case live && prev.Closed:
		j.Note = fmt.Sprintf("preview deployment %d of %s: the pull request closed meanwhile", d.ID, d.Component)
		return nil
	case live:
		url := g.m.ComponentURL(d.Component)
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateSuccess, "Preview at "+url, url, logURL)
		row.Line = fmt.Sprintf("live at %s (commit %s)", url, short(d.Commit))
		j.Note = fmt.Sprintf("preview %s of #%d is live (deployment %d)", d.Component, pr.Number, d.ID)
	case d.Status == store.StatusFailed:
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateFailure, d.Error, "", logURL)
		row.Line = fmt.Sprintf("failed at %s: %s ([build log](%s))", short(d.Commit), d.Error, logURL)
		err = fmt.Errorf("preview deployment %d of %s failed: %s", d.ID, d.Component, d.Error)
	default:
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateInactive, "Superseded by a newer deployment", "", logURL)
		j.Note = fmt.Sprintf("preview deployment %d of %s was superseded", d.ID, d.Component)
		return nil
	}
	if perr := g.st.PutGitHubPreviewComponent(ctx, row); perr != nil {
		return perr
	}
	g.commentComponents(ctx, pr, &prev)
	return err
}

// commentComponents writes the pull request's one comment from every
// component's line. Called under the pull request's lock.
func (g *GitHub) commentComponents(ctx context.Context, pr *github.PullRequest, prev *store.GitHubPreview) {
	rows, err := g.st.GitHubPreviewComponents(ctx, pr.FullName, pr.Number)
	if err != nil {
		g.log.Warn("read preview components failed", "repo", pr.FullName, "pr", pr.Number, "err", err)
		return
	}
	var b strings.Builder
	b.WriteString("previews of this pull request, one per component it changes; Velo updates them on every push and removes them when the pull request closes.\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "\n- `%s` (%s): %s", r.Preview, r.Dir, r.Line)
	}
	g.comment(ctx, pr, prev, b.String())
}

// closeComponentPreviews removes the component previews of a closed pull
// request and marks their GitHub deployments inactive; it reports whether
// there were any. Called under the pull request's and the repository's
// locks.
func (g *GitHub) closeComponentPreviews(ctx context.Context, pr *github.PullRequest) (bool, error) {
	rows, err := g.st.GitHubPreviewComponents(ctx, pr.FullName, pr.Number)
	if err != nil || len(rows) == 0 {
		return false, err
	}
	for _, r := range rows {
		if err := g.removePreview(ctx, r.Preview, pr.FullName); err != nil {
			return true, err
		}
		if r.GitHubDeployment != 0 {
			g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, r.GitHubDeployment, github.StateInactive, "Pull request closed; preview removed", "", "")
		}
		r.Line = "removed"
		if err := g.st.PutGitHubPreviewComponent(ctx, r); err != nil {
			return true, err
		}
		g.log.Info("preview removed", "repo", pr.FullName, "pr", pr.Number, "component", r.Preview)
	}
	return true, nil
}

// removePreview deletes preview component name if it is repo's.
func (g *GitHub) removePreview(ctx context.Context, name, repo string) error {
	c, err := g.m.store.Component(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	case !strings.EqualFold(c.Repo, repo):
		return nil
	}
	if err := g.m.store.DeleteComponent(ctx, c.Name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("remove preview %s: %w", c.Name, err)
	}
	if err := g.m.routesChanged(ctx, c.Name); err != nil {
		g.log.Warn("routes change note failed", "err", err)
	}
	g.m.notify(ctx, store.PlacementsChanged(0))
	return nil
}
