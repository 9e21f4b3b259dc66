package deploymgr

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/velo-run/velo/internal/store"
)

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
	case jobPullRequest:
		err = g.runPreview(ctx, &j)
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
