package store

import (
	"context"
	"fmt"
)

// Routes returns what the router needs for every component, ordered by
// name: paused, live deployment with its runtime and manifest, and the
// workers holding a ready placement of it and those still preparing it
// (pending), each ordered by name; and its canary with the workers
// holding a ready placement of it, if it has one.
//
// It is one statement, so it reads one snapshot on either engine: read in
// two, a promotion landing between them paired the old live deployment
// with no workers, and the router answered 503 for a component that was
// serving.
func (s *Store) Routes(ctx context.Context) ([]Route, error) {
	out, err := s.routes(ctx, "")
	if err != nil {
		return nil, err
	}
	domains, err := allDomains(ctx, s.db)
	if err != nil {
		return nil, fmt.Errorf("routes: domains: %w", err)
	}
	for i := range out {
		out[i].Domains = domains[out[i].Component]
	}
	return out, nil
}

// RoutesOf returns what Routes returns for component alone, in the same
// single snapshot, and ok false when there is no such component (deleted).
// A router refreshing one component after a note naming it reads this
// rather than the whole table.
func (s *Store) RoutesOf(ctx context.Context, component string) (r Route, ok bool, err error) {
	if component == "" {
		return Route{}, false, fmt.Errorf("routes of a component: no component named")
	}
	out, err := s.routes(ctx, component)
	if err != nil || len(out) == 0 {
		return Route{}, false, err
	}
	out[0].Domains, err = domainsOf(ctx, s.db, component)
	if err != nil {
		return Route{}, false, fmt.Errorf("routes of %s: domains: %w", component, err)
	}
	return out[0], true, nil
}

// routes reads the routes of every component, or of only when not "".
func (s *Store) routes(ctx context.Context, only string) ([]Route, error) {
	// One component is read by its name (the primary key), not by a
	// condition that also matches every name: SQLite would scan them all.
	where, args := "", []any{PlacementReady, PlacementPending}
	if only != "" {
		where, args = "WHERE c.name = $3", append(args, only)
	}
	rs, err := s.db.query(ctx, `SELECT * FROM (
		SELECT c.name AS component, c.repo AS repo, 0 AS weight, c.paused, c.live AS deployment, COALESCE(d.runtime, '') AS runtime,
			COALESCE(d.manifest, '') AS manifest, COALESCE(w.name, '') AS worker, COALESCE(w.addr, '') AS addr,
			COALESCE(w.started_at, 0) AS started_at, COALESCE(w.seen_at, 0) AS seen_at, COALESCE(p.state, '') AS state
		FROM components c
		LEFT JOIN deployments d ON d.id = c.live AND d.component = c.name
		LEFT JOIN placements p ON p.deployment = c.live AND p.state IN ($1, $2)
		LEFT JOIN workers w ON w.name = p.worker
		`+where+`
		UNION ALL
		SELECT c.name, c.repo, r.weight, c.paused, r.canary, d.runtime, d.manifest, w.name, w.addr, w.started_at, w.seen_at, p.state
		FROM components c
		JOIN rollouts r ON r.component = c.name AND r.canary <> 0 AND r.weight > 0 AND r.canary <> c.live
		JOIN deployments d ON d.id = r.canary AND d.component = c.name
		JOIN placements p ON p.deployment = r.canary AND p.state = $1
		JOIN workers w ON w.name = p.worker
		`+where+`
	) routes ORDER BY component, weight, worker`, args...)
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
		var weight int
		if err := rs.Scan(&r.Component, &r.Repo, &weight, &r.Paused, &r.Deployment, &r.Runtime, &manifest,
			&w.Name, &w.Addr, &started, &seen, &state); err != nil {
			return nil, fmt.Errorf("routes: %w", err)
		}
		if weight > 0 {
			// A canary's rows follow its component's (ordered by weight).
			last := &out[len(out)-1]
			if last.Canary == nil {
				last.Canary = &Canary{Deployment: r.Deployment, Weight: weight, Runtime: r.Runtime, Manifest: []byte(manifest)}
			}
			w.StartedAt, w.SeenAt = fromMicros(started), fromMicros(seen)
			last.Canary.Workers = append(last.Canary.Workers, w)
			continue
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
	return out, nil
}
