package store

import (
	"context"
	"errors"
	"fmt"
)

// PlaceDeployment claims deployment id if it is still pending and places
// it on workers, marking it preparing, in one transaction. On Postgres the
// claim is SELECT … FOR UPDATE SKIP LOCKED, so when two schedulers race for
// the same deployment exactly one places it; the other gets ok=false, as it
// does when the deployment is no longer pending.
func (s *Store) PlaceDeployment(ctx context.Context, id int64, workers []string) (ok bool, err error) {
	claim := `SELECT id FROM deployments WHERE id = $1 AND status = $2`
	if s.db.name() == EnginePostgres {
		claim += ` FOR UPDATE SKIP LOCKED`
	}
	err = s.tx(ctx, func(q querier) error {
		var got int64
		if err := q.queryRow(ctx, claim, id, StatusPending).Scan(&got); err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil
			}
			return err
		}
		t := micros(now())
		for _, w := range workers {
			if _, err := q.exec(ctx, `INSERT INTO placements (`+placementCols+`) VALUES ($1, $2, $3, '', $4)
				ON CONFLICT (deployment, worker) DO UPDATE
				SET state = excluded.state, error = excluded.error, updated_at = excluded.updated_at`,
				id, w, PlacementPending, t); err != nil {
				return fmt.Errorf("on %s: %w", w, err)
			}
		}
		if _, err := q.exec(ctx, `UPDATE deployments SET status = $2, error = '', updated_at = $3 WHERE id = $1`,
			id, StatusPreparing, t); err != nil {
			return err
		}
		ok = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("place deployment %d: %w", id, err)
	}
	return ok, nil
}

// PlacementCounts returns how many placements each worker holds (workers
// with none are absent): the scheduler's load, counted by the database
// rather than by reading every placement.
func (s *Store) PlacementCounts(ctx context.Context) (map[string]int, error) {
	rs, err := s.db.query(ctx, `SELECT worker, COUNT(*) FROM placements GROUP BY worker`)
	if err != nil {
		return nil, fmt.Errorf("placement counts: %w", err)
	}
	defer rs.Close()
	out := map[string]int{}
	for rs.Next() {
		var w string
		var n int
		if err := rs.Scan(&w, &n); err != nil {
			return nil, fmt.Errorf("placement counts: %w", err)
		}
		out[w] = n
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("placement counts: %w", err)
	}
	return out, nil
}

// AllPlacements returns every placement, ordered by deployment and worker:
// the scheduler counts them per worker to find the least loaded.
func (s *Store) AllPlacements(ctx context.Context) ([]Placement, error) {
	out, err := collectPlacements(s.db.query(ctx, `SELECT `+placementCols+` FROM placements ORDER BY deployment, worker`))
	if err != nil {
		return nil, fmt.Errorf("all placements: %w", err)
	}
	return out, nil
}
