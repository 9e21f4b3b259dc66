package deploymgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
)

// Store is what deploymgr needs from the store.
type Store interface {
	CreateComponent(ctx context.Context, c store.Component) error
	Component(ctx context.Context, name string) (store.Component, error)
	Components(ctx context.Context) ([]store.Component, error)
	SetPaused(ctx context.Context, name string, paused bool) error
	SetTarget(ctx context.Context, name string, deployment int64) error
	Promote(ctx context.Context, name string, deployment int64) error
	PromoteVersioned(ctx context.Context, name string, deployment int64) (int64, error)
	DeleteComponent(ctx context.Context, name string) error

	CreateDeployment(ctx context.Context, d store.Deployment) (store.Deployment, error)
	Deployment(ctx context.Context, id int64) (store.Deployment, error)
	Deployments(ctx context.Context, component string, limit int) ([]store.Deployment, error)
	DeploymentsByStatus(ctx context.Context, statuses ...string) ([]store.Deployment, error)
	SetDeploymentStatus(ctx context.Context, id int64, status, errMsg string) error
	AppendBuildLog(ctx context.Context, id int64, text string) error
	BuildLog(ctx context.Context, id int64) (string, error)

	PutArtifact(ctx context.Context, digest string, data []byte) error
	HasArtifact(ctx context.Context, digest string) (bool, error)
	DropArtifacts(ctx context.Context, component string, keep int, storedBefore time.Time) (int64, error)
	TrimBuildLogs(ctx context.Context, component string, keep int) (int64, error)
	PruneDeployments(ctx context.Context, component string, keep int) (int64, error)
	ReclaimSpace(ctx context.Context) error

	Workers(ctx context.Context) ([]store.Worker, error)
	PutPlacement(ctx context.Context, p store.Placement) error
	PlaceDeployment(ctx context.Context, id int64, workers []string) (bool, error)
	AllPlacements(ctx context.Context) ([]store.Placement, error)
	PlacementCounts(ctx context.Context) (map[string]int, error)
	Placements(ctx context.Context, deployment int64) ([]store.Placement, error)
	ComponentPlacements(ctx context.Context, component string) ([]store.Placement, error)
	DeletePlacement(ctx context.Context, deployment int64, worker string) error

	Stats(ctx context.Context, component string, since time.Time) ([]store.Hits, error)
	Prune(ctx context.Context, hitsBefore, jobsBefore time.Time) (hits, jobs int64, err error)
	Logs(ctx context.Context, component string, afterID int64, limit int) ([]store.LogLine, error)
	TailLogs(ctx context.Context, component string, n int) ([]store.LogLine, error)

	secretStore
	gatewayStore
	rolloutStore
	domainStore
	routerStore

	TokenByHash(ctx context.Context, hash string) (store.Token, error)
	PutToken(ctx context.Context, t store.Token) error
	Tokens(ctx context.Context, user string) ([]store.Token, error)
	DeleteTokenByID(ctx context.Context, id, user string) error

	Notify(ctx context.Context, n store.Note) error
	Listen(ctx context.Context, channel store.Channel) (<-chan store.Note, error)
}

// DefaultKeepDeployments is how many deployments of a component keep their
// artifact when Config.KeepDeployments is not set.
const DefaultKeepDeployments = 10

// Config configures a Manager.
type Config struct {
	// PublicURL is where users reach Velo (component URLs are built on it).
	PublicURL string
	// Domain, when set, gives components URLs on NAME.<Domain>.
	Domain string
	// AdminToken is an API token accepted besides the stored ones.
	AdminToken string
	// Limits bound uploaded archives.
	Limits archive.Limits
	// WorkerTimeout is how long a worker may miss heartbeats before it no
	// longer gets new placements (default 10s).
	WorkerTimeout time.Duration
	// Schedule is how often the scheduler looks at the store even without
	// a notification (default 2s).
	Schedule time.Duration
	// WasmReplicas is how many workers a WASM deployment is placed on;
	// 0 (the default) means every live worker.
	WasmReplicas int
	// DockerReplicas is how many workers a Docker deployment is placed
	// on, the least loaded first (default 1); with autoscaling, the
	// fewest.
	DockerReplicas int
	// DockerTargetRPS, when set, autoscales Docker deployments across
	// workers on their request rate (from the routers' hit counts): one
	// more replica when the rate per replica exceeds it, one fewer when
	// the rate would stay under half of it with one replica less, at
	// most one change per ScaleCooldown (see autoscale).
	DockerTargetRPS float64
	// ScaleCooldown is the least time between two scaling changes of a
	// component (default 30s).
	ScaleCooldown time.Duration
	// StreamRecheck is how often a log stream checks that its caller's
	// session or token still holds and that they still reach the
	// component (default 5s; also before each batch of lines).
	StreamRecheck time.Duration
	// Sweep is how often the scheduler reads every component and
	// placement even when nothing told it to (default 30s): in between it
	// looks only at what the notes it gets name, so that a deploy costs
	// the same whatever the number of components. It sweeps at once when
	// the live workers change.
	Sweep time.Duration
	// Grace is how long an old deployment stays placed after a newer one
	// went live, so that routers switch before it goes away (default 3s).
	Grace time.Duration
	// KeepDeployments is how many of each component's newest deployments
	// keep their artifact and build log for rollback (default
	// DefaultKeepDeployments); a rollback to an older one is refused.
	KeepDeployments int
	// KeepRecords is how many of each component's newest deployments
	// keep their record (the history the API and dashboard list; default
	// 10 × KeepDeployments, never fewer than it): older records go, so a
	// component deployed thousands of times holds a bounded history.
	KeepRecords int
	// Retention is how long hit buckets and finished GitHub jobs are kept
	// (default 30 days); the scheduler prunes older ones at start and then
	// hourly.
	Retention time.Duration
	// RoutesChanged, when set, is called after every change of what
	// routers serve, before the change is reported as done (a deployment
	// marked ready, a pause answered). In one process it refreshes the
	// router directly, so "live" means served; across machines routers
	// follow the store's notifications instead. It is given the
	// component whose routes changed.
	RoutesChanged func(ctx context.Context, component string) error
	// RouterWait bounds how long a promotion waits for every router to
	// report serving it before the API calls it live anyway, naming the
	// routers that lag in the build log (default DefaultRouterWait).
	RouterWait time.Duration
	// RouterTimeout: a router silent that long is not waited for
	// (default DefaultRouterTimeout; routers report every second).
	RouterTimeout time.Duration
	// Secrets seals the secrets set through the API; nil refuses them.
	Secrets *secrets.Keyring
	// Events serves the invocations API (the event engine); nil answers
	// it with 503.
	Events Events
	// Shells opens `velo shell` sessions on workers (RemoteShells, or the
	// worker itself in one process); nil refuses shells.
	Shells ShellDialer
	Logger *slog.Logger
}

// Validate checks the config, naming the field at fault.
func (c Config) Validate() error {
	if c.PublicURL == "" {
		return errors.New("deploymgr: PublicURL is required")
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("deploymgr: PublicURL %q is not an http(s) URL", c.PublicURL)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Limits == (archive.Limits{}) {
		c.Limits = archive.DefaultLimits()
	}
	if c.WorkerTimeout <= 0 {
		c.WorkerTimeout = 10 * time.Second
	}
	if c.RouterWait <= 0 {
		c.RouterWait = DefaultRouterWait
	}
	if c.RouterTimeout <= 0 {
		c.RouterTimeout = DefaultRouterTimeout
	}
	if c.Schedule <= 0 {
		c.Schedule = 2 * time.Second
	}
	if c.DockerReplicas <= 0 {
		c.DockerReplicas = 1
	}
	if c.StreamRecheck <= 0 {
		c.StreamRecheck = 5 * time.Second
	}
	if c.ScaleCooldown <= 0 {
		c.ScaleCooldown = 30 * time.Second
	}
	if c.Sweep <= 0 {
		c.Sweep = 30 * time.Second
	}
	if c.Grace <= 0 {
		c.Grace = 3 * time.Second
	}
	if c.KeepDeployments <= 0 {
		c.KeepDeployments = DefaultKeepDeployments
	}
	if c.KeepRecords <= 0 {
		c.KeepRecords = 10 * c.KeepDeployments
	}
	c.KeepRecords = max(c.KeepRecords, c.KeepDeployments)
	if c.Retention <= 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.PublicURL = strings.TrimSuffix(c.PublicURL, "/")
	return c
}

// Manager is the control plane.
type Manager struct {
	cfg   Config
	store Store
	log   *slog.Logger
	auth  []Authenticator
	// access scopes what non-admin users see (nil: everything);
	// github is set by EnableGitHub.
	access Access
	github *GitHub
	// scheduling is when Run started, a scheduling round last failed to
	// read the store, or the first one after read it again: a worker is judged dead only a WorkerTimeout
	// after it, so that workers starting alongside (velo up, a restarted
	// cluster) or writing again after a store outage have had the time
	// to heartbeat (see judging).
	scheduling time.Time
	// reached is when a scheduling round last read the store; lost is
	// what reached was when the store last went away, away whether it
	// still is (see liveWorkers).
	reached, lost time.Time
	away          bool
	// scaled is when the autoscaler last changed each component's
	// replicas; only Run's goroutine uses it.
	scaled map[string]time.Time
	// superseded is when the scheduler first saw each placed deployment
	// neither live nor rolling out; only Run's goroutine uses it.
	superseded map[int64]time.Time
	// redrop holds the components whose old artifacts dropLater looks at
	// again; only Run's goroutine uses it.
	redrop map[string]time.Time
	// reclaimWanted asks for Store.ReclaimSpace, at most every Grace
	// (reclaimed is when it last ran); only Run's goroutine uses them.
	reclaimWanted bool
	reclaimed     time.Time
	// routing holds the deployments this process is promoting, from just
	// before the store names one live until every router serves it (or
	// RouterWait passed): the API does not call them live in between (a
	// client told "live" would still be answered by the version before).
	routing routingSet
	// changes wakes the API's waits for a deployment to change.
	changes deploymentChanges
	// awaiting is what Run's router waiter holds in routing.
	awaiting awaiting
	// swept is when the scheduler last swept all components (see
	// schedule), and workersKey the live workers it saw then;
	// sweepWanted asks the next pass for a full sweep. sweepDue fires for
	// a pass that a sweep was put off to or a dirty component waits for,
	// at sweepAt when sweepArmed. dirty holds the components whose
	// placements a pass looks at, each from when; watched is when watch
	// last ran. Only Run's goroutine uses them.
	swept       time.Time
	workersKey  string
	sweepWanted bool
	sweepDue    *time.Timer
	sweepArmed  bool
	sweepAt     time.Time
	dirty       map[string]time.Time
	watched     time.Time
}

// New returns a Manager.
func New(cfg Config, st Store) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &Manager{cfg: cfg, store: st, log: cfg.Logger}
	m.routing.changes = &m.changes
	return m, nil
}

// ComponentURL is where component name answers.
func (m *Manager) ComponentURL(name string) string {
	if m.cfg.Domain != "" {
		u, err := url.Parse(m.cfg.PublicURL)
		if err == nil {
			return u.Scheme + "://" + name + "." + m.cfg.Domain + "/"
		}
	}
	return m.cfg.PublicURL + "/fn/" + name + "/"
}

// Run schedules deployments until ctx is done: it places pending ones on
// the live workers, promotes those their workers have prepared, fails
// those no worker could prepare, and retires old placements.
func (m *Manager) Run(ctx context.Context) error {
	// A (re)start counts as the store coming back: leadership is lost
	// when Postgres goes away, and the next term starts after it; the
	// gap runs from the last read of the term before, if any.
	m.scheduling, m.lost, m.away = time.Now(), m.reached, false
	deps, err := m.store.Listen(ctx, store.ChannelDeployments)
	if err != nil {
		return fmt.Errorf("listen for deployments: %w", err)
	}
	places, err := m.store.Listen(ctx, store.ChannelPlacements)
	if err != nil {
		return fmt.Errorf("listen for placements: %w", err)
	}
	// A routes note names a component whose live version or canary
	// changed (here or through the API of another process): its old
	// placements are looked at, without a pass of its own.
	routes, err := m.store.Listen(ctx, store.ChannelRoutes)
	if err != nil {
		return fmt.Errorf("listen for routes: %w", err)
	}
	tick := time.NewTicker(m.cfg.Schedule)
	defer tick.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	m.sweepDue = time.NewTimer(time.Hour)
	m.sweepDue.Stop()
	defer m.sweepDue.Stop()
	m.prune(ctx)
	var waiter sync.WaitGroup
	defer waiter.Wait()
	m.startWaiting()
	waiter.Add(1)
	go func() {
		defer waiter.Done()
		m.waitRouters(ctx)
	}()
	// The routes notes are read as they come, not between passes: a
	// deploy sends two (its worker's, its promotion's), and during a long
	// pass more than a listener holds piled up; the overflow is a resync,
	// which costs a full sweep, which at thousands of components is a
	// long pass again, and so on.
	var routed routeNotes
	routed.kick = make(chan struct{}, 1)
	waiter.Add(1)
	go func() {
		defer waiter.Done()
		for n := range routes {
			routed.add(n.Component())
		}
	}()
	for pass := true; ; {
		if pass {
			if err := m.schedule(ctx); err != nil && ctx.Err() == nil {
				m.log.Warn("schedule failed", "err", err)
			}
		}
		pass = true
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-deps:
			if !ok {
				deps = nil // the store closed: the tick goes on
			}
		case _, ok := <-places:
			if !ok {
				places = nil
			}
		case <-routed.kick:
			for _, c := range routed.take() {
				m.markDirty(c) // "" (a resync, many): a full sweep
			}
			pass = false
		case <-tick.C:
		case <-m.sweepDue.C:
			m.sweepArmed = false
		case <-prune.C:
			m.prune(ctx)
		}
	}
}

// routeNotes gathers the components the routes notes name until the
// scheduler takes them ("" for a note naming none: a resync).
type routeNotes struct {
	mu    sync.Mutex
	names map[string]struct{}
	kick  chan struct{} // cap 1: something to take
}

func (r *routeNotes) add(component string) {
	r.mu.Lock()
	if r.names == nil {
		r.names = map[string]struct{}{}
	}
	r.names[component] = struct{}{}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *routeNotes) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.names))
	for c := range r.names {
		out = append(out, c)
	}
	clear(r.names)
	return out
}

// DeploymentURL is the dashboard's page of a deployment.
func (m *Manager) DeploymentURL(component string, id int64) string {
	return fmt.Sprintf("%s/components/%s/deployments/%d", m.cfg.PublicURL, component, id)
}

// notify sends n where the request or step it follows has already
// succeeded and must not fail for it: the scheduler's next tick catches up
// on a lost note, so a failure is logged, not returned.
func (m *Manager) notify(ctx context.Context, n store.Note) {
	if err := m.store.Notify(ctx, n); err != nil {
		m.log.Warn("notify failed; the next resync catches up", "note", n, "err", err)
	}
}
