package store

import (
	"context"
	"fmt"
)

// Routes returns what the router needs for every component, ordered by
// name: paused, live deployment with its runtime and manifest, and the
// workers holding a ready placement of it and those still preparing it
// (pending), each ordered by name.
//
// It is one statement, so it reads one snapshot on either engine: read in
// two, a promotion landing between them paired the old live deployment
// with no workers, and the router answered 503 for a component that was
// serving.
func (s *Store) Routes(ctx context.Context) ([]Route, error) {
	rs, err := s.db.query(ctx, `SELECT c.name, c.paused, c.live, COALESCE(d.runtime, ''), COALESCE(d.manifest, ''),
			COALESCE(w.name, ''), COALESCE(w.addr, ''), COALESCE(w.started_at, 0), COALESCE(w.seen_at, 0), COALESCE(p.state, '')
		FROM components c
		LEFT JOIN deployments d ON d.id = c.live AND d.component = c.name
		LEFT JOIN placements p ON p.deployment = c.live AND p.state IN ($1, $2)
		LEFT JOIN workers w ON w.name = p.worker
		ORDER BY c.name, w.name`, PlacementReady, PlacementPending)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	defer rs.Close()
	var out []Route
	for rs.Next() {
		var r Route
		var manifest string
		var w Worker
		var started, seen int64
		var state string
		if err := rs.Scan(&r.Component, &r.Paused, &r.Deployment, &r.Runtime, &manifest,
			&w.Name, &w.Addr, &started, &seen, &state); err != nil {
			return nil, fmt.Errorf("routes: %w", err)
		}
		if n := len(out); n == 0 || out[n-1].Component != r.Component {
			if manifest != "" {
				r.Manifest = []byte(manifest)
			}
			out = append(out, r)
		}
		if w.Name != "" {
			w.StartedAt, w.SeenAt = fromMicros(started), fromMicros(seen)
			last := &out[len(out)-1]
			if state == PlacementReady {
				last.Workers = append(last.Workers, w)
			} else {
				last.Preparing = append(last.Preparing, w)
			}
		}
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	rs.Close()
	domains, err := allDomains(ctx, s.db)
	if err != nil {
		return nil, fmt.Errorf("routes: domains: %w", err)
	}
	for i := range out {
		out[i].Domains = domains[out[i].Component]
	}
	return out, nil
}
