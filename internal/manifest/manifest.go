package manifest

import "time"

// Runtimes a manifest may name.
const (
	WASM   = "wasm"
	Docker = "docker"
)

// FileName is the manifest's name at the root of a component's tree.
const FileName = "velo.toml"

// Manifest is a component's resolved configuration: velo.toml with every
// default applied and the runtime inferred.
type Manifest struct {
	Name    string        `json:"name"`
	Runtime string        `json:"runtime"`
	Module  string        `json:"module,omitempty"` // wasm: path of the module inside the tree
	Build   string        `json:"build,omitempty"`  // run by `velo deploy` before packing
	Port    int           `json:"port,omitempty"`   // docker: port the container listens on
	Timeout time.Duration `json:"timeout"`          // per request
	Memory  int64         `json:"memory"`           // bytes, per instance
	// Concurrency caps the component's calls running at once on one
	// worker; more wait briefly, then get 503. Zero in a manifest stored
	// before the key existed: the worker applies DefaultConcurrency.
	Concurrency int               `json:"concurrency,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	Scale       Scale             `json:"scale"`

	// WAGI (wasm only): the export run instead of _start, and the files
	// mounted read-only for the module. See wagi.go.
	Entrypoint string      `json:"entrypoint,omitempty"`
	Files      []FileMount `json:"files,omitempty"`

	// Outbound HTTP (wasm): the origins a module may call through
	// wasi_experimental_http, and how many responses it may hold open at
	// once. Nothing is allowed when AllowedHosts is empty.
	AllowedHosts       []string `json:"allowed_hosts,omitempty"`        // "scheme://host[:port]", normalized
	HTTPMaxConcurrency int      `json:"http_max_concurrency,omitempty"` // 0: the runtime's default

	// Health, when set, gates promotion (and Docker readiness) on a
	// health check; AutoRollback watches the deployment once live. See
	// rollout.go.
	Health       *Health      `json:"health,omitempty"`
	AutoRollback AutoRollback `json:"auto_rollback,omitempty"`

	// The gateway (see gateway.go): who may call the component (nil:
	// anyone), how often (nil: no limit), and its OpenAPI document, which
	// the router checks calls against when ValidateCalls is set.
	Access        *Access `json:"access,omitempty"`
	Limits        *Limits `json:"limits,omitempty"`
	OpenAPI       string  `json:"openapi,omitempty"`
	ValidateCalls bool    `json:"validate,omitempty"`

	// Events is [events]: retries, concurrency and signature checks of
	// the component's queued calls (see events.go).
	Events Events `json:"events,omitzero"`

	// Domains are host names the component answers on besides
	// NAME.<VELO_DOMAIN> (lowercase; one component holds each, see
	// store.ClaimDomains); with HTTPS each gets its certificate.
	Domains []string `json:"domains,omitempty"`
	// Schedules are the [[schedule]] tables (see schedule.go).
	Schedules []Schedule `json:"schedules,omitempty"`
}

// Scale bounds a docker component's instance count.
type Scale struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

// Defaults applied when velo.toml leaves a key out.
const (
	DefaultTimeout = 10 * time.Second
	DefaultMemory  = 128 << 20
	DefaultPort    = 8080
	DefaultMax     = 4
	// DefaultConcurrency is calls at once per component and worker: enough
	// to keep every core of a worker busy with one component and to hide
	// clients that are slow to send or read, few enough that one flooded
	// component cannot take a worker's whole memory budget.
	DefaultConcurrency = 32
)
