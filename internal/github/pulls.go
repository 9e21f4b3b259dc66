package github

import (
	"context"
	"errors"
	"fmt"
	"strings"

	gh "github.com/google/go-github/v50/github"
)

// EventPullRequest is the pull_request webhook.
const EventPullRequest = "pull_request"

// PullRequest is a pull_request webhook, reduced to what previews need.
type PullRequest struct {
	// Action is opened, synchronize, reopened, closed, labeled, unlabeled
	// and others Velo does not act on.
	Action         string
	InstallationID int64
	// The base repository: where the pull request is opened.
	RepoID   int64
	Owner    string
	Repo     string
	FullName string
	Number   int
	Title    string
	HTMLURL  string
	// HeadSHA is the commit the pull request's head points to; GitHub
	// serves it from the base repository too, also for forks.
	HeadSHA string
	HeadRef string
	// HeadRepo is the full name of the repository the head lives in;
	// Fork says it is not the base repository.
	HeadRepo string
	Fork     bool
	// Before and After are the head's old and new commits of a
	// synchronize.
	Before, After string
	// Labels are the pull request's labels' names; Label is the one added
	// or removed by a labeled or unlabeled action.
	Labels []string
	Label  string
	Merged bool
	// Sender is the login of who acted; Author the pull request's.
	Sender, Author string
}

// HasLabel reports whether the pull request carries label name.
func (p *PullRequest) HasLabel(name string) bool {
	for _, l := range p.Labels {
		if strings.EqualFold(l, name) {
			return true
		}
	}
	return false
}

func pullRequestFrom(e *gh.PullRequestEvent) (*PullRequest, error) {
	pr := e.GetPullRequest()
	repo := e.GetRepo()
	p := &PullRequest{
		Action:         e.GetAction(),
		InstallationID: e.GetInstallation().GetID(),
		RepoID:         repo.GetID(),
		Owner:          repo.GetOwner().GetLogin(),
		Repo:           repo.GetName(),
		FullName:       repo.GetFullName(),
		Number:         e.GetNumber(),
		Title:          pr.GetTitle(),
		HTMLURL:        pr.GetHTMLURL(),
		HeadSHA:        pr.GetHead().GetSHA(),
		HeadRef:        pr.GetHead().GetRef(),
		HeadRepo:       pr.GetHead().GetRepo().GetFullName(),
		Before:         e.GetBefore(),
		After:          e.GetAfter(),
		Label:          e.GetLabel().GetName(),
		Merged:         pr.GetMerged(),
		Sender:         e.GetSender().GetLogin(),
		Author:         pr.GetUser().GetLogin(),
	}
	if p.Number == 0 {
		p.Number = pr.GetNumber()
	}
	if p.FullName == "" && p.Owner != "" {
		p.FullName = p.Owner + "/" + p.Repo
	}
	if p.Owner == "" || p.Repo == "" {
		return nil, errors.New("repository missing")
	}
	if p.Number <= 0 {
		return nil, fmt.Errorf("pull request number %d", p.Number)
	}
	if !isSHA(p.HeadSHA) {
		return nil, fmt.Errorf("head sha %q is not a commit sha", p.HeadSHA)
	}
	// A head repository that was deleted is null: treat it as a fork, the
	// safe side.
	p.Fork = p.HeadRepo == "" || !strings.EqualFold(p.HeadRepo, p.FullName)
	for _, l := range pr.Labels {
		p.Labels = append(p.Labels, l.GetName())
	}
	return p, nil
}

// CreatePreviewDeployment records a deployment of sha to a transient,
// non-production environment on GitHub (a pull request's preview) and
// returns its ID.
func (a *App) CreatePreviewDeployment(ctx context.Context, installationID int64, owner, repo, sha, environment, description string) (int64, error) {
	return a.createDeployment(ctx, installationID, owner, repo, sha, environment, description, true)
}

// CreateComment comments on issue or pull request number and returns the
// comment's ID.
func (a *App) CreateComment(ctx context.Context, installationID int64, owner, repo string, number int, body string) (int64, error) {
	c := a.installation(installationID)
	cm, resp, err := c.Issues.CreateComment(ctx, owner, repo, number, &gh.IssueComment{Body: gh.String(body)})
	if err != nil {
		return 0, apiError(fmt.Sprintf("comment on %s/%s#%d", owner, repo, number), resp, err)
	}
	return cm.GetID(), nil
}

// EditComment replaces the body of comment id. ErrNotFound: the comment
// was deleted.
func (a *App) EditComment(ctx context.Context, installationID int64, owner, repo string, id int64, body string) error {
	c := a.installation(installationID)
	_, resp, err := c.Issues.EditComment(ctx, owner, repo, id, &gh.IssueComment{Body: gh.String(body)})
	if err != nil {
		return apiError(fmt.Sprintf("edit comment %d on %s/%s", id, owner, repo), resp, err)
	}
	return nil
}

// CanWrite reports whether user has write access (write, maintain or
// admin) to owner/repo, as GitHub's collaborator permission API says.
func (a *App) CanWrite(ctx context.Context, installationID int64, owner, repo, user string) (bool, error) {
	c := a.installation(installationID)
	p, resp, err := c.Repositories.GetPermissionLevel(ctx, owner, repo, user)
	if resp != nil && resp.StatusCode == 404 {
		return false, nil // not a collaborator, or no such user
	}
	if err != nil {
		return false, apiError(fmt.Sprintf("permission of %s on %s/%s", user, owner, repo), resp, err)
	}
	switch p.GetPermission() {
	case "admin", "write", "maintain":
		return true, nil
	}
	return false, nil
}

// MaxPullFiles is the most files GitHub lists for a pull request; a
// longer list is cut there.
const MaxPullFiles = 3000

// PullRequestFiles lists the paths pull request number changes (GET
// /repos/{owner}/{repo}/pulls/{number}/files, every page; a renamed file
// under both names). truncated says GitHub listed MaxPullFiles: there may
// be more.
func (a *App) PullRequestFiles(ctx context.Context, installationID int64, owner, repo string, number int) (files []string, truncated bool, err error) {
	c := a.installation(installationID)
	opts := &gh.ListOptions{PerPage: 100}
	listed := 0
	for page := 0; page < MaxPullFiles/100+1; page++ {
		fs, resp, err := c.PullRequests.ListFiles(ctx, owner, repo, number, opts)
		if err != nil {
			return nil, false, apiError(fmt.Sprintf("files of %s/%s#%d", owner, repo, number), resp, err)
		}
		for _, f := range fs {
			listed++
			files = append(files, f.GetFilename())
			if p := f.GetPreviousFilename(); p != "" {
				files = append(files, p)
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	return files, listed >= MaxPullFiles, nil
}
