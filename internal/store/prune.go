package store

import (
	"context"
	"fmt"
	"time"
)

// Prune deletes what is kept only for a while: the hit buckets (per
// component and per deployment) of minutes before hitsBefore, and the GitHub jobs that finished (done or failed)
// before jobsBefore — kept until then so that a redelivery is recognized.
// Queued and running jobs are never pruned. It returns how many of each
// went.
func (s *Store) Prune(ctx context.Context, hitsBefore, jobsBefore time.Time) (hits, jobs int64, err error) {
	hits, err = s.db.exec(ctx, `DELETE FROM hits WHERE minute < $1`, micros(hitsBefore))
	if err != nil {
		return 0, 0, fmt.Errorf("prune hits: %w", err)
	}
	dhits, err := s.db.exec(ctx, `DELETE FROM deployment_hits WHERE minute < $1`, micros(hitsBefore))
	if err != nil {
		return hits, 0, fmt.Errorf("prune deployment hits: %w", err)
	}
	hits += dhits
	jobs, err = s.db.exec(ctx, `DELETE FROM github_jobs WHERE updated_at < $1 AND state IN ($2, $3)`,
		micros(jobsBefore), JobDone, JobFailed)
	if err != nil {
		return hits, 0, fmt.Errorf("prune github jobs: %w", err)
	}
	return hits, jobs, nil
}
