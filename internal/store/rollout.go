package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/velo-run/velo/internal/hist"
)

// Rollout is a component's rollout state beside its live deployment.
type Rollout struct {
	Component string
	// Canary receives Weight percent (1-99) of the component's calls once
	// it has ready workers; 0 when there is none.
	Canary int64
	Weight int
	// Previous was live until the last promotion, at PromotedAt: what
	// automatic rollback compares the live deployment with, and goes
	// back to. 0 and zero when the component was never promoted past its
	// first deployment.
	Previous   int64
	PromotedAt time.Time
}

const rolloutCols = `component, canary, weight, previous, promoted_at`

func scanRollout(r row) (Rollout, error) {
	var ro Rollout
	var at int64
	err := r.Scan(&ro.Component, &ro.Canary, &ro.Weight, &ro.Previous, &at)
	ro.PromotedAt = fromMicros(at)
	return ro, err
}

// Rollout returns the component's rollout state: the zero Rollout (with
// Component set) when it has none.
func (s *Store) Rollout(ctx context.Context, component string) (Rollout, error) {
	ro, err := scanRollout(s.db.queryRow(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE component = $1`, component))
	if errors.Is(err, ErrNotFound) {
		return Rollout{Component: component}, nil
	}
	if err != nil {
		return Rollout{}, fmt.Errorf("rollout of %s: %w", component, err)
	}
	return ro, nil
}

// Rollouts returns the rollout state of every component that has one,
// ordered by component.
func (s *Store) Rollouts(ctx context.Context) ([]Rollout, error) {
	return s.rollouts(ctx, `SELECT `+rolloutCols+` FROM rollouts ORDER BY component`)
}

// PromotedRollouts returns the rollout state of the components promoted
// past a previous deployment at or after since, ordered by component:
// what automatic rollback watches, without reading every component's.
func (s *Store) PromotedRollouts(ctx context.Context, since time.Time) ([]Rollout, error) {
	return s.rollouts(ctx, `SELECT `+rolloutCols+` FROM rollouts
		WHERE previous <> 0 AND promoted_at >= $1 ORDER BY component`, micros(since))
}

func (s *Store) rollouts(ctx context.Context, query string, args ...any) ([]Rollout, error) {
	rs, err := s.db.query(ctx, query, args...)
	out, err := collect(rs, err, scanRollout)
	if err != nil {
		return nil, fmt.Errorf("rollouts: %w", err)
	}
	return out, nil
}

// SetCanary makes deployment the component's canary at weight percent of
// its calls; deployment 0 (or weight 0) ends the canary. ErrNotFound unless
// the deployment exists and belongs to the component.
func (s *Store) SetCanary(ctx context.Context, component string, deployment int64, weight int) error {
	if deployment == 0 || weight <= 0 {
		deployment, weight = 0, 0
	} else {
		var id int64
		if err := s.db.queryRow(ctx, `SELECT id FROM deployments WHERE id = $1 AND component = $2`, deployment, component).Scan(&id); err != nil {
			return fmt.Errorf("set canary of %s to %d: %w", component, deployment, err)
		}
	}
	_, err := s.db.exec(ctx, `INSERT INTO rollouts (component, canary, weight)
		SELECT $1, CAST($2 AS BIGINT), CAST($3 AS INTEGER) WHERE EXISTS (SELECT 1 FROM components WHERE name = $1)
		ON CONFLICT (component) DO UPDATE SET canary = excluded.canary, weight = excluded.weight`,
		component, deployment, weight)
	if err != nil {
		return fmt.Errorf("set canary of %s to %d: %w", component, deployment, err)
	}
	return nil
}

// recordPromotion notes, in Promote's transaction, that deployment
// replaced live (the component's live deployment before it) now; a
// canary that was the deployment is no longer one.
func recordPromotion(ctx context.Context, q querier, component string, deployment, live int64) error {
	if live == deployment {
		return nil
	}
	_, err := q.exec(ctx, `INSERT INTO rollouts (component, previous, promoted_at) VALUES ($1, $2, $3)
		ON CONFLICT (component) DO UPDATE SET previous = excluded.previous, promoted_at = excluded.promoted_at,
			canary = CASE WHEN rollouts.canary = $4 THEN 0 ELSE rollouts.canary END,
			weight = CASE WHEN rollouts.canary = $4 THEN 0 ELSE rollouts.weight END`,
		component, live, micros(now()), deployment)
	return err
}

// addDeploymentHits adds the per-deployment counts of rows (AddHits'
// transaction); counts of deployments that no longer exist are dropped.
func addDeploymentHits(ctx context.Context, q querier, batch []Hits) error {
	type key struct{ deployment, minute int64 }
	idx := map[key]int{}
	var rows []Hits
	for _, h := range batch {
		if h.Deployment == 0 {
			continue
		}
		m := h.Minute.UTC().Truncate(time.Minute)
		k := key{h.Deployment, m.UnixMicro()}
		if i, ok := idx[k]; ok {
			rows[i].Hits += h.Hits
			rows[i].Errors += h.Errors
			rows[i].Latency = hist.Merge(rows[i].Latency, h.Latency)
			continue
		}
		idx[k] = len(rows)
		h.Minute, h.Latency = m, hist.Merge(nil, h.Latency)
		rows = append(rows, h)
	}
	slices.SortFunc(rows, func(a, b Hits) int {
		if a.Deployment != b.Deployment {
			return int(a.Deployment - b.Deployment)
		}
		return a.Minute.Compare(b.Minute)
	})
	for _, h := range rows {
		minute := micros(h.Minute)
		if _, err := q.exec(ctx, `INSERT INTO deployment_hits (deployment, minute, hits, errors, latency)
			SELECT CAST($1 AS BIGINT), CAST($2 AS BIGINT), 0, 0, ''
			WHERE EXISTS (SELECT 1 FROM deployments WHERE id = $1)
			ON CONFLICT (deployment, minute) DO NOTHING`, h.Deployment, minute); err != nil {
			return fmt.Errorf("deployment %d: %w", h.Deployment, err)
		}
		var enc string
		err := q.queryRow(ctx, `UPDATE deployment_hits SET hits = hits + $3, errors = errors + $4
			WHERE deployment = $1 AND minute = $2 RETURNING latency`,
			h.Deployment, minute, h.Hits, h.Errors).Scan(&enc)
		if errors.Is(err, ErrNotFound) {
			continue // deployment deleted
		}
		if err != nil {
			return fmt.Errorf("deployment %d: %w", h.Deployment, err)
		}
		if len(h.Latency) == 0 {
			continue
		}
		merged, err := decodeCounts(enc)
		if err != nil {
			return fmt.Errorf("deployment %d: %w", h.Deployment, err)
		}
		if _, err := q.exec(ctx, `UPDATE deployment_hits SET latency = $3 WHERE deployment = $1 AND minute = $2`,
			h.Deployment, minute, encodeCounts(hist.Merge(merged, h.Latency))); err != nil {
			return fmt.Errorf("deployment %d: %w", h.Deployment, err)
		}
	}
	return nil
}

// DeploymentStats returns the deployment's per-minute counts from the
// minute holding since on, ordered by minute.
func (s *Store) DeploymentStats(ctx context.Context, deployment int64, since time.Time) ([]Hits, error) {
	rs, err := s.db.query(ctx, `SELECT h.minute, h.hits, h.errors, h.latency, d.component
		FROM deployment_hits h JOIN deployments d ON d.id = h.deployment
		WHERE h.deployment = $1 AND h.minute >= $2 ORDER BY h.minute`,
		deployment, micros(since.UTC().Truncate(time.Minute)))
	if err != nil {
		return nil, fmt.Errorf("stats of deployment %d: %w", deployment, err)
	}
	defer rs.Close()
	var out []Hits
	for rs.Next() {
		h := Hits{Deployment: deployment}
		var minute int64
		var enc string
		if err := rs.Scan(&minute, &h.Hits, &h.Errors, &enc, &h.Component); err != nil {
			return nil, fmt.Errorf("stats of deployment %d: %w", deployment, err)
		}
		h.Minute = fromMicros(minute)
		if h.Latency, err = decodeCounts(enc); err != nil {
			return nil, fmt.Errorf("stats of deployment %d: %w", deployment, err)
		}
		out = append(out, h)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("stats of deployment %d: %w", deployment, err)
	}
	return out, nil
}

// GitHubJobOf returns the newest GitHub job that created deployment, or
// ErrNotFound.
func (s *Store) GitHubJobOf(ctx context.Context, deployment int64) (GitHubJob, error) {
	j, err := scanGitHubJob(s.db.queryRow(ctx, `SELECT `+githubJobCols+` FROM github_jobs
		WHERE deployment = $1 ORDER BY created_at DESC LIMIT 1`, deployment))
	if err != nil {
		return GitHubJob{}, fmt.Errorf("github job of deployment %d: %w", deployment, err)
	}
	return j, nil
}

// SetPromotedAt sets when the component's last promotion happened, as if
// it had happened then: tests of the watch window use it.
func (s *Store) SetPromotedAt(ctx context.Context, component string, at time.Time) error {
	if err := affected(s.db.exec(ctx, `UPDATE rollouts SET promoted_at = $2 WHERE component = $1`, component, micros(at))); err != nil {
		return fmt.Errorf("set promoted_at of %s: %w", component, err)
	}
	return nil
}
