-- TLS: certmagic's storage (certificates, their keys, the ACME account),
-- shared by every router of a cluster. Values are sealed by internal/certs
-- with the secrets keyring before they get here; key_id names the key.
CREATE TABLE tls_storage (
    key      TEXT PRIMARY KEY,
    key_id   TEXT NOT NULL,
    value    BYTEA NOT NULL,
    size     BIGINT NOT NULL,
    modified BIGINT NOT NULL
);

-- certmagic's named locks (one router obtains each certificate): a lease
-- its holder renews while it works; one not renewed past expires is stale.
CREATE TABLE tls_locks (
    name    TEXT PRIMARY KEY,
    owner   TEXT NOT NULL,
    expires BIGINT NOT NULL
);

-- Custom domains (velo.toml domains): a name belongs to one component.
CREATE TABLE domains (
    domain    TEXT PRIMARY KEY,
    component TEXT NOT NULL REFERENCES components(name) ON DELETE CASCADE
);
CREATE INDEX domains_component ON domains (component);
