// Package api holds the JSON shapes of Velo's REST API (/api/v1), shared by
// the server (deploymgr) and its clients (the CLI, the dashboard's scripts).
// It holds types only: no transport, no storage.
package api

import "time"

// Component is GET /api/v1/components/{name}.
type Component struct {
	Name    string `json:"name"`
	Runtime string `json:"runtime"`
	// Status is one of: "live", "deploying", "paused", "failed", "new".
	Status string      `json:"status"`
	Paused bool        `json:"paused"`
	URL    string      `json:"url"`
	Repo   string      `json:"repo,omitempty"`
	Live   *Deployment `json:"live,omitempty"`
	// Target is the deployment being rolled out, when one is.
	Target *Deployment `json:"target,omitempty"`
	// Canary is the deployment that takes CanaryWeight percent of the
	// calls beside Live, when there is one.
	Canary       *Deployment `json:"canary,omitempty"`
	CanaryWeight int         `json:"canary_weight,omitempty"`
	Instances    []Instance  `json:"instances"`
	// Events counts the component's queued calls; only on
	// GET /components/{name}, when the server runs the event engine.
	Events *EventCounts `json:"events,omitempty"`
	// Schedules are the live deployment's [[schedule]] tables with their
	// next and last runs; only on GET /components/{name}.
	Schedules []Schedule `json:"schedules,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	// Warning is set on the answer to a pause or resume when a router
	// did not report serving the change within VELO_ROUTER_WAIT.
	Warning string `json:"warning,omitempty"`
}

// Instance is one placement of a component's deployment on a worker.
type Instance struct {
	Deployment int64  `json:"deployment"`
	Worker     string `json:"worker"`
	State      string `json:"state"` // pending | ready | failed
	Error      string `json:"error,omitempty"`
}

// Deployment is GET /api/v1/deployments/{id}.
type Deployment struct {
	ID        int64  `json:"id"`
	Component string `json:"component"`
	Digest    string `json:"digest"`
	Runtime   string `json:"runtime"`
	Source    string `json:"source"` // upload | github
	Commit    string `json:"commit,omitempty"`
	Message   string `json:"message,omitempty"`
	Author    string `json:"author,omitempty"`
	Status    string `json:"status"` // pending | preparing | ready | failed
	Live      bool   `json:"live"`
	Error     string `json:"error,omitempty"`
	BuildLog  string `json:"build_log,omitempty"` // only on GET /deployments/{id}
	// Env is the manifest's [env]; only on GET /deployments/{id}.
	Env       map[string]string `json:"env,omitempty"`
	URL       string            `json:"url,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
	// Warning is set on the answer to a promote (canary weight) when a
	// router did not report serving the change within VELO_ROUTER_WAIT.
	Warning string `json:"warning,omitempty"`
}

// Promote is the body of POST
// /api/v1/components/{name}/deployments/{id}/promote: the percent of the
// calls the deployment takes (1-99: a canary beside the live one, 100:
// live, 0: no canary any more).
type Promote struct {
	Weight int `json:"weight"`
}

// DeploymentStats is one deployment's share of a component's statistics.
type DeploymentStats struct {
	Deployment int64   `json:"deployment"`
	Hits       int64   `json:"hits"`
	Errors     int64   `json:"errors"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
}

// Stats is GET /api/v1/components/{name}/stats?since=1h.
type Stats struct {
	Component string   `json:"component"`
	Since     string   `json:"since"`
	Buckets   []Bucket `json:"buckets"` // one per minute, oldest first, empty minutes included
	Hits      int64    `json:"hits"`
	Errors    int64    `json:"errors"`
	// Deployments are the counts of the live deployment and the canary
	// (or the one rolled out before), side by side, over the same time.
	Deployments []DeploymentStats `json:"deployments,omitempty"`
	// Outbound and OutboundErrors sum the buckets' (see Bucket).
	Outbound       int64 `json:"outbound"`
	OutboundErrors int64 `json:"outbound_errors"`
}

// Bucket is one minute of request statistics.
type Bucket struct {
	Minute time.Time `json:"minute"`
	Hits   int64     `json:"hits"`
	Errors int64     `json:"errors"`
	P50ms  float64   `json:"p50_ms"`
	P99ms  float64   `json:"p99_ms"`
	// Outbound counts the component's outbound HTTP calls (WASM,
	// wasi_experimental_http), allowed or refused; OutboundErrors those
	// refused or failed.
	Outbound       int64 `json:"outbound"`
	OutboundErrors int64 `json:"outbound_errors"`
}

// LogLine is one line of GET /api/v1/components/{name}/logs. With
// ?follow=1 the server streams lines as Server-Sent Events, one JSON LogLine
// per "data:" field, id = LogLine.ID (so Last-Event-ID resumes).
type LogLine struct {
	ID         int64     `json:"id"`
	Time       time.Time `json:"time"`
	Deployment int64     `json:"deployment"`
	Stream     string    `json:"stream"` // stdout | stderr | velo
	Line       string    `json:"line"`
}

// Rollback is the body of POST /api/v1/components/{name}/rollback; with no
// deployment given, the one live before the current one.
type Rollback struct {
	Deployment int64 `json:"deployment,omitempty"`
}

// Start is the body of POST /api/v1/components: deploy the head of a
// repository's default branch (GitHub App installed on it).
type Start struct {
	Repo string `json:"repo"` // owner/name
}

// Repo is one entry of GET /api/v1/repos: a repository where the GitHub
// App is installed that the caller reaches, and the component deployed
// from it, if any.
type Repo struct {
	FullName  string `json:"full_name"` // owner/name
	Component string `json:"component,omitempty"`
}

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	Name string `json:"name"` // default "cli"
}

// Token is an API token as GET /api/v1/tokens lists it. The secret
// (Token) is in the answer of POST /api/v1/tokens only: Velo stores its
// sha256 and can never show it again.
type Token struct {
	// ID names the token for DELETE /api/v1/tokens/{id}; it is not a
	// credential.
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	User      string    `json:"user"`
	CreatedAt time.Time `json:"created_at"`
	Token     string    `json:"token,omitempty"`
}

// Error is every error response's body.
type Error struct {
	Error string `json:"error"`
}

// Secret is one entry of GET /api/v1/components/{name}/secrets and the
// answer to PUT …/secrets/{key}: a name, when it was set and whether previews
// get it, never a value.
type Secret struct {
	Name      string    `json:"name"`
	UpdatedAt time.Time `json:"updated_at"`
	// Preview says the component's previews (NAME--pr-N) receive it too.
	Preview bool `json:"preview"`
}

// APIKey is one entry of GET /api/v1/components/{name}/keys: a private
// component's API key, never its secret.
type APIKey struct {
	ID        string    `json:"id"`
	Label     string    `json:"label"`
	CreatedAt time.Time `json:"created_at"`
}

// NewAPIKey is the answer to POST /api/v1/components/{name}/keys: the
// key's secret, shown this once (only its hash is stored).
type NewAPIKey struct {
	APIKey
	Key string `json:"key"`
}

// RotateKey is the answer to POST /api/v1/secrets/rotate-key.
type RotateKey struct {
	// Key is the id of the key every secret is now sealed under.
	Key string `json:"key"`
	// Resealed counts the secrets re-encrypted under Key.
	Resealed int `json:"resealed"`
	// ResealedTLS counts the items of the TLS storage (certificates,
	// their private keys, the ACME account) re-encrypted under Key.
	ResealedTLS int `json:"resealed_tls"`
	// Failed names the secrets ("component/NAME: reason") and TLS items
	// ("tls KEY: reason") that could not be opened and were left as they
	// are.
	Failed []string `json:"failed,omitempty"`
	// Keys are the key ids the server holds now, Key first.
	Keys []string `json:"keys"`
	// Note says what the operator has to do next, if anything.
	Note string `json:"note,omitempty"`
}

// Invocation is GET /api/v1/invocations/{id}: a queued call (Prefer:
// respond-async, an inbound event or a schedule tick) and what became of it.
type Invocation struct {
	ID        int64  `json:"id"`
	Component string `json:"component"`
	// State is one of: "queued", "running", "succeeded", "failed" (an
	// attempt failed, another is due at NextAttemptAt), "dead" (out of
	// attempts, or dropped with its component).
	State       string    `json:"state"`
	Source      string    `json:"source"` // async | event | schedule
	Method      string    `json:"method"`
	Path        string    `json:"path"`
	Attempt     int       `json:"attempt"` // attempts made
	MaxAttempts int       `json:"max_attempts"`
	Attempts    []Attempt `json:"attempts"` // only on GET /invocations/{id}
	// LastError is why the latest failed attempt failed.
	LastError     string     `json:"last_error,omitempty"`
	Answer        *Answer    `json:"answer,omitempty"` // the last attempt's
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// ScheduledFor is the tick a schedule's call was due at.
	ScheduledFor *time.Time `json:"scheduled_for,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	FinishedAt   *time.Time `json:"finished_at,omitempty"`
}

// Attempt is one try of an invocation.
type Attempt struct {
	Attempt    int       `json:"attempt"`
	StartedAt  time.Time `json:"started_at"`
	DurationMS float64   `json:"duration_ms"`
	Status     int       `json:"status,omitempty"` // 0: no answer
	Error      string    `json:"error,omitempty"`
}

// Answer is what a component answered a queued call; Body holds at most
// 1 MiB (base64 in JSON).
type Answer struct {
	Status  int                 `json:"status"`
	Headers map[string][]string `json:"headers"`
	Body    []byte              `json:"body"`
}

// EventCounts are a component's queued calls, in GET /components/{name}
// and velo status.
type EventCounts struct {
	Queued  int64 `json:"queued"`
	Running int64 `json:"running"`
	Dead    int64 `json:"dead"`
}

// Schedule is one [[schedule]] of a component, in GET /components/{name}.
type Schedule struct {
	Cron     string       `json:"cron"`
	Timezone string       `json:"timezone,omitempty"`
	Method   string       `json:"method"`
	Path     string       `json:"path"`
	NextRun  *time.Time   `json:"next_run,omitempty"`
	Last     *ScheduleRun `json:"last,omitempty"`
}

// ScheduleRun is how a schedule's latest tick went.
type ScheduleRun struct {
	Tick       time.Time `json:"tick"` // when it was due
	Invocation int64     `json:"invocation"`
	State      string    `json:"state"`
	Status     int       `json:"status,omitempty"`
	Error      string    `json:"error,omitempty"`
}
