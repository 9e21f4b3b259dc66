package deploymgr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/archive"
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
	DeleteComponent(ctx context.Context, name string) error

	CreateDeployment(ctx context.Context, d store.Deployment) (store.Deployment, error)
	Deployment(ctx context.Context, id int64) (store.Deployment, error)
	Deployments(ctx context.Context, component string, limit int) ([]store.Deployment, error)
	DeploymentsByStatus(ctx context.Context, statuses ...string) ([]store.Deployment, error)
	SetDeploymentStatus(ctx context.Context, id int64, status, errMsg string) error
	AppendBuildLog(ctx context.Context, id int64, text string) error
	BuildLog(ctx context.Context, id int64) (string, error)

	PutArtifact(ctx context.Context, digest string, data []byte) error

	Workers(ctx context.Context) ([]store.Worker, error)
	PutPlacement(ctx context.Context, p store.Placement) error
	PlaceDeployment(ctx context.Context, id int64, workers []string) (bool, error)
	AllPlacements(ctx context.Context) ([]store.Placement, error)
	Placements(ctx context.Context, deployment int64) ([]store.Placement, error)
	ComponentPlacements(ctx context.Context, component string) ([]store.Placement, error)
	DeletePlacement(ctx context.Context, deployment int64, worker string) error

	Stats(ctx context.Context, component string, since time.Time) ([]store.Hits, error)
	Prune(ctx context.Context, hitsBefore, jobsBefore time.Time) (hits, jobs int64, err error)
	Logs(ctx context.Context, component string, afterID int64, limit int) ([]store.LogLine, error)
	TailLogs(ctx context.Context, component string, n int) ([]store.LogLine, error)

	TokenByHash(ctx context.Context, hash string) (store.Token, error)
	PutToken(ctx context.Context, t store.Token) error

	Notify(ctx context.Context, channel, payload string) error
	Listen(ctx context.Context, channel string) (<-chan string, error)
}

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
	// Grace is how long an old deployment stays placed after a newer one
	// went live, so that routers switch before it goes away (default 3s).
	Grace time.Duration
	// Retention is how long hit buckets and finished GitHub jobs are kept
	// (default 30 days); the scheduler prunes older ones at start and then
	// hourly.
	Retention time.Duration
	// RoutesChanged, when set, is called after every change of what
	// routers serve, before the change is reported as done (a deployment
	// marked ready, a pause answered). In one process it refreshes the
	// router directly, so "live" means served; across machines routers
	// follow the store's notifications instead.
	RoutesChanged func(ctx context.Context) error
	Logger        *slog.Logger
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
	if c.Schedule <= 0 {
		c.Schedule = 2 * time.Second
	}
	if c.DockerReplicas <= 0 {
		c.DockerReplicas = 1
	}
	if c.ScaleCooldown <= 0 {
		c.ScaleCooldown = 30 * time.Second
	}
	if c.Grace <= 0 {
		c.Grace = 3 * time.Second
	}
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
	// scheduling is when Run started: a worker is judged dead only a
	// WorkerTimeout after it, so that workers starting alongside (velo up,
	// a restarted cluster) have had the time to heartbeat.
	scheduling time.Time
	// scaled is when the autoscaler last changed each component's
	// replicas; only Run's goroutine uses it.
	scaled map[string]time.Time
}

// New returns a Manager.
func New(cfg Config, st Store) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Manager{cfg: cfg, store: st, log: cfg.Logger}, nil
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
	m.scheduling = time.Now()
	deps, err := m.store.Listen(ctx, ChannelDeployments)
	if err != nil {
		return fmt.Errorf("listen for deployments: %w", err)
	}
	places, err := m.store.Listen(ctx, ChannelPlacements)
	if err != nil {
		return fmt.Errorf("listen for placements: %w", err)
	}
	tick := time.NewTicker(m.cfg.Schedule)
	defer tick.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	m.prune(ctx)
	for {
		if err := m.schedule(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("schedule failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-deps:
		case <-places:
		case <-tick.C:
		case <-prune.C:
			m.prune(ctx)
		}
	}
}

// prune deletes the hit buckets and finished GitHub jobs older than the
// retention.
func (m *Manager) prune(ctx context.Context) {
	before := time.Now().Add(-m.cfg.Retention)
	hits, jobs, err := m.store.Prune(ctx, before, before)
	switch {
	case err != nil && ctx.Err() == nil:
		m.log.Warn("prune failed", "err", err)
	case hits+jobs > 0:
		m.log.Info("pruned", "hit_buckets", hits, "github_jobs", jobs, "older_than", m.cfg.Retention)
	}
}

// schedule runs one round of the scheduler.
func (m *Manager) schedule(ctx context.Context) error {
	deps, err := m.store.DeploymentsByStatus(ctx, store.StatusPending, store.StatusPreparing)
	if err != nil {
		return fmt.Errorf("read open deployments: %w", err)
	}
	workers, err := m.liveWorkers(ctx)
	if err != nil {
		return err
	}
	for _, d := range deps {
		var err error
		switch d.Status {
		case store.StatusPending:
			err = m.place(ctx, d, workers)
		case store.StatusPreparing:
			err = m.settle(ctx, d, workers)
		}
		if err != nil {
			m.log.Warn("schedule deployment failed", "deployment", d.ID, "err", err)
		}
	}
	if err := m.rebalance(ctx, workers); err != nil {
		return err
	}
	return m.retire(ctx)
}

func (m *Manager) liveWorkers(ctx context.Context) ([]store.Worker, error) {
	all, err := m.store.Workers(ctx)
	if err != nil {
		return nil, fmt.Errorf("read workers: %w", err)
	}
	cutoff := time.Now().Add(-m.cfg.WorkerTimeout)
	var live []store.Worker
	for _, w := range all {
		if w.SeenAt.After(cutoff) {
			live = append(live, w)
		}
	}
	return live, nil
}

// place assigns a pending deployment to live workers (see pick), claiming
// it so that a second scheduler cannot place it too.
func (m *Manager) place(ctx context.Context, d store.Deployment, workers []store.Worker) error {
	if len(workers) == 0 {
		return nil // stays pending until a worker shows up
	}
	load, err := m.load(ctx)
	if err != nil {
		return err
	}
	names := m.pick(d.Runtime, workers, load, nil)
	ok, err := m.store.PlaceDeployment(ctx, d.ID, names)
	if err != nil || !ok {
		return err
	}
	return m.store.Notify(ctx, ChannelPlacements, strconv.FormatInt(d.ID, 10))
}

// settle promotes a deployment once no live worker is still preparing it
// and at least one succeeded, or fails it when none did.
func (m *Manager) settle(ctx context.Context, d store.Deployment, workers []store.Worker) error {
	ps, err := m.store.Placements(ctx, d.ID)
	if err != nil {
		return err
	}
	live := make(map[string]bool, len(workers))
	for _, w := range workers {
		live[w.Name] = true
	}
	ready, failed := 0, ""
	for _, p := range ps {
		switch p.State {
		case store.PlacementPending:
			if live[p.Worker] {
				return nil
			}
			// A worker that stopped heartbeating will not report back.
			if failed == "" {
				failed = fmt.Sprintf("worker %s stopped responding while preparing", p.Worker)
			}
		case store.PlacementReady:
			ready++
		case store.PlacementFailed:
			if failed == "" {
				failed = p.Error
			}
		}
	}
	if len(ps) == 0 {
		// Its placements vanished (workers removed): place it again.
		return m.store.SetDeploymentStatus(ctx, d.ID, store.StatusPending, "")
	}
	comp, err := m.store.Component(ctx, d.Component)
	if err != nil {
		return err
	}
	if ready == 0 {
		m.log.Warn("deployment failed", "component", d.Component, "deployment", d.ID, "reason", failed)
		if err := m.store.SetDeploymentStatus(ctx, d.ID, store.StatusFailed, failed); err != nil {
			return err
		}
		if comp.Target == d.ID {
			if err := m.store.SetTarget(ctx, d.Component, comp.Live); err != nil {
				return err
			}
		}
		return m.routesChanged(ctx, d.Component)
	}
	if comp.Target == d.ID {
		if err := m.store.Promote(ctx, d.Component, d.ID); err != nil {
			return err
		}
		if err := m.routesChanged(ctx, d.Component); err != nil {
			return err
		}
		m.log.Info("deployment live", "component", d.Component, "deployment", d.ID)
	}
	return m.store.SetDeploymentStatus(ctx, d.ID, store.StatusReady, "")
}

// routesChanged tells routers that what component serves has changed.
func (m *Manager) routesChanged(ctx context.Context, component string) error {
	if err := m.store.Notify(ctx, ChannelRoutes, component); err != nil {
		return err
	}
	if m.cfg.RoutesChanged != nil {
		return m.cfg.RoutesChanged(ctx)
	}
	return nil
}

// retire removes the placements of deployments that are neither live nor
// being rolled out, once routers have had the grace period to switch.
func (m *Manager) retire(ctx context.Context) error {
	comps, err := m.store.Components(ctx)
	if err != nil {
		return fmt.Errorf("read components: %w", err)
	}
	removed := false
	for _, c := range comps {
		if time.Since(c.UpdatedAt) < m.cfg.Grace {
			continue
		}
		ps, err := m.store.ComponentPlacements(ctx, c.Name)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Deployment == c.Live || p.Deployment == c.Target {
				continue
			}
			if err := m.store.DeletePlacement(ctx, p.Deployment, p.Worker); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		return m.store.Notify(ctx, ChannelPlacements, "")
	}
	return nil
}
