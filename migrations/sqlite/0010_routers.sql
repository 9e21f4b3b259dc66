-- What every router serves, so that the deploymgr calls a deployment live
-- only once every live router serves it. route_version counts the route
-- changes (bumped before each routes notification); a router reads it
-- before it reads the routes and reports it as applied once the table it
-- read is swapped in. seen_at is its heartbeat (unix microseconds): a
-- router silent for long is not waited for.

CREATE TABLE route_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO route_version (id, version) VALUES (1, 0);

CREATE TABLE routers (
    id         TEXT PRIMARY KEY,
    addr       TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL,
    applied    INTEGER NOT NULL
);
