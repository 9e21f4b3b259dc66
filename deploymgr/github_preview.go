package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
)

// PreviewLabel is the label that lets a pull request from a fork deploy a
// preview, once someone with write access to the repository adds it: fork
// code never runs unasked.
const PreviewLabel = "velo-preview"

// PreviewEnvironment is the GitHub environment of previews (transient, not
// production).
const PreviewEnvironment = "preview"

// PreviewName is the component that previews pull request number of the
// component name.
func PreviewName(name string, number int) string {
	return fmt.Sprintf("%s%s%d", name, previewSep, number)
}

// previewMarker starts Velo's comment on a pull request, so people (and
// Velo's tests) can tell it.
const previewMarker = "<!-- velo-preview -->\n"

// runPreview acts on a pull_request job: opened, synchronize and reopened
// deploy the head as the preview component NAME--pr-N (a fork's only once
// approved by label); closed removes it; labeled and unlabeled approve a
// fork's pull request or withdraw the approval. Like a push job, it picks
// up where it left off: a job with a deployment only waits for it.
func (g *GitHub) runPreview(ctx context.Context, j *store.GitHubJob) error {
	var pj previewJob
	if err := json.Unmarshal(j.Payload, &pj); err != nil {
		return fmt.Errorf("decode pull request: %w", err)
	}
	if pj.Component != "" {
		return g.runComponentPreview(ctx, j, &pj)
	}
	pr := pj.PullRequest
	if j.Deployment == 0 {
		if done, err := g.actOnPreview(ctx, j, &pr); err != nil || done {
			return err
		}
	}
	return g.reportPreview(ctx, j, &pr)
}

// prLock returns the lock that serializes what the jobs of one pull
// request do to its preview record, comment and GitHub deployments.
func (g *GitHub) prLock(repo string, number int) *sync.Mutex {
	return g.repoLock(fmt.Sprintf("%s#%d", repo, number))
}

// preview reads the record of a pull request's preview (a new one when
// there is none).
func (g *GitHub) preview(ctx context.Context, pr *github.PullRequest) (store.GitHubPreview, error) {
	prev, err := g.st.GitHubPreview(ctx, pr.FullName, pr.Number)
	if errors.Is(err, store.ErrNotFound) {
		return store.GitHubPreview{Repo: pr.FullName, Number: pr.Number}, nil
	}
	return prev, err
}

// actOnPreview is the first half of a pull_request job, under the pull
// request's lock: it reports done when nothing is left to wait for, else
// j.Deployment is the deployment to report on.
func (g *GitHub) actOnPreview(ctx context.Context, j *store.GitHubJob, pr *github.PullRequest) (done bool, err error) {
	l := g.prLock(pr.FullName, pr.Number)
	l.Lock()
	defer l.Unlock()
	prev, err := g.preview(ctx, pr)
	if err != nil {
		return true, err
	}
	return g.decidePreview(ctx, j, pr, &prev)
}

// decidePreview acts on the job's action with the preview's record.
func (g *GitHub) decidePreview(ctx context.Context, j *store.GitHubJob, pr *github.PullRequest, prev *store.GitHubPreview) (bool, error) {
	switch pr.Action {
	case "closed":
		return true, g.closePreview(ctx, j, pr, prev)
	case "unlabeled":
		if prev.ApprovedBy != "" {
			j.Note = fmt.Sprintf("%s removed; %s's approval withdrawn: new pushes of the fork are not deployed", PreviewLabel, prev.ApprovedBy)
			prev.ApprovedBy = ""
			return true, g.st.PutGitHubPreview(ctx, *prev)
		}
		j.Note = PreviewLabel + " removed"
		return true, nil
	case "labeled":
		if !pr.Fork {
			break
		}
		ok, err := g.app.CanWrite(ctx, pr.InstallationID, pr.Owner, pr.Repo, pr.Sender)
		if err != nil {
			return true, err
		}
		if !ok {
			j.Note = fmt.Sprintf("%s added by %s, who has no write access to %s: ignored", PreviewLabel, pr.Sender, pr.FullName)
			g.log.Info("preview label ignored", "repo", pr.FullName, "pr", pr.Number, "by", pr.Sender)
			return true, nil
		}
		prev.ApprovedBy = pr.Sender
		if err := g.st.PutGitHubPreview(ctx, *prev); err != nil {
			return true, err
		}
	}
	if pr.Fork && (prev.ApprovedBy == "" || !pr.HasLabel(PreviewLabel)) {
		j.Note = fmt.Sprintf("pull request #%d comes from the fork %s: waiting for someone with write access to add the label %s", pr.Number, pr.HeadRepo, PreviewLabel)
		g.comment(ctx, pr, prev, fmt.Sprintf("This pull request comes from a fork, so Velo does not deploy a preview of it until someone with write access to %s adds the label `%s`.", pr.FullName, PreviewLabel))
		return true, nil
	}
	tree, handled, err := g.fanOutPreview(ctx, j, pr, prev)
	if handled || err != nil {
		return true, err
	}
	if err := g.deployPreview(ctx, j, pr, prev, tree); err != nil {
		var se *staleError
		if errors.As(err, &se) {
			j.Note = se.msg
			return true, nil
		}
		return true, err
	}
	return false, nil
}

// deployPreview deploys the pull request's head as its preview: a GitHub
// deployment to the preview environment, the tarball of the head commit
// (GitHub serves a fork's commits from the base repository too), and
// Manager.Deploy under the preview's name.
func (g *GitHub) deployPreview(ctx context.Context, j *store.GitHubJob, pr *github.PullRequest, prev *store.GitHubPreview, tree *archive.Tree) error {
	l := g.repoLock(pr.FullName)
	l.Lock()
	defer l.Unlock()
	// A late delivery of an earlier head (its commit is an ancestor of
	// the one last deployed) changes nothing.
	if prev.Head != "" && prev.Head != pr.HeadSHA && !prev.Closed {
		cmp, err := g.app.Compare(ctx, pr.InstallationID, pr.Owner, pr.Repo, prev.Head, pr.HeadSHA)
		if err == nil && cmp.Status == github.CompareBehind {
			return &staleError{msg: fmt.Sprintf("stale pull request event ignored: %s is an ancestor of the preview's %s", short(pr.HeadSHA), short(prev.Head))}
		}
	}
	if prev.Component != "" {
		if c, err := g.m.store.Component(ctx, prev.Component); err == nil {
			for _, id := range []int64{c.Target, c.Live} {
				if d, err := g.m.store.Deployment(ctx, id); id != 0 && err == nil && d.Commit == pr.HeadSHA {
					// Already deployed (a redelivery, or a label added after
					// the deploy): report it again.
					j.Deployment, j.GitHubDeployment = d.ID, prev.GitHubDeployment
					g.save(ctx, j)
					return nil
				}
			}
		}
	}
	if j.GitHubDeployment == 0 {
		id, err := g.app.CreatePreviewDeployment(ctx, pr.InstallationID, pr.Owner, pr.Repo, pr.HeadSHA, PreviewEnvironment,
			fmt.Sprintf("Velo previews #%d at %s", pr.Number, short(pr.HeadSHA)))
		if err != nil {
			g.log.Warn("create github deployment failed", "repo", pr.FullName, "pr", pr.Number, "err", err)
		} else {
			j.GitHubDeployment = id
			g.save(ctx, j)
		}
	}
	g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateInProgress, "Deploying "+short(pr.HeadSHA), "", "")
	if old := prev.GitHubDeployment; old != 0 && old != j.GitHubDeployment {
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, old, github.StateInactive, "Superseded by "+short(pr.HeadSHA), "", "")
	}
	prev.Head, prev.Closed = pr.HeadSHA, false
	if j.GitHubDeployment != 0 {
		prev.GitHubDeployment = j.GitHubDeployment
	}
	d, err := g.previewCommit(ctx, pr, tree)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		_ = g.st.PutGitHubPreview(ctx, *prev)
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateFailure, err.Error(), "", "")
		g.comment(ctx, pr, prev, fmt.Sprintf("The preview of %s failed: %s", short(pr.HeadSHA), err))
		return err
	}
	prev.Component = d.Component
	if err := g.st.PutGitHubPreview(ctx, *prev); err != nil {
		return err
	}
	j.Deployment = d.ID
	g.save(ctx, j)
	return nil
}

// previewCommit deploys the head's tree (fetched now when nil) as the
// preview.
func (g *GitHub) previewCommit(ctx context.Context, pr *github.PullRequest, tree *archive.Tree) (store.Deployment, error) {
	if tree == nil {
		var err error
		if tree, err = g.fetchPRTree(ctx, pr); err != nil {
			return store.Deployment{}, err
		}
	}
	d, err := g.m.Deploy(ctx, DeployRequest{
		DefaultName: pr.Repo,
		NameSuffix:  fmt.Sprintf("%s%d", previewSep, pr.Number),
		Tree:        tree,
		Source:      SourceGitHub,
		Repo:        pr.FullName,
		Commit:      pr.HeadSHA,
		Message:     fmt.Sprintf("#%d %s", pr.Number, pr.Title),
		Author:      pr.Author,
	})
	if err != nil {
		return store.Deployment{}, err
	}
	g.log.Info("preview deployed", "repo", pr.FullName, "pr", pr.Number, "sha", pr.HeadSHA, "component", d.Component, "deployment", d.ID)
	return d, nil
}

// previewSettled waits for job j's preview deployment to settle; when
// waiting fails (not for the end of ctx), its GitHub deployment says so.
func (g *GitHub) previewSettled(ctx context.Context, j *store.GitHubJob, pr *github.PullRequest) (store.Deployment, bool, error) {
	d, live, err := g.waitSettled(ctx, j.Deployment)
	if err != nil && ctx.Err() == nil {
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateError, err.Error(), "", "")
	}
	return d, live, err
}

// reportPreview waits for the preview's deployment to settle and says how
// it went: the GitHub deployment's status and the pull request's comment.
func (g *GitHub) reportPreview(ctx context.Context, j *store.GitHubJob, pr *github.PullRequest) error {
	d, live, err := g.previewSettled(ctx, j, pr)
	if err != nil {
		return err
	}
	l := g.prLock(pr.FullName, pr.Number)
	l.Lock()
	defer l.Unlock()
	// Read again: other jobs of the pull request may have moved on.
	fresh, err := g.preview(ctx, pr)
	if err != nil {
		return err
	}
	prev := &fresh
	logURL := g.m.DeploymentURL(d.Component, d.ID)
	switch {
	case live && prev.Head != "" && prev.Head != d.Commit:
		// A newer head is being deployed: its job speaks in the comment.
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateInactive, "Superseded by "+short(prev.Head), "", logURL)
		j.Note = fmt.Sprintf("preview deployment %d of %s went live, superseded by %s", d.ID, d.Component, short(prev.Head))
	case live && prev.Closed:
		j.Note = fmt.Sprintf("preview deployment %d of %s: the pull request closed meanwhile", d.ID, d.Component)
	case live:
		url := g.m.ComponentURL(d.Component)
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateSuccess, "Preview at "+url, url, logURL)
		g.comment(ctx, pr, prev, fmt.Sprintf("The preview of this pull request is live at %s (commit %s, component `%s`). Velo updates it on every push and removes it when the pull request closes.",
			url, short(d.Commit), d.Component))
		j.Note = fmt.Sprintf("preview %s of #%d is live (deployment %d)", d.Component, pr.Number, d.ID)
	case d.Status == store.StatusFailed:
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateFailure, d.Error, "", logURL)
		g.comment(ctx, pr, prev, fmt.Sprintf("The preview of %s failed: %s ([build log](%s))", short(d.Commit), d.Error, logURL))
		return fmt.Errorf("preview deployment %d of %s failed: %s", d.ID, d.Component, d.Error)
	default:
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, j.GitHubDeployment, github.StateInactive, "Superseded by a newer deployment", "", logURL)
		j.Note = fmt.Sprintf("preview deployment %d of %s was superseded", d.ID, d.Component)
	}
	return nil
}

// closePreview removes a closed pull request's preview component, marks
// its GitHub deployment inactive and says so in the comment.
func (g *GitHub) closePreview(ctx context.Context, j *store.GitHubJob, pr *github.PullRequest, prev *store.GitHubPreview) error {
	l := g.repoLock(pr.FullName)
	l.Lock()
	defer l.Unlock()
	if prev.Component != "" {
		if err := g.removePreview(ctx, prev.Component, pr.FullName); err != nil {
			return err
		}
	}
	if prev.GitHubDeployment != 0 {
		g.ghStatus(ctx, pr.InstallationID, pr.Owner, pr.Repo, prev.GitHubDeployment, github.StateInactive, "Pull request closed; preview removed", "", "")
	}
	several, err := g.closeComponentPreviews(ctx, pr)
	if err != nil {
		return err
	}
	switch {
	case several:
		g.comment(ctx, pr, prev, "The pull request is closed: Velo removed its previews.")
	case prev.Component != "" || prev.CommentID != 0:
		g.comment(ctx, pr, prev, "The pull request is closed: Velo removed its preview.")
	}
	if several {
		j.Note = fmt.Sprintf("pull request #%d closed; its component previews removed", pr.Number)
	} else {
		j.Note = fmt.Sprintf("pull request #%d closed; preview %s removed", pr.Number, prev.Component)
		g.log.Info("preview removed", "repo", pr.FullName, "pr", pr.Number, "component", prev.Component)
	}
	prev.Closed = true
	return g.st.PutGitHubPreview(ctx, *prev)
}

// comment keeps Velo's one comment on the pull request up to date: it
// edits the comment it made before, and only makes one when there is none
// (or it was deleted). Failures are logged: a comment is never worth
// failing a deploy for.
func (g *GitHub) comment(ctx context.Context, pr *github.PullRequest, prev *store.GitHubPreview, text string) {
	body := previewMarker + "**Velo preview** — " + text
	if prev.CommentID != 0 {
		err := g.app.EditComment(ctx, pr.InstallationID, pr.Owner, pr.Repo, prev.CommentID, body)
		if err == nil {
			return
		}
		if !errors.Is(err, github.ErrNotFound) {
			g.log.Warn("edit preview comment failed", "repo", pr.FullName, "pr", pr.Number, "err", err)
			return
		}
	}
	id, err := g.app.CreateComment(ctx, pr.InstallationID, pr.Owner, pr.Repo, pr.Number, body)
	if err != nil {
		g.log.Warn("preview comment failed", "repo", pr.FullName, "pr", pr.Number, "err", err)
		return
	}
	prev.CommentID = id
	if err := g.st.PutGitHubPreview(ctx, *prev); err != nil {
		g.log.Warn("record preview comment failed", "repo", pr.FullName, "pr", pr.Number, "err", err)
	}
}

// ghStatus posts a status to GitHub deployment id (nothing when 0);
// failures are logged.
func (g *GitHub) ghStatus(ctx context.Context, installation int64, owner, repo string, id int64, state, desc, envURL, logURL string) {
	if id == 0 {
		return
	}
	if err := g.app.SetDeploymentStatus(ctx, installation, owner, repo, id, state, desc, envURL, logURL); err != nil {
		g.log.Warn("github deployment status failed", "repo", owner+"/"+repo, "deployment", id, "state", state, "err", err)
	}
}
