-- GitHub App: installations and their repositories, persisted webhook jobs,
-- dashboard sessions, signed-in users' GitHub tokens, and the commit time of
-- deployments (so an older push never replaces a newer one).

ALTER TABLE deployments ADD COLUMN commit_time BIGINT NOT NULL DEFAULT 0;

CREATE TABLE github_installations (
    id           BIGINT PRIMARY KEY,
    account      TEXT NOT NULL,
    account_type TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE github_repos (
    id           BIGINT PRIMARY KEY,
    full_name    TEXT NOT NULL,
    name_key     TEXT NOT NULL,
    installation BIGINT NOT NULL REFERENCES github_installations(id) ON DELETE CASCADE,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX github_repos_name ON github_repos (name_key);
CREATE INDEX github_repos_installation ON github_repos (installation);

CREATE TABLE github_jobs (
    delivery      TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    repo          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL,
    note          TEXT NOT NULL,
    deployment    BIGINT NOT NULL DEFAULT 0,
    gh_deployment BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX github_jobs_state ON github_jobs (state, created_at);

CREATE TABLE sessions (
    hash       TEXT PRIMARY KEY,
    user_login TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE TABLE github_users (
    login      TEXT PRIMARY KEY,
    token      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
