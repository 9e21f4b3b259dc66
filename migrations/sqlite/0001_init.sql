-- Initial schema. Timestamps are unix microseconds (INTEGER) so the same SQL
-- runs on SQLite; 0 means "unset".

CREATE TABLE components (
    name       TEXT PRIMARY KEY,
    runtime    TEXT NOT NULL DEFAULT '',
    paused     INTEGER NOT NULL DEFAULT 0,
    live       INTEGER NOT NULL DEFAULT 0,
    target     INTEGER NOT NULL DEFAULT 0,
    repo       TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE artifacts (
    digest     TEXT PRIMARY KEY,
    data       BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE deployments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    component  TEXT NOT NULL REFERENCES components(name) ON DELETE CASCADE,
    digest     TEXT NOT NULL,
    runtime    TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    source     TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    message    TEXT NOT NULL,
    author     TEXT NOT NULL,
    status     TEXT NOT NULL,
    error      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX deployments_component ON deployments (component, id);
CREATE INDEX deployments_digest ON deployments (digest);
CREATE INDEX deployments_status ON deployments (status);

CREATE TABLE build_logs (
    deployment INTEGER PRIMARY KEY REFERENCES deployments(id) ON DELETE CASCADE,
    text       TEXT NOT NULL
);

CREATE TABLE workers (
    name       TEXT PRIMARY KEY,
    addr       TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);

CREATE TABLE placements (
    deployment INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    worker     TEXT NOT NULL REFERENCES workers(name) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    error      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (deployment, worker)
);
CREATE INDEX placements_worker ON placements (worker);

CREATE TABLE hits (
    component TEXT NOT NULL REFERENCES components(name) ON DELETE CASCADE,
    minute    INTEGER NOT NULL,
    hits      INTEGER NOT NULL,
    errors    INTEGER NOT NULL,
    latency   TEXT NOT NULL,
    PRIMARY KEY (component, minute)
);

CREATE TABLE logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    component  TEXT NOT NULL REFERENCES components(name) ON DELETE CASCADE,
    deployment INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    stream     TEXT NOT NULL,
    line       TEXT NOT NULL
);
CREATE INDEX logs_component ON logs (component, id);

CREATE TABLE tokens (
    hash       TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    user_login TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
