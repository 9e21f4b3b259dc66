-- [events] concurrency across the cluster: each executor process that runs
-- a component's queued calls holds a lease on some of its slots (held),
-- saying how many it could use (want). The sum of the live leases' held is
-- at most the component's concurrency; a lease not renewed by expires_at
-- (unix microseconds) is dead with its process, and its slots go to the
-- others.

CREATE TABLE event_slots (
    queue      TEXT NOT NULL,
    holder     TEXT NOT NULL,
    want       INTEGER NOT NULL,
    held       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (queue, holder)
);
