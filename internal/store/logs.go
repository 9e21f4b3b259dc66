package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// LogsPerComponent is how many log lines the store keeps per component;
// AppendLogs drops the oldest beyond it.
const LogsPerComponent = 10000

// AppendLogs stores lines in one transaction, assigning their IDs, and
// trims each component touched to its newest LogsPerComponent lines. Lines
// of components that no longer exist are dropped.
//
// Appends for one component are serialized on its row, so IDs become visible
// in increasing order and a reader following with Logs(afterID) misses none.
func (s *Store) AppendLogs(ctx context.Context, lines []LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	byComponent := make(map[string][]LogLine)
	for _, l := range lines {
		byComponent[l.Component] = append(byComponent[l.Component], l)
	}
	names := make([]string, 0, len(byComponent))
	for name := range byComponent {
		names = append(names, name)
	}
	slices.Sort(names) // lock rows in one order: no deadlocks between batches
	err := s.tx(ctx, func(q querier) error {
		for _, name := range names {
			// A no-op update: locks the component row (Postgres) and
			// tells whether the component still exists.
			n, err := q.exec(ctx, `UPDATE components SET updated_at = updated_at WHERE name = $1`, name)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if n == 0 {
				continue
			}
			for _, l := range byComponent[name] {
				t := l.Time
				if t.IsZero() {
					t = now()
				}
				if _, err := q.exec(ctx, `INSERT INTO logs (component, deployment, at, stream, line)
					VALUES ($1, $2, $3, $4, $5)`,
					name, l.Deployment, micros(t), l.Stream, cleanText(l.Line)); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
			// The newest line past the limit, found by walking at most
			// LogsPerComponent index entries backwards.
			var cut int64
			err = q.queryRow(ctx, `SELECT id FROM logs WHERE component = $1
				ORDER BY id DESC LIMIT 1 OFFSET $2`, name, int64(LogsPerComponent)).Scan(&cut)
			if err == nil {
				_, err = q.exec(ctx, `DELETE FROM logs WHERE component = $1 AND id <= $2`, name, cut)
			} else if errors.Is(err, ErrNotFound) {
				err = nil
			}
			if err != nil {
				return fmt.Errorf("trim logs of %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append logs: %w", err)
	}
	return nil
}

const logCols = `id, component, deployment, at, stream, line`

func collectLogs(rs rows, err error) ([]LogLine, error) {
	return collect(rs, err, func(r row) (LogLine, error) {
		var l LogLine
		var at int64
		err := r.Scan(&l.ID, &l.Component, &l.Deployment, &at, &l.Stream, &l.Line)
		l.Time = fromMicros(at)
		return l, err
	})
}

// Logs returns up to limit lines of the component with IDs above afterID,
// ascending by ID (all of them when limit <= 0).
func (s *Store) Logs(ctx context.Context, component string, afterID int64, limit int) ([]LogLine, error) {
	lim := int64(limit)
	if lim <= 0 {
		lim = 1 << 62
	}
	out, err := collectLogs(s.db.query(ctx, `SELECT `+logCols+` FROM logs
		WHERE component = $1 AND id > $2 ORDER BY id LIMIT $3`, component, afterID, lim))
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", component, err)
	}
	return out, nil
}

// TailLogs returns the component's last n lines, ascending by ID.
func (s *Store) TailLogs(ctx context.Context, component string, n int) ([]LogLine, error) {
	if n <= 0 {
		return nil, nil
	}
	out, err := collectLogs(s.db.query(ctx, `SELECT `+logCols+` FROM logs
		WHERE component = $1 ORDER BY id DESC LIMIT $2`, component, int64(n)))
	if err != nil {
		return nil, fmt.Errorf("tail logs of %s: %w", component, err)
	}
	slices.Reverse(out)
	return out, nil
}
