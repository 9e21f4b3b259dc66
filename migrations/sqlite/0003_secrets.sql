-- Component secrets, sealed (AES-256-GCM) by deploymgr before they get here:
-- the store never holds a value in plaintext. key_id names the key that
-- sealed the row, so a key rotation can tell which rows are still to do.

CREATE TABLE secrets (
    component  TEXT NOT NULL REFERENCES components(name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (component, name)
);
CREATE INDEX secrets_key ON secrets (key_id);
