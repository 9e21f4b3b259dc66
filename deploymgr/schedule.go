package deploymgr

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

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
	m.pruneRouters(ctx)
}

// schedule runs one round of the scheduler.
func (m *Manager) schedule(ctx context.Context) error {
	deps, err := m.store.DeploymentsByStatus(ctx, store.StatusPending, store.StatusPreparing)
	if err != nil {
		// The store is away: no worker can heartbeat meanwhile, so no
		// worker is judged dead until it has been back a WorkerTimeout
		// (see judging). Judged at once, every worker would look dead
		// after an outage longer than that, and lose its placements.
		if !m.away {
			m.away, m.lost = true, m.reached // the store's last sign before this gap
		}
		m.scheduling = time.Now()
		return fmt.Errorf("read open deployments: %w", err)
	}
	m.reached = time.Now()
	if m.away {
		// Back: the workers' heartbeats are judged a WorkerTimeout from
		// now, not from the last failed read (which may be a while ago).
		m.away, m.scheduling = false, m.reached
	}
	workers, err := m.liveWorkers(ctx)
	if err != nil {
		return err
	}
	var load map[string]int // read once per pass, by the first place
	for _, d := range deps {
		var err error
		switch d.Status {
		case store.StatusPending:
			err = m.place(ctx, d, workers, &load)
		case store.StatusPreparing:
			err = m.settle(ctx, d, workers)
		}
		if err != nil {
			m.log.Warn("schedule deployment failed", "deployment", d.ID, "err", err)
		}
	}
	// The sweeps read every component and placement, which at thousands
	// of components costs far more than the deployments above: during a
	// burst of deploys (a pass per notification) they run at most every
	// sweepEvery, the pass that skips them arming sweepDue.
	if wait := sweepEvery - time.Since(m.swept); wait > 0 && m.sweepDue != nil {
		if !m.sweepArmed {
			m.sweepArmed = true
			m.sweepDue.Reset(wait)
		}
		return nil
	}
	m.swept = time.Now()
	if err := m.rebalance(ctx, workers); err != nil {
		return err
	}
	m.dropLater(ctx)
	if err := m.watch(ctx); err != nil {
		return err
	}
	return m.retire(ctx)
}

// sweepEvery is the least time between two sweeps of the scheduler
// (rebalance, retire): a fraction of Grace, so retiring keeps its clock.
const sweepEvery = 250 * time.Millisecond

func (m *Manager) liveWorkers(ctx context.Context) ([]store.Worker, error) {
	all, err := m.store.Workers(ctx)
	if err != nil {
		return nil, fmt.Errorf("read workers: %w", err)
	}
	cutoff := time.Now().Add(-m.cfg.WorkerTimeout)
	if !m.judging() {
		// Right after a start or a store outage heartbeats are as old as
		// the gap: as the router does, judge them against the freshest.
		var freshest time.Time
		for _, w := range all {
			if w.SeenAt.After(freshest) {
				freshest = w.SeenAt
			}
		}
		if c := freshest.Add(-m.cfg.WorkerTimeout); c.Before(cutoff) {
			cutoff = c
		}
		// And after an outage only the silence while the store could be
		// reached counts (before lost and since it is back): against the
		// freshest alone, a worker that had not beaten yet when another
		// had would look dead.
		if since := time.Since(m.scheduling); !m.lost.IsZero() && m.lost.Before(m.scheduling) {
			if c := m.lost.Add(-(m.cfg.WorkerTimeout - since)); c.Before(cutoff) {
				cutoff = c
			}
		}
	}
	var live []store.Worker
	for _, w := range all {
		if w.SeenAt.After(cutoff) {
			live = append(live, w)
		}
	}
	return live, nil
}

// judging reports whether workers that missed their heartbeats are judged
// dead: only once the scheduler has read the store for a WorkerTimeout
// without a failure, since it started or since the store was last away, so
// that every live worker has had the time to heartbeat.
func (m *Manager) judging() bool { return time.Since(m.scheduling) >= m.cfg.WorkerTimeout }

// place assigns a pending deployment to live workers (see pick), claiming
// it so that a second scheduler cannot place it too.
// *load is the workers' load, read by the first place of a pass and kept
// up to date by pick for the next ones.
func (m *Manager) place(ctx context.Context, d store.Deployment, workers []store.Worker, load *map[string]int) error {
	if len(workers) == 0 {
		return nil // stays pending until a worker shows up
	}
	if *load == nil {
		l, err := m.load(ctx)
		if err != nil {
			return err
		}
		*load = l
	}
	names := m.pick(d.Runtime, workers, *load, nil)
	ok, err := m.store.PlaceDeployment(ctx, d.ID, names)
	if err != nil || !ok {
		return err
	}
	return m.store.Notify(ctx, store.PlacementsChanged(d.ID))
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
			if live[p.Worker] || !m.judging() {
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
	comp, err := m.store.Component(ctx, d.Component)
	if err != nil {
		return err
	}
	ro, err := m.store.Rollout(ctx, d.Component)
	if err != nil {
		return err
	}
	canary := ro.Canary == d.ID
	if len(ps) == 0 {
		if d.ID != comp.Target && d.ID != comp.Live && !canary {
			// Retired (see retire) before any worker was done with it.
			return m.store.SetDeploymentStatus(ctx, d.ID, store.StatusFailed,
				fmt.Sprintf("superseded by deployment %d before it was ready", comp.Target))
		}
		// Its placements vanished (workers removed): place it again.
		return m.store.SetDeploymentStatus(ctx, d.ID, store.StatusPending, "")
	}
	if ready == 0 || failed != "" && healthGated(d) {
		// A health-gated deployment goes live only where every worker
		// it is placed on passed the check.
		m.log.Warn("deployment failed", "component", d.Component, "deployment", d.ID, "reason", failed)
		if err := m.store.SetDeploymentStatus(ctx, d.ID, store.StatusFailed, failed); err != nil {
			return err
		}
		if comp.Target == d.ID {
			if err := m.store.SetTarget(ctx, d.Component, comp.Live); err != nil {
				return err
			}
		}
		if canary {
			if err := m.store.SetCanary(ctx, d.Component, 0, 0); err != nil {
				return err
			}
		}
		return m.routesChanged(ctx, d.Component)
	}
	if comp.Target == d.ID {
		m.routing.Store(d.ID, struct{}{})
		version, err := m.store.PromoteVersioned(ctx, d.Component, d.ID)
		if err == nil {
			err = m.announced(ctx, d.Component, version)
		}
		if err != nil {
			m.routing.Delete(d.ID)
			return err
		}
		// Live to the API once every router serves it.
		m.awaitRouters(d, version)
		m.log.Info("deployment live", "component", d.Component, "deployment", d.ID)
	}
	if err := m.store.SetDeploymentStatus(ctx, d.ID, store.StatusReady, ""); err != nil {
		return err
	}
	if canary {
		// Ready: the routers give it its share from now on.
		if err := m.routesChanged(ctx, d.Component); err != nil {
			return err
		}
		m.log.Info("canary ready", "component", d.Component, "deployment", d.ID, "weight", ro.Weight)
	}
	m.dropOldArtifacts(ctx, d.Component)
	return nil
}

// healthGated reports whether d's manifest has a health check.
func healthGated(d store.Deployment) bool {
	var m struct {
		Health *manifest.Health `json:"health"`
	}
	return json.Unmarshal(d.Manifest, &m) == nil && m.Health != nil
}

// dropLater runs dropOldArtifacts again for each component a Grace after
// its last deployment settled, for the artifacts that were too fresh then.
func (m *Manager) dropLater(ctx context.Context) {
	for c, at := range m.redrop {
		if time.Since(at) >= m.cfg.Grace {
			delete(m.redrop, c)
			m.dropArtifacts(ctx, c)
		}
	}
}

// routesChanged tells routers that what component serves has changed:
// they read its routes again.
func (m *Manager) routesChanged(ctx context.Context, component string) error {
	_, err := m.announce(ctx, component)
	return err
}

// retire removes the placements of deployments that are neither live nor
// being rolled out, a Grace after the scheduler first saw them so, which
// gives routers the time to switch. The clock runs per deployment: a
// component redeployed more often than every Grace still sees its old
// versions go.
func (m *Manager) retire(ctx context.Context) error {
	comps, err := m.store.Components(ctx)
	if err != nil {
		return fmt.Errorf("read components: %w", err)
	}
	all, err := m.store.AllPlacements(ctx)
	if err != nil {
		return fmt.Errorf("read placements: %w", err)
	}
	current := make(map[int64]bool, 2*len(comps))
	for _, c := range comps {
		current[c.Live], current[c.Target] = true, true
	}
	ros, err := m.store.Rollouts(ctx)
	if err != nil {
		return fmt.Errorf("read rollouts: %w", err)
	}
	for _, ro := range ros {
		current[ro.Canary] = true // 0 is no deployment
	}
	if m.superseded == nil {
		m.superseded = map[int64]time.Time{}
	}
	now := time.Now()
	seen := make(map[int64]bool)
	removed := false
	for _, p := range all {
		if current[p.Deployment] {
			continue
		}
		seen[p.Deployment] = true
		since, ok := m.superseded[p.Deployment]
		if !ok {
			m.superseded[p.Deployment] = now
			continue
		}
		if now.Sub(since) < m.cfg.Grace {
			continue
		}
		if err := m.store.DeletePlacement(ctx, p.Deployment, p.Worker); err != nil && !isNotFound(err) {
			return err
		}
		removed = true
	}
	for d := range m.superseded {
		if !seen[d] {
			delete(m.superseded, d) // gone, or current again (a rollback)
		}
	}
	if removed {
		return m.store.Notify(ctx, store.PlacementsChanged(0))
	}
	return nil
}

// dropOldArtifacts removes the artifacts of component's deployments older
// than its newest KeepDeployments, unless a deployment kept (of any
// component, or live, or rolling out) has the same digest or the artifact
// was stored within the last Grace (an upload of it may be under way).
func (m *Manager) dropOldArtifacts(ctx context.Context, component string) {
	if m.redrop == nil {
		m.redrop = map[string]time.Time{}
	}
	m.redrop[component] = time.Now()
	m.dropArtifacts(ctx, component)
}

func (m *Manager) dropArtifacts(ctx context.Context, component string) {
	n, err := m.store.DropArtifacts(ctx, component, m.cfg.KeepDeployments, time.Now().Add(-m.cfg.Grace))
	switch {
	case err != nil && ctx.Err() == nil:
		m.log.Warn("drop old artifacts failed", "component", component, "err", err)
	case n > 0:
		m.log.Info("dropped artifacts of old deployments", "component", component, "count", n, "kept", m.cfg.KeepDeployments)
	}
	// Their build logs go too (the deployment records stay, as history),
	// and the space of both goes back to the file system.
	logs, err := m.store.TrimBuildLogs(ctx, component, m.cfg.KeepDeployments)
	if err != nil && ctx.Err() == nil {
		m.log.Warn("trim old build logs failed", "component", component, "err", err)
	}
	if n > 0 || logs > 0 {
		if err := m.store.ReclaimSpace(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("reclaim store space failed", "err", err)
		}
	}
}
