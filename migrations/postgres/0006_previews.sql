-- Previews of pull requests: one row per pull request of a repository,
-- kept after the pull request closes so that a reopened one edits the
-- same comment.

CREATE TABLE github_previews (
    repo_key      TEXT NOT NULL,
    number        BIGINT NOT NULL,
    repo          TEXT NOT NULL,
    component     TEXT NOT NULL,
    head          TEXT NOT NULL,
    comment_id    BIGINT NOT NULL DEFAULT 0,
    gh_deployment BIGINT NOT NULL DEFAULT 0,
    approved_by   TEXT NOT NULL DEFAULT '',
    closed        BIGINT NOT NULL DEFAULT 0,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (repo_key, number)
);
