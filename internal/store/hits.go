package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/hist"
)

// AddHits adds a batch of per-minute counts in one transaction: hits,
// errors and outbound calls add up, latency histograms merge bucket-wise,
// per component and, for entries with a Deployment, per deployment too
// (outbound calls per component only). Counts for components or
// deployments that no longer exist are dropped.
func (s *Store) AddHits(ctx context.Context, batch []Hits) error {
	rows := mergeHits(batch)
	if len(rows) == 0 {
		return nil
	}
	err := s.tx(ctx, func(q querier) error {
		if err := addDeploymentHits(ctx, q, batch); err != nil {
			return err
		}
		for _, h := range rows {
			minute := micros(h.Minute)
			// Make sure the row exists (unless the component is gone),
			// then add to it under its row lock. Rows are visited in
			// key order so concurrent batches cannot deadlock.
			if _, err := q.exec(ctx, `INSERT INTO hits (component, minute, hits, errors, latency)
				SELECT $1, CAST($2 AS BIGINT), 0, 0, ''
				WHERE EXISTS (SELECT 1 FROM components WHERE name = $1)
				ON CONFLICT (component, minute) DO NOTHING`, h.Component, minute); err != nil {
				return fmt.Errorf("%s: %w", h.Component, err)
			}
			var enc string
			err := q.queryRow(ctx, `UPDATE hits SET hits = hits + $3, errors = errors + $4,
				outbound = outbound + $5, outbound_errors = outbound_errors + $6
				WHERE component = $1 AND minute = $2 RETURNING latency`,
				h.Component, minute, h.Hits, h.Errors, h.Outbound, h.OutboundErrors).Scan(&enc)
			if errors.Is(err, ErrNotFound) {
				continue // component deleted
			}
			if err != nil {
				return fmt.Errorf("%s: %w", h.Component, err)
			}
			if len(h.Latency) == 0 {
				continue
			}
			merged, err := decodeCounts(enc)
			if err != nil {
				return fmt.Errorf("%s: %w", h.Component, err)
			}
			merged = hist.Merge(merged, h.Latency)
			if _, err := q.exec(ctx, `UPDATE hits SET latency = $3 WHERE component = $1 AND minute = $2`,
				h.Component, minute, encodeCounts(merged)); err != nil {
				return fmt.Errorf("%s: %w", h.Component, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add hits: %w", err)
	}
	return nil
}

// mergeHits folds batch entries with the same component and minute into one
// and sorts them by key.
func mergeHits(batch []Hits) []Hits {
	type key struct {
		component string
		minute    int64
	}
	idx := make(map[key]int, len(batch))
	var out []Hits
	for _, h := range batch {
		h.Minute = h.Minute.UTC().Truncate(time.Minute)
		k := key{h.Component, h.Minute.UnixMicro()}
		if i, ok := idx[k]; ok {
			out[i].Hits += h.Hits
			out[i].Errors += h.Errors
			out[i].Outbound += h.Outbound
			out[i].OutboundErrors += h.OutboundErrors
			out[i].Latency = hist.Merge(out[i].Latency, h.Latency)
			continue
		}
		idx[k] = len(out)
		h.Latency = hist.Merge(nil, h.Latency) // a copy: Merge writes into its first argument
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Hits) int {
		if c := strings.Compare(a.Component, b.Component); c != 0 {
			return c
		}
		return a.Minute.Compare(b.Minute)
	})
	return out
}

// Stats returns the component's per-minute counts from the minute holding
// since on, ordered by minute.
func (s *Store) Stats(ctx context.Context, component string, since time.Time) ([]Hits, error) {
	rs, err := s.db.query(ctx, `SELECT minute, hits, errors, latency, outbound, outbound_errors FROM hits
		WHERE component = $1 AND minute >= $2 ORDER BY minute`,
		component, micros(since.UTC().Truncate(time.Minute)))
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", component, err)
	}
	defer rs.Close()
	var out []Hits
	for rs.Next() {
		h := Hits{Component: component}
		var minute int64
		var enc string
		if err := rs.Scan(&minute, &h.Hits, &h.Errors, &enc, &h.Outbound, &h.OutboundErrors); err != nil {
			return nil, fmt.Errorf("stats of %s: %w", component, err)
		}
		h.Minute = fromMicros(minute)
		if h.Latency, err = decodeCounts(enc); err != nil {
			return nil, fmt.Errorf("stats of %s: %w", component, err)
		}
		out = append(out, h)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("stats of %s: %w", component, err)
	}
	return out, nil
}

// encodeCounts writes the non-zero buckets as "index:count" pairs separated
// by spaces: most of a histogram's buckets are empty.
func encodeCounts(counts []uint64) string {
	var b strings.Builder
	for i, n := range counts {
		if n == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(i))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(n, 10))
	}
	return b.String()
}

// decodeCounts reads encodeCounts' format into hist.Buckets counts (more if
// an index calls for it); "" is nil.
func decodeCounts(s string) ([]uint64, error) {
	if s == "" {
		return nil, nil
	}
	counts := make([]uint64, hist.Buckets)
	for _, f := range strings.Fields(s) {
		is, ns, ok := strings.Cut(f, ":")
		i, err1 := strconv.Atoi(is)
		n, err2 := strconv.ParseUint(ns, 10, 64)
		if !ok || err1 != nil || err2 != nil || i < 0 || i > 1<<16 {
			return nil, fmt.Errorf("bad latency histogram %q", f)
		}
		if i >= len(counts) {
			counts = append(counts, make([]uint64, i+1-len(counts))...)
		}
		counts[i] += n
	}
	return counts, nil
}
