-- The gateway (issue 14): API keys of private components, the OpenAPI
-- document of a deployment, and the calls routers admitted per rate-limited
-- client, shared so that a limit holds across routers.

-- An API key is stored by the sha256 of its secret, never the secret.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    component  TEXT NOT NULL REFERENCES components(name) ON DELETE CASCADE,
    label      TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX api_keys_component ON api_keys (component);

-- The component's OpenAPI document as JSON, checked at deploy ('' for none).
ALTER TABLE deployments ADD COLUMN openapi TEXT NOT NULL DEFAULT '';

-- One row per router, component, client and batch: how many calls that
-- router admitted. Routers read the others' rows once a second; rows older
-- than a minute are pruned.
CREATE TABLE rate_usage (
    id        BIGSERIAL PRIMARY KEY,
    router    TEXT NOT NULL,
    component TEXT NOT NULL,
    client    TEXT NOT NULL,
    used      BIGINT NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX rate_usage_at ON rate_usage (at);
