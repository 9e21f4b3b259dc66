package store

import (
	"context"
	"fmt"
	"time"
)

// RouterState is what a router last reported: the route version of the
// table it serves (Applied) and when it was last seen (its heartbeat).
type RouterState struct {
	ID        string
	Addr      string // where it listens, for people reading the output
	StartedAt time.Time
	SeenAt    time.Time
	Applied   int64
}

// BumpRouteVersion counts one more change of the routes and returns the
// new version. The deploymgr bumps it after a change is committed and
// before it notifies the routers, so a router that read version v before
// reading the routes serves every change up to v.
func (s *Store) BumpRouteVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.queryRow(ctx, `UPDATE route_version SET version = version + 1 WHERE id = 1 RETURNING version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("bump route version: %w", mapErr(err))
	}
	return v, nil
}

// RouteVersion returns the current route version (see BumpRouteVersion).
func (s *Store) RouteVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.queryRow(ctx, `SELECT version FROM route_version WHERE id = 1`).Scan(&v); err != nil {
		return 0, fmt.Errorf("route version: %w", mapErr(err))
	}
	return v, nil
}

// ReportRouter records router r's heartbeat and applied version. Applied
// never goes back: a late report of an older table does not undo a newer
// one. StartedAt and SeenAt default to now.
func (s *Store) ReportRouter(ctx context.Context, r RouterState) error {
	t := now()
	if r.StartedAt.IsZero() {
		r.StartedAt = t
	}
	if r.SeenAt.IsZero() {
		r.SeenAt = t
	}
	_, err := s.db.exec(ctx, `INSERT INTO routers (id, addr, started_at, seen_at, applied) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, seen_at = excluded.seen_at,
			applied = CASE WHEN excluded.applied > routers.applied THEN excluded.applied ELSE routers.applied END`,
		r.ID, r.Addr, micros(r.StartedAt), micros(r.SeenAt), r.Applied)
	if err != nil {
		return fmt.Errorf("report router %s: %w", r.ID, err)
	}
	return nil
}

// Routers returns every router that reported, ordered by id.
func (s *Store) Routers(ctx context.Context) ([]RouterState, error) {
	rs, err := s.db.query(ctx, `SELECT id, addr, started_at, seen_at, applied FROM routers ORDER BY id`)
	out, err := collect(rs, err, func(rw row) (RouterState, error) {
		var r RouterState
		var started, seen int64
		err := rw.Scan(&r.ID, &r.Addr, &started, &seen, &r.Applied)
		r.StartedAt, r.SeenAt = fromMicros(started), fromMicros(seen)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("routers: %w", err)
	}
	return out, nil
}

// DeleteRouter forgets a router (it stopped); ErrNotFound if it never
// reported.
func (s *Store) DeleteRouter(ctx context.Context, id string) error {
	if err := affected(s.db.exec(ctx, `DELETE FROM routers WHERE id = $1`, id)); err != nil {
		return fmt.Errorf("delete router %s: %w", id, err)
	}
	return nil
}

// PruneRouters forgets the routers not seen since before: killed ones
// that could not say goodbye.
func (s *Store) PruneRouters(ctx context.Context, before time.Time) error {
	if _, err := s.db.exec(ctx, `DELETE FROM routers WHERE seen_at < $1`, micros(before)); err != nil {
		return fmt.Errorf("prune routers: %w", err)
	}
	return nil
}
