package store

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"
)

// BuildLogCap is the most build log text kept per deployment; older text is
// dropped first.
const BuildLogCap = 1 << 20

// buildLogMarker starts a build log whose beginning was dropped.
const buildLogMarker = "[velo: earlier build output dropped]\n"

const deploymentCols = `id, component, digest, runtime, manifest, source, commit_sha, message, author, status, error, created_at, updated_at, commit_time`

func scanDeployment(r row) (Deployment, error) {
	var d Deployment
	var manifest string
	var created, updated, commitTime int64
	err := r.Scan(&d.ID, &d.Component, &d.Digest, &d.Runtime, &manifest, &d.Source, &d.Commit,
		&d.Message, &d.Author, &d.Status, &d.Error, &created, &updated, &commitTime)
	d.CommitTime = fromMicros(commitTime)
	if manifest != "" {
		d.Manifest = []byte(manifest)
	}
	d.CreatedAt, d.UpdatedAt = fromMicros(created), fromMicros(updated)
	return d, err
}

func collectDeployments(rs rows, err error) ([]Deployment, error) {
	return collect(rs, err, scanDeployment)
}

// CreateDeployment records d with a new, increasing ID and CreatedAt and
// UpdatedAt set to now; Status defaults to pending. ErrNotFound if the
// component does not exist.
func (s *Store) CreateDeployment(ctx context.Context, d Deployment) (Deployment, error) {
	t := now()
	d.CreatedAt, d.UpdatedAt = t, t
	if d.Status == "" {
		d.Status = StatusPending
	}
	err := s.db.queryRow(ctx, `INSERT INTO deployments
		(component, digest, runtime, manifest, source, commit_sha, message, author, status, error, created_at, updated_at, commit_time)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)
		RETURNING id`,
		d.Component, d.Digest, d.Runtime, string(d.Manifest), d.Source, d.Commit,
		cleanText(d.Message), cleanText(d.Author), d.Status, cleanText(d.Error), micros(t), micros(d.CommitTime)).Scan(&d.ID)
	if err != nil {
		return Deployment{}, fmt.Errorf("create deployment of %s: %w", d.Component, err)
	}
	return d, nil
}

// Deployment returns the deployment with id, or ErrNotFound.
func (s *Store) Deployment(ctx context.Context, id int64) (Deployment, error) {
	d, err := scanDeployment(s.db.queryRow(ctx, `SELECT `+deploymentCols+` FROM deployments WHERE id = $1`, id))
	if err != nil {
		return Deployment{}, fmt.Errorf("deployment %d: %w", id, err)
	}
	return d, nil
}

// Deployments returns the component's latest deployments, newest first, at
// most limit of them (all when limit <= 0).
func (s *Store) Deployments(ctx context.Context, component string, limit int) ([]Deployment, error) {
	lim := int64(limit)
	if lim <= 0 {
		lim = 1 << 62
	}
	out, err := collectDeployments(s.db.query(ctx, `SELECT `+deploymentCols+` FROM deployments
		WHERE component = $1 ORDER BY id DESC LIMIT $2`, component, lim))
	if err != nil {
		return nil, fmt.Errorf("deployments of %s: %w", component, err)
	}
	return out, nil
}

// DeploymentsByStatus returns the deployments in any of statuses, oldest
// first: the work to resume after a restart.
func (s *Store) DeploymentsByStatus(ctx context.Context, statuses ...string) ([]Deployment, error) {
	if len(statuses) == 0 {
		return nil, nil
	}
	marks := make([]string, len(statuses))
	args := make([]any, len(statuses))
	for i, st := range statuses {
		marks[i] = fmt.Sprintf("$%d", i+1)
		args[i] = st
	}
	out, err := collectDeployments(s.db.query(ctx, `SELECT `+deploymentCols+` FROM deployments
		WHERE status IN (`+strings.Join(marks, ", ")+`) ORDER BY id`, args...))
	if err != nil {
		return nil, fmt.Errorf("deployments by status: %w", err)
	}
	return out, nil
}

// SetDeploymentStatus sets a deployment's status and error message;
// ErrNotFound if there is no such deployment.
func (s *Store) SetDeploymentStatus(ctx context.Context, id int64, status, errMsg string) error {
	err := affected(s.db.exec(ctx, `UPDATE deployments SET status = $2, error = $3, updated_at = $4 WHERE id = $1`,
		id, status, cleanText(errMsg), micros(now())))
	if err != nil {
		return fmt.Errorf("set status of deployment %d: %w", id, err)
	}
	return nil
}

// AppendBuildLog appends text to the deployment's build log. When the log
// grows past BuildLogCap its oldest text is dropped (whole lines, leaving
// room to grow) behind a marker line. ErrNotFound if there is no such
// deployment.
func (s *Store) AppendBuildLog(ctx context.Context, id int64, text string) error {
	if text == "" {
		return nil
	}
	text = cleanText(text)
	err := s.tx(ctx, func(q querier) error {
		// The upsert locks the row on Postgres, so the trim below
		// cannot race another append.
		var size int64
		err := q.queryRow(ctx, `INSERT INTO build_logs (deployment, text) VALUES ($1, $2)
			ON CONFLICT (deployment) DO UPDATE SET text = build_logs.text || excluded.text
			RETURNING octet_length(text)`, id, text).Scan(&size)
		if err != nil {
			return err
		}
		if size <= BuildLogCap {
			return nil
		}
		var all string
		if err := q.queryRow(ctx, `SELECT text FROM build_logs WHERE deployment = $1`, id).Scan(&all); err != nil {
			return err
		}
		_, err = q.exec(ctx, `UPDATE build_logs SET text = $2 WHERE deployment = $1`, id, trimLog(all))
		return err
	})
	if err != nil {
		return fmt.Errorf("append build log of deployment %d: %w", id, err)
	}
	return nil
}

// trimLog keeps the last three quarters of BuildLogCap of s, starting at a
// line boundary, behind buildLogMarker. Trimming below the cap means a log
// that keeps growing is rewritten once per quarter megabyte, not on every
// append.
func trimLog(s string) string {
	keep := BuildLogCap*3/4 - len(buildLogMarker)
	if len(s) <= keep {
		return s
	}
	tail := s[len(s)-keep:]
	if i := strings.IndexByte(tail, '\n'); i >= 0 && i < len(tail)-1 {
		tail = tail[i+1:]
	} else {
		for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
			tail = tail[1:]
		}
	}
	return buildLogMarker + tail
}

// BuildLog returns the deployment's build log ("" when none was written);
// ErrNotFound if there is no such deployment.
func (s *Store) BuildLog(ctx context.Context, id int64) (string, error) {
	var text string
	err := s.db.queryRow(ctx, `SELECT COALESCE((SELECT text FROM build_logs WHERE deployment = d.id), '')
		FROM deployments d WHERE d.id = $1`, id).Scan(&text)
	if err != nil {
		return "", fmt.Errorf("build log of deployment %d: %w", id, err)
	}
	return text, nil
}
