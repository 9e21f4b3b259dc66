-- Outbound HTTP calls (wasi_experimental_http) per component and minute,
-- counted by the workers beside the routers' hits: every call, allowed or
-- refused, and of them those refused or failed.

ALTER TABLE hits ADD COLUMN outbound BIGINT NOT NULL DEFAULT 0;
ALTER TABLE hits ADD COLUMN outbound_errors BIGINT NOT NULL DEFAULT 0;
