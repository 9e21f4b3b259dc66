-- Previews of pull requests: one row per pull request of a repository,
-- kept after the pull request closes so that a reopened one edits the
-- same comment.

CREATE TABLE github_previews (
    repo_key      TEXT NOT NULL,
    number        INTEGER NOT NULL,
    repo          TEXT NOT NULL,
    component     TEXT NOT NULL,
    head          TEXT NOT NULL,
    comment_id    INTEGER NOT NULL DEFAULT 0,
    gh_deployment INTEGER NOT NULL DEFAULT 0,
    approved_by   TEXT NOT NULL DEFAULT '',
    closed        INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repo_key, number)
);
