package store

import (
	"context"
	"fmt"
	"time"
)

// PutArtifact stores data under its digest. Artifacts are content-addressed,
// so storing a digest again only renews its time (which DropArtifacts
// honours, so an upload under way does not lose its artifact).
func (s *Store) PutArtifact(ctx context.Context, digest string, data []byte) error {
	if data == nil {
		data = []byte{} // NULL is not an empty artifact
	}
	_, err := s.db.exec(ctx, `INSERT INTO artifacts (digest, data, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (digest) DO UPDATE SET created_at = excluded.created_at`, digest, data, micros(now()))
	if err != nil {
		return fmt.Errorf("put artifact %s: %w", digest, err)
	}
	return nil
}

// Artifact returns the bytes stored under digest, or ErrNotFound.
func (s *Store) Artifact(ctx context.Context, digest string) ([]byte, error) {
	var data []byte
	if err := s.db.queryRow(ctx, `SELECT data FROM artifacts WHERE digest = $1`, digest).Scan(&data); err != nil {
		return nil, fmt.Errorf("artifact %s: %w", digest, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// HasArtifact reports whether digest is stored.
func (s *Store) HasArtifact(ctx context.Context, digest string) (bool, error) {
	var n int64
	if err := s.db.queryRow(ctx, `SELECT count(*) FROM artifacts WHERE digest = $1`, digest).Scan(&n); err != nil {
		return false, fmt.Errorf("has artifact %s: %w", digest, err)
	}
	return n > 0, nil
}

// DropArtifacts deletes the artifacts of component's deployments older than
// its newest keep, except those a kept deployment of any component also
// uses (one of the newest keep of its component, live, rolling out, the
// canary, the one automatic rollback returns to, or one still placed on a
// worker: the deployments PruneDeployments spares) and those stored since
// storedBefore. The deployments stay, with their
// build logs; it returns how many artifacts went.
func (s *Store) DropArtifacts(ctx context.Context, component string, keep int, storedBefore time.Time) (int64, error) {
	if keep < 1 {
		return 0, fmt.Errorf("drop artifacts of %s: keep must be at least 1", component)
	}
	n, err := s.db.exec(ctx, `DELETE FROM artifacts
		WHERE created_at < $3
		AND digest IN (SELECT d.digest FROM deployments d WHERE d.component = $1
			AND d.id < (SELECT n.id FROM deployments n WHERE n.component = $1 ORDER BY n.id DESC LIMIT 1 OFFSET $2 - 1))
		AND NOT EXISTS (SELECT 1 FROM deployments k WHERE k.digest = artifacts.digest AND (
			k.id IN (SELECT c.live FROM components c WHERE c.name = k.component)
			OR k.id IN (SELECT c.target FROM components c WHERE c.name = k.component)
			OR k.id IN (SELECT r.canary FROM rollouts r WHERE r.component = k.component)
			OR k.id IN (SELECT r.previous FROM rollouts r WHERE r.component = k.component)
			OR EXISTS (SELECT 1 FROM placements p WHERE p.deployment = k.id)
			OR (SELECT count(*) FROM deployments n WHERE n.component = k.component AND n.id > k.id) < $2))`,
		component, keep, micros(storedBefore))
	if err != nil {
		return 0, fmt.Errorf("drop artifacts of %s: %w", component, err)
	}
	return n, nil
}

// TrimmedBuildLog is the build log a deployment keeps once it is older than
// its component's newest kept ones: its record stays (history), its log
// goes.
const TrimmedBuildLog = "(build log removed: this deployment is older than the newest ones kept for rollback, VELO_KEEP_DEPLOYMENTS)\n"

// TrimBuildLogs replaces the build logs of component's deployments older
// than its newest keep with TrimmedBuildLog, except the live one and the
// one rolling out. It returns how many it trimmed.
func (s *Store) TrimBuildLogs(ctx context.Context, component string, keep int) (int64, error) {
	if keep < 1 {
		return 0, fmt.Errorf("trim build logs of %s: keep must be at least 1", component)
	}
	n, err := s.db.exec(ctx, `UPDATE build_logs SET text = $3
		WHERE text <> $3
		AND deployment IN (SELECT d.id FROM deployments d WHERE d.component = $1
			AND d.id < (SELECT n.id FROM deployments n WHERE n.component = $1 ORDER BY n.id DESC LIMIT 1 OFFSET $2 - 1)
			AND d.id NOT IN (SELECT c.live FROM components c WHERE c.name = $1)
			AND d.id NOT IN (SELECT c.target FROM components c WHERE c.name = $1))`,
		component, keep, TrimmedBuildLog)
	if err != nil {
		return 0, fmt.Errorf("trim build logs of %s: %w", component, err)
	}
	return n, nil
}

// PruneDeployments deletes the records of component's deployments older
// than its newest keep (their build logs and per-deployment hits go with
// them), so that a component deployed thousands of times holds keep
// records, not thousands. It spares the live deployment, the one rolling
// out, the canary and the one automatic rollback would return to, any
// still placed on a worker, and any whose artifact is still stored and
// used by no newer deployment (DropArtifacts spares an artifact stored
// within its grace; its record goes once the artifact has, so that no
// artifact is left without a deployment naming it). It returns how many
// records went.
func (s *Store) PruneDeployments(ctx context.Context, component string, keep int) (int64, error) {
	if keep < 1 {
		return 0, fmt.Errorf("prune deployments of %s: keep must be at least 1", component)
	}
	n, err := s.db.exec(ctx, `DELETE FROM deployments
		WHERE component = $1
		AND id < (SELECT n.id FROM deployments n WHERE n.component = $1 ORDER BY n.id DESC LIMIT 1 OFFSET $2 - 1)
		AND id NOT IN (SELECT c.live FROM components c WHERE c.name = $1)
		AND id NOT IN (SELECT c.target FROM components c WHERE c.name = $1)
		AND id NOT IN (SELECT r.canary FROM rollouts r WHERE r.component = $1)
		AND id NOT IN (SELECT r.previous FROM rollouts r WHERE r.component = $1)
		AND NOT EXISTS (SELECT 1 FROM placements p WHERE p.deployment = deployments.id)
		AND (NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.digest = deployments.digest)
			OR EXISTS (SELECT 1 FROM deployments k WHERE k.digest = deployments.digest AND k.id > deployments.id))`,
		component, keep)
	if err != nil {
		return 0, fmt.Errorf("prune deployments of %s: %w", component, err)
	}
	return n, nil
}

// ReclaimSpace gives the space of deleted rows back. On SQLite the free
// pages go back to the file system (the database is in incremental
// auto-vacuum mode, see openSQLite) and the WAL is checkpointed and cut to
// nothing: SQLite otherwise leaves it at its size since the last
// automatic checkpoint (up to 1 000 pages, 4 MiB, more than a small
// database holds), so the data dir's size depended on when one last ran.
// Postgres's autovacuum makes dead rows' space reusable by itself, and
// there it does nothing.
func (s *Store) ReclaimSpace(ctx context.Context) error {
	if s.db.name() != EngineSQLite {
		return nil
	}
	if _, err := s.db.exec(ctx, `PRAGMA incremental_vacuum`); err != nil {
		return fmt.Errorf("reclaim space: %w", err)
	}
	// One row: busy (1 when another connection kept it from completing),
	// WAL frames, frames checkpointed.
	var busy, frames, done int64
	if err := s.db.queryRow(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &done); err != nil {
		return fmt.Errorf("reclaim space: checkpoint the WAL: %w", err)
	}
	if busy != 0 {
		return fmt.Errorf("reclaim space: checkpoint the WAL: busy (%d of %d frames written back)", done, frames)
	}
	return nil
}
