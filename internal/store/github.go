package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// GitHub job states. A job is queued when its webhook is accepted, running
// while a deploymgr works on it, and done or failed at the end; Note says
// what happened.
const (
	JobQueued  = "queued"
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// GitHubJob is the persisted work of one accepted webhook delivery (or of
// a "start" request from the dashboard). Delivery is unique, so a
// redelivery of the same webhook is refused with ErrConflict.
type GitHubJob struct {
	Delivery string
	// Kind is "push", "installation" or "start".
	Kind string
	// Repo is "owner/name" when the job is about one repository.
	Repo string
	// Payload is the job's input, JSON encoded by its owner.
	Payload []byte
	State   string
	Note    string
	// Deployment is the Velo deployment the job created (0: none yet).
	Deployment int64
	// GitHubDeployment is the deployment recorded on GitHub (0: none).
	GitHubDeployment int64
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

const githubJobCols = `delivery, kind, repo, payload, state, note, deployment, gh_deployment, created_at, updated_at`

func scanGitHubJob(r row) (GitHubJob, error) {
	var j GitHubJob
	var payload string
	var created, updated int64
	err := r.Scan(&j.Delivery, &j.Kind, &j.Repo, &payload, &j.State, &j.Note, &j.Deployment,
		&j.GitHubDeployment, &created, &updated)
	j.Payload = []byte(payload)
	j.CreatedAt, j.UpdatedAt = fromMicros(created), fromMicros(updated)
	return j, err
}

// CreateGitHubJob records a new job; State defaults to queued. ErrConflict
// when a job with the same Delivery exists.
func (s *Store) CreateGitHubJob(ctx context.Context, j GitHubJob) (GitHubJob, error) {
	t := now()
	j.CreatedAt, j.UpdatedAt = t, t
	if j.State == "" {
		j.State = JobQueued
	}
	_, err := s.db.exec(ctx, `INSERT INTO github_jobs (`+githubJobCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`,
		j.Delivery, j.Kind, j.Repo, string(j.Payload), j.State, cleanText(j.Note), j.Deployment,
		j.GitHubDeployment, micros(t))
	if err != nil {
		return GitHubJob{}, fmt.Errorf("create github job %s: %w", j.Delivery, err)
	}
	return j, nil
}

// GitHubJob returns the job of a delivery, or ErrNotFound.
func (s *Store) GitHubJob(ctx context.Context, delivery string) (GitHubJob, error) {
	j, err := scanGitHubJob(s.db.queryRow(ctx, `SELECT `+githubJobCols+` FROM github_jobs WHERE delivery = $1`, delivery))
	if err != nil {
		return GitHubJob{}, fmt.Errorf("github job %s: %w", delivery, err)
	}
	return j, nil
}

// GitHubJobs returns the jobs in any of states (all when none given), oldest
// first.
func (s *Store) GitHubJobs(ctx context.Context, states ...string) ([]GitHubJob, error) {
	where, args := "", make([]any, len(states))
	if len(states) > 0 {
		marks := make([]string, len(states))
		for i, st := range states {
			marks[i] = fmt.Sprintf("$%d", i+1)
			args[i] = st
		}
		where = ` WHERE state IN (` + strings.Join(marks, ", ") + `)`
	}
	rs, err := s.db.query(ctx, `SELECT `+githubJobCols+` FROM github_jobs`+where+` ORDER BY created_at, delivery`, args...)
	out, err := collect(rs, err, scanGitHubJob)
	if err != nil {
		return nil, fmt.Errorf("github jobs: %w", err)
	}
	return out, nil
}

// ClaimGitHubJob moves a job from state from to running and reports whether
// this caller won it: of several callers claiming the same job, exactly one
// gets true.
func (s *Store) ClaimGitHubJob(ctx context.Context, delivery, from string) (bool, error) {
	n, err := s.db.exec(ctx, `UPDATE github_jobs SET state = $3, updated_at = $4 WHERE delivery = $1 AND state = $2`,
		delivery, from, JobRunning, micros(now()))
	if err != nil {
		return false, fmt.Errorf("claim github job %s: %w", delivery, err)
	}
	return n == 1, nil
}

// UpdateGitHubJob writes a job's State, Note, Deployment and
// GitHubDeployment; ErrNotFound if there is no such job.
func (s *Store) UpdateGitHubJob(ctx context.Context, j GitHubJob) error {
	err := affected(s.db.exec(ctx, `UPDATE github_jobs SET state = $2, note = $3, deployment = $4, gh_deployment = $5,
		updated_at = $6 WHERE delivery = $1`,
		j.Delivery, j.State, cleanText(j.Note), j.Deployment, j.GitHubDeployment, micros(now())))
	if err != nil {
		return fmt.Errorf("update github job %s: %w", j.Delivery, err)
	}
	return nil
}

// GitHubInstallation is an installation of the GitHub App.
type GitHubInstallation struct {
	ID          int64
	Account     string
	AccountType string
	UpdatedAt   time.Time
}

// GitHubRepo is a repository an installation covers.
type GitHubRepo struct {
	ID           int64
	FullName     string // owner/name as GitHub spells it
	Installation int64
	UpdatedAt    time.Time
}

// PutGitHubInstallation records an installation, replacing the one with the
// same ID.
func (s *Store) PutGitHubInstallation(ctx context.Context, in GitHubInstallation) error {
	_, err := s.db.exec(ctx, `INSERT INTO github_installations (id, account, account_type, updated_at)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (id) DO UPDATE SET account = excluded.account, account_type = excluded.account_type,
			updated_at = excluded.updated_at`,
		in.ID, in.Account, in.AccountType, micros(now()))
	if err != nil {
		return fmt.Errorf("put github installation %d: %w", in.ID, err)
	}
	return nil
}

// DeleteGitHubInstallation forgets an installation and its repositories;
// ErrNotFound if there is none.
func (s *Store) DeleteGitHubInstallation(ctx context.Context, id int64) error {
	err := s.tx(ctx, func(q querier) error {
		// Explicit, so it does not rely on SQLite's foreign_keys pragma.
		if _, err := q.exec(ctx, `DELETE FROM github_repos WHERE installation = $1`, id); err != nil {
			return err
		}
		return affected(q.exec(ctx, `DELETE FROM github_installations WHERE id = $1`, id))
	})
	if err != nil {
		return fmt.Errorf("delete github installation %d: %w", id, err)
	}
	return nil
}

// GitHubInstallations returns every installation, by ID.
func (s *Store) GitHubInstallations(ctx context.Context) ([]GitHubInstallation, error) {
	rs, err := s.db.query(ctx, `SELECT id, account, account_type, updated_at FROM github_installations ORDER BY id`)
	out, err := collect(rs, err, func(r row) (GitHubInstallation, error) {
		var in GitHubInstallation
		var updated int64
		err := r.Scan(&in.ID, &in.Account, &in.AccountType, &updated)
		in.UpdatedAt = fromMicros(updated)
		return in, err
	})
	if err != nil {
		return nil, fmt.Errorf("github installations: %w", err)
	}
	return out, nil
}

// PutGitHubRepo records a repository of an installation, replacing the one
// with the same ID (a renamed or transferred repository keeps its ID).
// ErrNotFound if the installation is not recorded.
func (s *Store) PutGitHubRepo(ctx context.Context, r GitHubRepo) error {
	_, err := s.db.exec(ctx, `INSERT INTO github_repos (id, full_name, name_key, installation, updated_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET full_name = excluded.full_name, name_key = excluded.name_key,
			installation = excluded.installation, updated_at = excluded.updated_at`,
		r.ID, r.FullName, strings.ToLower(r.FullName), r.Installation, micros(now()))
	if err != nil {
		return fmt.Errorf("put github repo %s: %w", r.FullName, err)
	}
	return nil
}

// DeleteGitHubRepo forgets a repository; deleting one that is not recorded
// is not an error.
func (s *Store) DeleteGitHubRepo(ctx context.Context, id int64) error {
	if _, err := s.db.exec(ctx, `DELETE FROM github_repos WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete github repo %d: %w", id, err)
	}
	return nil
}

// GitHubRepo returns the repository named fullName ("owner/name", compared
// case-insensitively as GitHub does), or ErrNotFound.
func (s *Store) GitHubRepo(ctx context.Context, fullName string) (GitHubRepo, error) {
	var r GitHubRepo
	var updated int64
	err := s.db.queryRow(ctx, `SELECT id, full_name, installation, updated_at FROM github_repos
		WHERE name_key = $1 ORDER BY updated_at DESC LIMIT 1`, strings.ToLower(fullName)).
		Scan(&r.ID, &r.FullName, &r.Installation, &updated)
	if err != nil {
		return GitHubRepo{}, fmt.Errorf("github repo %s: %w", fullName, err)
	}
	r.UpdatedAt = fromMicros(updated)
	return r, nil
}

// SetDeploymentCommitTime records when a deployment's commit was made.
// ErrNotFound if there is no such deployment.
func (s *Store) SetDeploymentCommitTime(ctx context.Context, id int64, t time.Time) error {
	err := affected(s.db.exec(ctx, `UPDATE deployments SET commit_time = $2 WHERE id = $1`, id, micros(t)))
	if err != nil {
		return fmt.Errorf("set commit time of deployment %d: %w", id, err)
	}
	return nil
}

// Session is a signed-in dashboard session; only the sha256 of its secret
// is stored.
type Session struct {
	Hash      string // hex sha256 of the cookie's secret
	User      string
	ExpiresAt time.Time
	CreatedAt time.Time
}

// CreateSession records a session; CreatedAt defaults to now. ErrConflict
// if one with the same hash exists.
func (s *Store) CreateSession(ctx context.Context, se Session) error {
	if se.CreatedAt.IsZero() {
		se.CreatedAt = now()
	}
	_, err := s.db.exec(ctx, `INSERT INTO sessions (hash, user_login, expires_at, created_at) VALUES ($1, $2, $3, $4)`,
		se.Hash, se.User, micros(se.ExpiresAt), micros(se.CreatedAt))
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// Session returns the session with hash unless it has expired; ErrNotFound
// otherwise.
func (s *Store) Session(ctx context.Context, hash string) (Session, error) {
	var se Session
	var expires, created int64
	err := s.db.queryRow(ctx, `SELECT hash, user_login, expires_at, created_at FROM sessions
		WHERE hash = $1 AND expires_at > $2`, hash, micros(now())).Scan(&se.Hash, &se.User, &expires, &created)
	if err != nil {
		// The hash identifies a credential: keep it out of errors.
		return Session{}, fmt.Errorf("session: %w", err)
	}
	se.ExpiresAt, se.CreatedAt = fromMicros(expires), fromMicros(created)
	return se, nil
}

// DeleteSession ends a session; ending one that does not exist is not an
// error.
func (s *Store) DeleteSession(ctx context.Context, hash string) error {
	if _, err := s.db.exec(ctx, `DELETE FROM sessions WHERE hash = $1`, hash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes the sessions that expired before now and
// returns how many.
func (s *Store) DeleteExpiredSessions(ctx context.Context) (int64, error) {
	n, err := s.db.exec(ctx, `DELETE FROM sessions WHERE expires_at <= $1`, micros(now()))
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return n, nil
}

// PutGitHubUserToken records the GitHub user access token of a signed-in
// user (login as on GitHub), replacing the previous one. Velo uses it to
// list the installations and repositories the user can reach.
func (s *Store) PutGitHubUserToken(ctx context.Context, login, token string) error {
	_, err := s.db.exec(ctx, `INSERT INTO github_users (login, token, updated_at) VALUES ($1, $2, $3)
		ON CONFLICT (login) DO UPDATE SET token = excluded.token, updated_at = excluded.updated_at`,
		strings.ToLower(login), token, micros(now()))
	if err != nil {
		return fmt.Errorf("put github user %s: %w", login, err)
	}
	return nil
}

// GitHubUserToken returns the token PutGitHubUserToken stored for login
// (case-insensitive), or ErrNotFound.
func (s *Store) GitHubUserToken(ctx context.Context, login string) (string, error) {
	var tok string
	if err := s.db.queryRow(ctx, `SELECT token FROM github_users WHERE login = $1`, strings.ToLower(login)).Scan(&tok); err != nil {
		return "", fmt.Errorf("github user %s: %w", login, err)
	}
	return tok, nil
}
