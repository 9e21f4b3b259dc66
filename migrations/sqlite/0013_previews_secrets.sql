-- Previews of pull requests, second part.
--
-- A secret marked for previews reaches the previews (NAME--pr-N) of its
-- component as well; unmarked ones never do.
ALTER TABLE secrets ADD COLUMN preview INTEGER NOT NULL DEFAULT 0;

-- A pull request of a repository whose root velo.toml lists several
-- components previews each changed component on its own: one row per
-- component of a pull request, with its preview, head and GitHub
-- deployment (github_previews keeps what is per pull request: the comment,
-- the approval, closed).
CREATE TABLE github_preview_components (
    repo_key      TEXT NOT NULL,
    number        INTEGER NOT NULL,
    component     TEXT NOT NULL,
    dir           TEXT NOT NULL,
    preview       TEXT NOT NULL,
    head          TEXT NOT NULL,
    gh_deployment INTEGER NOT NULL DEFAULT 0,
    line          TEXT NOT NULL DEFAULT '',
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repo_key, number, component)
);
