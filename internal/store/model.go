package store

import (
	"errors"
	"time"
)

// ErrNotFound is returned when the row asked for does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a create would overwrite an existing row.
var ErrConflict = errors.New("already exists")

// Component is a named thing that serves at /fn/NAME.
type Component struct {
	Name    string
	Runtime string // "wasm" | "docker", of the latest deployment
	Paused  bool
	// Live is the deployment that serves requests (0: none yet).
	Live int64
	// Target is the deployment being rolled out (equal to Live when
	// settled). The scheduler promotes Target to Live once it is ready.
	Target int64
	// Repo is "owner/name" for components deployed from GitHub, else "".
	Repo      string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Deployment statuses.
const (
	StatusPending   = "pending"   // accepted, waiting for workers
	StatusPreparing = "preparing" // workers compile/build it
	StatusReady     = "ready"     // prepared; live when Component.Live points at it
	StatusFailed    = "failed"    // Error says why
	// StatusSkipped is a push Velo did not deploy because what is live is
	// newer; Error says why. It has no artifact and never goes live.
	StatusSkipped = "skipped"
)

// Deployment is one version of a component: an artifact plus its manifest.
type Deployment struct {
	ID        int64
	Component string
	Digest    string // sha256 hex of the artifact (.tar.gz) bytes
	Runtime   string
	Manifest  []byte // JSON of manifest.Manifest
	Source    string // "upload" | "github"
	Commit    string // git sha, when from GitHub
	Message   string // commit message
	Author    string
	// CommitTime is when the commit was made (zero for uploads); an older
	// push never replaces a newer one.
	CommitTime time.Time
	Status     string
	Error      string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Worker is a data plane node.
type Worker struct {
	Name      string
	Addr      string // base URL other roles reach it at ("" in-process)
	StartedAt time.Time
	SeenAt    time.Time // last heartbeat
}

// Placement states.
const (
	PlacementPending = "pending" // the worker has to prepare it
	PlacementReady   = "ready"   // the worker serves it
	PlacementFailed  = "failed"  // Error says why
)

// Placement assigns a deployment to a worker.
type Placement struct {
	Deployment int64
	Worker     string
	State      string
	Error      string
	UpdatedAt  time.Time
}

// Route is what the router needs for one component, in one row.
type Route struct {
	Component  string
	Repo       string // the component's repository ("owner/name"), "" when uploaded
	Paused     bool
	Deployment int64  // live deployment, 0 when none
	Runtime    string // of the live deployment
	Manifest   []byte // of the live deployment
	// Workers are the workers with a ready placement of the live
	// deployment, with their addresses, ordered by name.
	Workers []Worker
	// Preparing are the workers with a pending placement of it, ordered
	// by name: a router holds a call for them when no worker is ready
	// (right after a worker restarts, its placements are pending until
	// the module is prepared again).
	Preparing []Worker
	// Canary, when set, takes its Weight percent of the calls.
	Canary *Canary
	// Domains are the custom domains the component holds (see
	// ClaimDomains), in order; the router serves those its live manifest
	// lists.
	Domains []string
}

// Canary is a deployment given a share of its component's calls beside
// the live one (see Rollout).
type Canary struct {
	Deployment int64
	Weight     int // percent, 1-99
	Runtime    string
	Manifest   []byte
	// Workers hold a ready placement of it, ordered by name; a canary
	// with none is not routed.
	Workers []Worker
}

// Hits is a batch of request counts for one component and one minute.
type Hits struct {
	Component string
	// Deployment is the deployment that answered (0: none did, or not
	// known); its counts also go to the deployment's own statistics.
	Deployment int64
	Minute     time.Time // truncated to the minute, UTC
	Hits       int64
	Errors     int64    // responses with status >= 500
	Latency    []uint64 // hist.Histogram counts; merged bucket-wise
	// Outbound counts the component's outbound HTTP calls, allowed or
	// refused, and OutboundErrors those of them refused or failed. Workers
	// count them, routers the rest.
	Outbound       int64
	OutboundErrors int64
}

// LogLine is one line a component (or Velo, about it) wrote.
type LogLine struct {
	ID         int64 // increasing; set by the store
	Component  string
	Deployment int64
	Time       time.Time
	Stream     string // stdout | stderr | velo
	Line       string
}

// Token is an API token; only its sha256 is stored.
type Token struct {
	Hash      string // hex sha256 of the secret
	Name      string
	User      string // "admin" or a GitHub login
	CreatedAt time.Time
}
