package store

import (
	"context"
	"fmt"
	"time"
)

// UpsertWorker records a worker or updates its address and times.
// StartedAt and SeenAt default to now.
func (s *Store) UpsertWorker(ctx context.Context, w Worker) error {
	t := now()
	if w.StartedAt.IsZero() {
		w.StartedAt = t
	}
	if w.SeenAt.IsZero() {
		w.SeenAt = t
	}
	_, err := s.db.exec(ctx, `INSERT INTO workers (name, addr, started_at, seen_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (name) DO UPDATE SET addr = excluded.addr, started_at = excluded.started_at, seen_at = excluded.seen_at`,
		w.Name, w.Addr, micros(w.StartedAt), micros(w.SeenAt))
	if err != nil {
		return fmt.Errorf("upsert worker %s: %w", w.Name, err)
	}
	return nil
}

// Heartbeat records that the worker was seen at at; ErrNotFound if it is
// not registered.
func (s *Store) Heartbeat(ctx context.Context, name string, at time.Time) error {
	err := affected(s.db.exec(ctx, `UPDATE workers SET seen_at = $2 WHERE name = $1`, name, micros(at)))
	if err != nil {
		return fmt.Errorf("heartbeat %s: %w", name, err)
	}
	return nil
}

// Workers returns every registered worker ordered by name.
func (s *Store) Workers(ctx context.Context) ([]Worker, error) {
	rs, err := s.db.query(ctx, `SELECT name, addr, started_at, seen_at FROM workers ORDER BY name`)
	out, err := collect(rs, err, func(r row) (Worker, error) {
		var w Worker
		var started, seen int64
		err := r.Scan(&w.Name, &w.Addr, &started, &seen)
		w.StartedAt, w.SeenAt = fromMicros(started), fromMicros(seen)
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("workers: %w", err)
	}
	return out, nil
}

// DeleteWorker forgets a worker and its placements; ErrNotFound if it is
// not registered.
func (s *Store) DeleteWorker(ctx context.Context, name string) error {
	err := affected(s.db.exec(ctx, `DELETE FROM workers WHERE name = $1`, name))
	if err != nil {
		return fmt.Errorf("delete worker %s: %w", name, err)
	}
	return nil
}

const placementCols = `deployment, worker, state, error, updated_at`

func collectPlacements(rs rows, err error) ([]Placement, error) {
	return collect(rs, err, func(r row) (Placement, error) {
		var p Placement
		var updated int64
		err := r.Scan(&p.Deployment, &p.Worker, &p.State, &p.Error, &updated)
		p.UpdatedAt = fromMicros(updated)
		return p, err
	})
}

// PutPlacement records or updates the placement of p.Deployment on
// p.Worker; UpdatedAt is set to now. ErrNotFound if the deployment or the
// worker does not exist.
func (s *Store) PutPlacement(ctx context.Context, p Placement) error {
	if p.State == "" {
		p.State = PlacementPending
	}
	_, err := s.db.exec(ctx, `INSERT INTO placements (`+placementCols+`) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (deployment, worker) DO UPDATE
		SET state = excluded.state, error = excluded.error, updated_at = excluded.updated_at`,
		p.Deployment, p.Worker, p.State, cleanText(p.Error), micros(now()))
	if err != nil {
		return fmt.Errorf("put placement of %d on %s: %w", p.Deployment, p.Worker, err)
	}
	return nil
}

// Placements returns the placements of a deployment ordered by worker.
func (s *Store) Placements(ctx context.Context, deployment int64) ([]Placement, error) {
	out, err := collectPlacements(s.db.query(ctx, `SELECT `+placementCols+` FROM placements
		WHERE deployment = $1 ORDER BY worker`, deployment))
	if err != nil {
		return nil, fmt.Errorf("placements of %d: %w", deployment, err)
	}
	return out, nil
}

// WorkerPlacements returns the placements on a worker ordered by
// deployment.
func (s *Store) WorkerPlacements(ctx context.Context, worker string) ([]Placement, error) {
	out, err := collectPlacements(s.db.query(ctx, `SELECT `+placementCols+` FROM placements
		WHERE worker = $1 ORDER BY deployment`, worker))
	if err != nil {
		return nil, fmt.Errorf("placements on %s: %w", worker, err)
	}
	return out, nil
}

// ComponentPlacements returns the placements of every deployment of a
// component, ordered by deployment and worker.
func (s *Store) ComponentPlacements(ctx context.Context, component string) ([]Placement, error) {
	out, err := collectPlacements(s.db.query(ctx, `SELECT p.deployment, p.worker, p.state, p.error, p.updated_at
		FROM placements p JOIN deployments d ON d.id = p.deployment
		WHERE d.component = $1 ORDER BY p.deployment, p.worker`, component))
	if err != nil {
		return nil, fmt.Errorf("placements of %s: %w", component, err)
	}
	return out, nil
}

// DeletePlacement removes a placement; ErrNotFound if there is none.
func (s *Store) DeletePlacement(ctx context.Context, deployment int64, worker string) error {
	err := affected(s.db.exec(ctx, `DELETE FROM placements WHERE deployment = $1 AND worker = $2`, deployment, worker))
	if err != nil {
		return fmt.Errorf("delete placement of %d on %s: %w", deployment, worker, err)
	}
	return nil
}

// ResetPlacements sets every placement on the worker back to pending with
// no error: a starting worker has prepared nothing yet.
func (s *Store) ResetPlacements(ctx context.Context, worker string) error {
	_, err := s.db.exec(ctx, `UPDATE placements SET state = $2, error = '', updated_at = $3 WHERE worker = $1`,
		worker, PlacementPending, micros(now()))
	if err != nil {
		return fmt.Errorf("reset placements on %s: %w", worker, err)
	}
	return nil
}
