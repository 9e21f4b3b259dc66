package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
)

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
