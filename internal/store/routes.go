package store

import (
	"context"
	"fmt"
)

// Routes returns what the router needs for every component, ordered by
// name: paused, live deployment with its runtime and manifest, and the
// workers holding a ready placement of it, ordered by name. Two queries,
// whatever the number of components.
func (s *Store) Routes(ctx context.Context) ([]Route, error) {
	var out []Route
	q := s.db
	err := func() error {
		rs, err := q.query(ctx, `SELECT c.name, c.paused, c.live, COALESCE(d.runtime, ''), COALESCE(d.manifest, '')
			FROM components c LEFT JOIN deployments d ON d.id = c.live AND d.component = c.name
			ORDER BY c.name`)
		if err != nil {
			return err
		}
		byDeployment := make(map[int64]int) // live deployment → index in out
		for rs.Next() {
			var r Route
			var manifest string
			if err := rs.Scan(&r.Component, &r.Paused, &r.Deployment, &r.Runtime, &manifest); err != nil {
				rs.Close()
				return err
			}
			if manifest != "" {
				r.Manifest = []byte(manifest)
			}
			if r.Deployment != 0 {
				byDeployment[r.Deployment] = len(out)
			}
			out = append(out, r)
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return err
		}
		rs, err = q.query(ctx, `SELECT p.deployment, w.name, w.addr, w.started_at, w.seen_at
			FROM placements p
			JOIN components c ON c.live = p.deployment
			JOIN workers w ON w.name = p.worker
			WHERE p.state = $1
			ORDER BY w.name`, PlacementReady)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var dep, started, seen int64
			var w Worker
			if err := rs.Scan(&dep, &w.Name, &w.Addr, &started, &seen); err != nil {
				return err
			}
			w.StartedAt, w.SeenAt = fromMicros(started), fromMicros(seen)
			if i, ok := byDeployment[dep]; ok {
				out[i].Workers = append(out[i].Workers, w)
			}
		}
		return rs.Err()
	}()
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	return out, nil
}
