package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// GitHubPreview is what Velo keeps of a pull request's preview.
type GitHubPreview struct {
	// Repo is the base repository, "owner/name"; Number the pull request.
	Repo   string
	Number int
	// Component is the preview's component (NAME--pr-N); "" before the
	// first deploy.
	Component string
	// Head is the last head commit deployed (or tried).
	Head string
	// CommentID is Velo's comment on the pull request (0: none yet); it is
	// edited, never posted twice.
	CommentID int64
	// GitHubDeployment is the newest GitHub deployment of the preview.
	GitHubDeployment int64
	// ApprovedBy is the login of the person with write access who added
	// the label that lets a fork's pull request deploy ("": not approved).
	ApprovedBy string
	// Closed is set once the pull request closed and the preview was
	// removed.
	Closed    bool
	UpdatedAt time.Time
}

// GitHubPreview returns the preview of pull request number of repo
// (compared case-insensitively), or ErrNotFound.
func (s *Store) GitHubPreview(ctx context.Context, repo string, number int) (GitHubPreview, error) {
	var p GitHubPreview
	var closed, updated int64
	err := s.db.queryRow(ctx, `SELECT repo, number, component, head, comment_id, gh_deployment, approved_by, closed, updated_at
		FROM github_previews WHERE repo_key = $1 AND number = $2`, strings.ToLower(repo), number).
		Scan(&p.Repo, &p.Number, &p.Component, &p.Head, &p.CommentID, &p.GitHubDeployment, &p.ApprovedBy, &closed, &updated)
	if err != nil {
		return GitHubPreview{}, fmt.Errorf("github preview %s#%d: %w", repo, number, err)
	}
	p.Closed, p.UpdatedAt = closed != 0, fromMicros(updated)
	return p, nil
}

// PutGitHubPreview records a preview, replacing the one of the same pull
// request.
func (s *Store) PutGitHubPreview(ctx context.Context, p GitHubPreview) error {
	closed := 0
	if p.Closed {
		closed = 1
	}
	_, err := s.db.exec(ctx, `INSERT INTO github_previews
		(repo_key, number, repo, component, head, comment_id, gh_deployment, approved_by, closed, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (repo_key, number) DO UPDATE SET repo = excluded.repo, component = excluded.component,
			head = excluded.head, comment_id = excluded.comment_id, gh_deployment = excluded.gh_deployment,
			approved_by = excluded.approved_by, closed = excluded.closed, updated_at = excluded.updated_at`,
		strings.ToLower(p.Repo), p.Number, p.Repo, p.Component, p.Head, p.CommentID, p.GitHubDeployment,
		p.ApprovedBy, closed, micros(now()))
	if err != nil {
		return fmt.Errorf("put github preview %s#%d: %w", p.Repo, p.Number, err)
	}
	return nil
}

// GitHubPreviewComponent is one component's preview in a pull request of
// a repository whose root velo.toml lists several components.
type GitHubPreviewComponent struct {
	Repo   string
	Number int
	// Component is the component previewed (NAME), in directory Dir;
	// Preview its preview (NAME--pr-N).
	Component, Dir, Preview string
	// Head is the last head commit deployed (or tried) for it.
	Head string
	// GitHubDeployment is its newest GitHub deployment.
	GitHubDeployment int64
	// Line is what Velo's comment on the pull request says of it.
	Line      string
	UpdatedAt time.Time
}

// GitHubPreviewComponents returns the component previews of pull request
// number of repo, by component name.
func (s *Store) GitHubPreviewComponents(ctx context.Context, repo string, number int) ([]GitHubPreviewComponent, error) {
	rs, err := s.db.query(ctx, `SELECT component, dir, preview, head, gh_deployment, line, updated_at
		FROM github_preview_components WHERE repo_key = $1 AND number = $2 ORDER BY component`, strings.ToLower(repo), number)
	out, err := collect(rs, err, func(r row) (GitHubPreviewComponent, error) {
		p := GitHubPreviewComponent{Repo: repo, Number: number}
		var updated int64
		err := r.Scan(&p.Component, &p.Dir, &p.Preview, &p.Head, &p.GitHubDeployment, &p.Line, &updated)
		p.UpdatedAt = fromMicros(updated)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("github preview components %s#%d: %w", repo, number, err)
	}
	return out, nil
}

// PutGitHubPreviewComponent records a component's preview in a pull
// request, replacing the one of the same component.
func (s *Store) PutGitHubPreviewComponent(ctx context.Context, p GitHubPreviewComponent) error {
	_, err := s.db.exec(ctx, `INSERT INTO github_preview_components
		(repo_key, number, component, dir, preview, head, gh_deployment, line, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (repo_key, number, component) DO UPDATE SET dir = excluded.dir, preview = excluded.preview,
			head = excluded.head, gh_deployment = excluded.gh_deployment, line = excluded.line, updated_at = excluded.updated_at`,
		strings.ToLower(p.Repo), p.Number, p.Component, p.Dir, p.Preview, p.Head, p.GitHubDeployment, p.Line, micros(now()))
	if err != nil {
		return fmt.Errorf("put github preview component %s#%d %s: %w", p.Repo, p.Number, p.Component, err)
	}
	return nil
}
