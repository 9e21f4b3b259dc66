-- The event engine's own records beside River's queue (River's tables come
-- from River's own migrations, which Store.Migrate runs after these).
--
-- invocation_attempts keeps what each attempt of a queued call answered:
-- River's job row keeps the request, its state and its errors; the
-- statuses, durations and the final answer live here. invocation is the
-- River job id.
CREATE TABLE invocation_attempts (
    invocation  BIGINT NOT NULL,
    attempt     INTEGER NOT NULL,
    component   TEXT NOT NULL REFERENCES components(name) ON DELETE CASCADE,
    started_at  BIGINT NOT NULL,
    duration_us BIGINT NOT NULL,
    status      INTEGER NOT NULL,
    error       TEXT NOT NULL DEFAULT '',
    headers     TEXT NOT NULL DEFAULT '',
    body        BYTEA,
    PRIMARY KEY (invocation, attempt)
);
CREATE INDEX invocation_attempts_started ON invocation_attempts (started_at);

-- idempotency_keys maps a component's Idempotency-Key to the invocation it
-- made, for 24 hours (older rows are replaced and pruned).
CREATE TABLE idempotency_keys (
    component  TEXT NOT NULL REFERENCES components(name) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    invocation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (component, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
