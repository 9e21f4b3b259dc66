-- Safe rollouts: one row per component with a rollout state beside its
-- live deployment. canary receives weight percent of the calls (0: none);
-- previous is the deployment that was live before the last promotion at
-- promoted_at, which automatic rollback compares the new one with.
CREATE TABLE rollouts (
    component   TEXT PRIMARY KEY REFERENCES components(name) ON DELETE CASCADE,
    canary      BIGINT NOT NULL DEFAULT 0,
    weight      INTEGER NOT NULL DEFAULT 0,
    previous    BIGINT NOT NULL DEFAULT 0,
    promoted_at BIGINT NOT NULL DEFAULT 0
);

-- Per-deployment traffic, as hits holds per component: the canary and the
-- live deployment side by side, and the error rates automatic rollback
-- compares.
CREATE TABLE deployment_hits (
    deployment BIGINT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    minute     BIGINT NOT NULL,
    hits       BIGINT NOT NULL,
    errors     BIGINT NOT NULL,
    latency    TEXT NOT NULL,
    PRIMARY KEY (deployment, minute)
);
