package deploymgr

import (
	"context"
	"encoding/json"

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
)

// rollbackStore finds the GitHub job that deployed a deployment.
type rollbackStore interface {
	GitHubJobOf(ctx context.Context, deployment int64) (store.GitHubJob, error)
}

// rolledBack reports on the GitHub deployment of d, when it came from a
// push, that Velo rolled it back and why ("rolled back: 42 % errors vs
// 0.3 %"), as a failure status. A failure to report is logged.
func (g *GitHub) rolledBack(ctx context.Context, d store.Deployment, reason string) {
	rs, ok := g.st.(rollbackStore)
	if !ok || d.Source != SourceGitHub {
		return
	}
	j, err := rs.GitHubJobOf(ctx, d.ID)
	if err != nil {
		if !isNotFound(err) {
			g.log.Warn("find the github job of a rolled back deployment failed", "deployment", d.ID, "err", err)
		}
		return
	}
	var p github.Push
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		g.log.Warn("decode push of a rolled back deployment failed", "deployment", d.ID, "err", err)
		return
	}
	g.status(ctx, &j, &p, github.StateFailure, reason, "", g.m.DeploymentURL(d.Component, d.ID))
}
