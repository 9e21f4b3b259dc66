package deploymgr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
)

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
		g.status(ctx, j, p, github.StateInactive, "Superseded by a newer deployment", "", logURL)
		j.Note = fmt.Sprintf("deployment %d of %s was superseded", d.ID, d.Component)
	}
	return nil
}

// waitSettled waits until deployment id is live (live true), failed, or
// prepared but superseded by a newer target.
func (g *GitHub) waitSettled(ctx context.Context, id int64) (store.Deployment, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SettleTimeout)
	defer cancel()
	changes, err := g.m.store.Listen(ctx, store.ChannelRoutes)
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
			case err == nil && g.m.live(ctx, c, d):
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
		case _, ok := <-changes:
			if !ok {
				changes = nil // the store closed: the tick goes on
			}
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
