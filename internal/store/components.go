package store

import (
	"context"
	"fmt"
)

const componentCols = `name, runtime, paused, live, target, repo, created_at, updated_at`

func scanComponent(r row) (Component, error) {
	var c Component
	var created, updated int64
	err := r.Scan(&c.Name, &c.Runtime, &c.Paused, &c.Live, &c.Target, &c.Repo, &created, &updated)
	c.CreatedAt, c.UpdatedAt = fromMicros(created), fromMicros(updated)
	return c, err
}

// CreateComponent records a new component; ErrConflict if the name is
// taken. CreatedAt and UpdatedAt are set to now when zero.
func (s *Store) CreateComponent(ctx context.Context, c Component) error {
	t := now()
	if c.CreatedAt.IsZero() {
		c.CreatedAt = t
	}
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = t
	}
	_, err := s.db.exec(ctx, `INSERT INTO components (`+componentCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		c.Name, c.Runtime, c.Paused, c.Live, c.Target, c.Repo, micros(c.CreatedAt), micros(c.UpdatedAt))
	if err != nil {
		return fmt.Errorf("create component %s: %w", c.Name, err)
	}
	return nil
}

// Component returns the component called name, or ErrNotFound.
func (s *Store) Component(ctx context.Context, name string) (Component, error) {
	c, err := scanComponent(s.db.queryRow(ctx, `SELECT `+componentCols+` FROM components WHERE name = $1`, name))
	if err != nil {
		return Component{}, fmt.Errorf("component %s: %w", name, err)
	}
	return c, nil
}

// Components returns every component ordered by name.
func (s *Store) Components(ctx context.Context) ([]Component, error) {
	rs, err := s.db.query(ctx, `SELECT `+componentCols+` FROM components ORDER BY name`)
	out, err := collect(rs, err, scanComponent)
	if err != nil {
		return nil, fmt.Errorf("components: %w", err)
	}
	return out, nil
}

// SetPaused pauses or resumes a component; ErrNotFound if there is none.
func (s *Store) SetPaused(ctx context.Context, name string, paused bool) error {
	err := affected(s.db.exec(ctx, `UPDATE components SET paused = $2, updated_at = $3 WHERE name = $1`,
		name, paused, micros(now())))
	if err != nil {
		return fmt.Errorf("set paused %s: %w", name, err)
	}
	return nil
}

// SetTarget makes deployment the one being rolled out for the component,
// and the component's runtime that of the deployment. ErrNotFound unless
// the deployment exists and belongs to the component. Deployment 0 clears
// the target (the first deployment of a component failed).
func (s *Store) SetTarget(ctx context.Context, name string, deployment int64) error {
	if deployment == 0 {
		err := affected(s.db.exec(ctx, `UPDATE components SET target = 0, updated_at = $2 WHERE name = $1`,
			name, micros(now())))
		if err != nil {
			return fmt.Errorf("clear target of %s: %w", name, err)
		}
		return nil
	}
	err := affected(s.db.exec(ctx, `UPDATE components
		SET target = d.id, runtime = d.runtime, updated_at = $3
		FROM deployments d
		WHERE components.name = $1 AND d.id = $2 AND d.component = components.name`,
		name, deployment, micros(now())))
	if err != nil {
		return fmt.Errorf("set target %s to %d: %w", name, deployment, err)
	}
	return nil
}

// Promote makes deployment live and ready, in one transaction: no reader
// sees it live while its status still says it is being prepared. Target
// follows it only when the component was settled (Target == Live, as for a
// rollback) or Target already is the deployment; a newer rollout in
// progress keeps its Target. ErrNotFound unless the deployment exists and
// belongs to the component. The deployment live until then is recorded as
// the component's Rollout.Previous.
func (s *Store) Promote(ctx context.Context, name string, deployment int64) error {
	err := s.tx(ctx, func(q querier) error { return promoteReady(ctx, q, name, deployment) })
	if err != nil {
		return fmt.Errorf("promote %s to %d: %w", name, deployment, err)
	}
	return nil
}

// PromoteVersioned is Promote that bumps the route version (see
// BumpRouteVersion) in the same transaction and returns it: whoever reads
// that version or a later one reads the promotion too. So a router that
// reports it serves the promotion, and a deploymgr that did not promote
// can tell that from the routers' reports and the current version alone.
func (s *Store) PromoteVersioned(ctx context.Context, name string, deployment int64) (int64, error) {
	var v int64
	err := s.tx(ctx, func(q querier) error {
		if err := promoteReady(ctx, q, name, deployment); err != nil {
			return err
		}
		return q.queryRow(ctx, `UPDATE route_version SET version = version + 1 WHERE id = 1 RETURNING version`).Scan(&v)
	})
	if err != nil {
		return 0, fmt.Errorf("promote %s to %d: %w", name, deployment, err)
	}
	return v, nil
}

// promoteReady is Promote's transaction.
func promoteReady(ctx context.Context, q querier, name string, deployment int64) error {
	var live int64
	if err := q.queryRow(ctx, `SELECT live FROM components WHERE name = $1`, name).Scan(&live); err != nil {
		return err
	}
	if err := promote(ctx, q, name, deployment); err != nil {
		return err
	}
	if err := recordPromotion(ctx, q, name, deployment, live); err != nil {
		return err
	}
	_, err := q.exec(ctx, `UPDATE deployments SET status = $2, error = '', updated_at = $3 WHERE id = $1`,
		deployment, StatusReady, micros(now()))
	return err
}

func promote(ctx context.Context, q querier, name string, deployment int64) error {
	// Right-hand sides see the row as it was before the update.
	return affected(q.exec(ctx, `UPDATE components
		SET live = d.id,
		    target = CASE WHEN components.target = components.live OR components.target = d.id
		                  THEN d.id ELSE components.target END,
		    runtime = CASE WHEN components.target = components.live OR components.target = d.id
		                  THEN d.runtime ELSE components.runtime END,
		    updated_at = $3
		FROM deployments d
		WHERE components.name = $1 AND d.id = $2 AND d.component = components.name`,
		name, deployment, micros(now())))
}

// DeleteComponent deletes the component with its deployments, placements,
// build logs, logs, hits and queued calls, and the artifacts no deployment uses any more.
// ErrNotFound if there is no such component.
func (s *Store) DeleteComponent(ctx context.Context, name string) error {
	err := s.tx(ctx, func(q querier) error {
		rs, err := q.query(ctx, `SELECT DISTINCT digest FROM deployments WHERE component = $1`, name)
		if err != nil {
			return err
		}
		var digests []string
		for rs.Next() {
			var d string
			if err := rs.Scan(&d); err != nil {
				rs.Close()
				return err
			}
			digests = append(digests, d)
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return err
		}
		// Foreign keys cascade to everything of the component.
		if err := affected(q.exec(ctx, `DELETE FROM components WHERE name = $1`, name)); err != nil {
			return err
		}
		// Its queued calls go with it (River's table has no key to it).
		if _, err := q.exec(ctx, `DELETE FROM river_job WHERE queue = $1`, EventQueue(name)); err != nil {
			return fmt.Errorf("queued calls: %w", err)
		}
		for _, d := range digests {
			if _, err := q.exec(ctx, `DELETE FROM artifacts WHERE digest = $1
				AND NOT EXISTS (SELECT 1 FROM deployments WHERE digest = $1)`, d); err != nil {
				return fmt.Errorf("artifact %s: %w", d, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete component %s: %w", name, err)
	}
	return nil
}
