package deploymgr

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
		m.reclaimWanted = true
	}
	m.pruneRouters(ctx)
	m.reclaim(ctx)
}

// reclaim gives the store's free space back (Store.ReclaimSpace: SQLite's
// free pages, and its WAL cut to nothing) when something asked for it,
// at most every Grace: a burst of deploys reclaims once in a while, and
// always a Grace after its last one (the pass dropLater runs in).
func (m *Manager) reclaim(ctx context.Context) {
	if !m.reclaimWanted {
		return
	}
	if wait := m.cfg.Grace - time.Since(m.reclaimed); wait > 0 {
		m.armSweep(wait)
		return
	}
	m.reclaimWanted, m.reclaimed = false, time.Now()
	if err := m.store.ReclaimSpace(ctx); err != nil && ctx.Err() == nil {
		m.log.Warn("reclaim store space failed", "err", err)
	}
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
	m.dropLater(ctx)
	m.reclaim(ctx)
	if time.Since(m.watched) >= m.cfg.Schedule {
		m.watched = time.Now()
		if err := m.watch(ctx); err != nil {
			return err
		}
	}
	// A full sweep reads every component and placement, which at
	// thousands of components costs far more than the deployments above:
	// it runs every Config.Sweep, when the live workers change (or start
	// being judged), after a note naming no component, and with Docker
	// autoscaling (which follows the request rates) on every pass; at
	// most every sweepEvery, the pass that puts it off arming sweepDue.
	// In between only the components something happened to are looked
	// at (m.dirty).
	key := workersKey(workers, m.judging())
	full := m.sweepWanted || key != m.workersKey || time.Since(m.swept) >= m.cfg.Sweep || m.cfg.DockerTargetRPS > 0
	if full {
		if wait := sweepEvery - time.Since(m.swept); wait > 0 && m.sweepDue != nil {
			m.armSweep(wait)
			full = false
		}
	}
	if full {
		m.swept, m.workersKey, m.sweepWanted = time.Now(), key, false
		if err := m.rebalance(ctx, workers); err != nil {
			return err
		}
		if err := m.retire(ctx); err != nil {
			return err
		}
	} else if err := m.retireDirty(ctx); err != nil {
		return err
	}
	if next := m.nextDirty(); !next.IsZero() {
		m.armSweep(time.Until(next))
	}
	return nil
}

// sweepEvery is the least time between two full sweeps of the scheduler
// (rebalance, retire), and the longest a component marked dirty waits to
// be looked at: a fraction of Grace, so retiring keeps its clock.
const sweepEvery = 250 * time.Millisecond

// armSweep makes the scheduler run a pass in d (or sooner, if armed
// sooner already).
func (m *Manager) armSweep(d time.Duration) {
	if m.sweepDue == nil {
		return // not running (tests calling schedule directly)
	}
	d = max(d, time.Millisecond)
	at := time.Now().Add(d)
	if m.sweepArmed && !m.sweepAt.After(at) {
		return
	}
	m.sweepDue.Stop()
	m.sweepDue.Reset(d)
	m.sweepArmed, m.sweepAt = true, at
}

// workersKey names a set of live workers and whether dead ones are
// judged: when it changes, deployments may need other workers.
func workersKey(ws []store.Worker, judging bool) string {
	names := make([]string, 0, len(ws))
	for _, w := range ws {
		names = append(names, w.Name)
	}
	slices.Sort(names)
	return strconv.FormatBool(judging) + " " + strings.Join(names, " ")
}

// markDirty says that what component serves changed: its placements are
// looked at for retiring at the latest sweepEvery from now.
func (m *Manager) markDirty(component string) {
	if component == "" {
		m.sweepWanted = true
	} else {
		m.dirtyAt(component, time.Now().Add(sweepEvery))
	}
	m.armSweep(sweepEvery)
}

// nextDirty is when the next dirty component is due (zero: none is).
func (m *Manager) nextDirty() time.Time {
	var next time.Time
	for _, at := range m.dirty {
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

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
	m.changes.changed(d.ID) // preparing now
	return m.store.Notify(ctx, store.PlacementsChanged(d.ID))
}

// settle promotes a deployment once no live worker is still preparing it
// and at least one succeeded, or fails it when none did.
func (m *Manager) settle(ctx context.Context, d store.Deployment, workers []store.Worker) error {
	ps, err := m.store.Placements(ctx, d.ID)
	if err != nil {
		return err
	}
	setStatus := func(status, msg string) error {
		defer m.changes.changed(d.ID) // the API's waits for it read it again
		return m.store.SetDeploymentStatus(ctx, d.ID, status, msg)
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
			return setStatus(store.StatusFailed,
				fmt.Sprintf("superseded by deployment %d before it was ready", comp.Target))
		}
		// Its placements vanished (workers removed): place it again.
		return setStatus(store.StatusPending, "")
	}
	if ready == 0 || failed != "" && healthGated(d) {
		// A health-gated deployment goes live only where every worker
		// it is placed on passed the check.
		m.log.Warn("deployment failed", "component", d.Component, "deployment", d.ID, "reason", failed)
		if err := setStatus(store.StatusFailed, failed); err != nil {
			return err
		}
		m.markDirty(d.Component) // its placements go
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
	if err := setStatus(store.StatusReady, ""); err != nil {
		return err
	}
	m.markDirty(d.Component) // the version before it goes, or it does (superseded)
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
// its last deployment settled, for the artifacts that were too fresh then
// (and the records that waited for them), and asks for the store's space
// back: the burst of deploys is over, whatever went.
func (m *Manager) dropLater(ctx context.Context) {
	for c, at := range m.redrop {
		if wait := m.cfg.Grace - time.Since(at); wait > 0 {
			m.armSweep(wait)
			continue
		}
		delete(m.redrop, c)
		m.dropArtifacts(ctx, c)
		m.reclaimWanted = true
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
// versions go. It reads every component and placement (a full sweep);
// retireDirty looks at the components marked dirty alone.
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
	seen, waiting, err := m.retireOf(ctx, all, current)
	if err != nil {
		return err
	}
	for d := range m.superseded {
		if !seen[d] {
			delete(m.superseded, d) // gone, or current again (a rollback)
		}
	}
	// What waits for its Grace is looked at again then, by component
	// (rare here: a change the scheduler was told of marks its component
	// dirty itself).
	for d, due := range waiting {
		dep, err := m.store.Deployment(ctx, d)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return err
		}
		m.dirtyAt(dep.Component, due)
	}
	return nil
}

// retireDirty is retire for the components marked dirty whose time has
// come, each read alone: a deploy costs the same at ten components and at
// ten thousand.
func (m *Manager) retireDirty(ctx context.Context) error {
	now := time.Now()
	for c, at := range m.dirty {
		if at.After(now) {
			continue
		}
		delete(m.dirty, c)
		if err := m.retireComponent(ctx, c); err != nil {
			m.dirtyAt(c, now.Add(sweepEvery)) // again, next time
			return err
		}
	}
	return nil
}

// retireComponent is retire for component c's placements alone.
func (m *Manager) retireComponent(ctx context.Context, c string) error {
	comp, err := m.store.Component(ctx, c)
	if isNotFound(err) {
		return nil // removed, and its placements with it
	} else if err != nil {
		return fmt.Errorf("read component %s: %w", c, err)
	}
	ro, err := m.store.Rollout(ctx, c)
	if err != nil {
		return err
	}
	ps, err := m.store.ComponentPlacements(ctx, c)
	if err != nil {
		return err
	}
	current := map[int64]bool{comp.Live: true, comp.Target: true, ro.Canary: true}
	for _, p := range ps {
		if current[p.Deployment] {
			delete(m.superseded, p.Deployment) // current again (a rollback)
		}
	}
	_, waiting, err := m.retireOf(ctx, ps, current)
	for _, due := range waiting {
		m.dirtyAt(c, due)
	}
	return err
}

// dirtyAt marks component dirty for at (or sooner, if it is already).
func (m *Manager) dirtyAt(component string, at time.Time) {
	if m.dirty == nil {
		m.dirty = map[string]time.Time{}
	}
	if was, ok := m.dirty[component]; !ok || was.After(at) {
		m.dirty[component] = at
	}
}

// retireOf removes the placements of ps whose deployment is not in
// current once it has been so for a Grace, starting the clock of those
// seen so for the first time, and tells the workers. It returns the
// deployments of ps not current, and of those when each still placed
// is due.
func (m *Manager) retireOf(ctx context.Context, ps []store.Placement, current map[int64]bool) (seen map[int64]bool, waiting map[int64]time.Time, err error) {
	if m.superseded == nil {
		m.superseded = map[int64]time.Time{}
	}
	now := time.Now()
	seen, waiting = map[int64]bool{}, map[int64]time.Time{}
	var removed []int64
	for _, p := range ps {
		if current[p.Deployment] {
			continue
		}
		seen[p.Deployment] = true
		since, ok := m.superseded[p.Deployment]
		if !ok {
			m.superseded[p.Deployment], since = now, now
		}
		if now.Sub(since) < m.cfg.Grace {
			waiting[p.Deployment] = since.Add(m.cfg.Grace)
			continue
		}
		if err = m.store.DeletePlacement(ctx, p.Deployment, p.Worker); err != nil && !isNotFound(err) {
			break
		}
		err = nil
		if !slices.Contains(removed, p.Deployment) {
			removed = append(removed, p.Deployment)
		}
	}
	if len(removed) > 0 {
		if nerr := m.placementsChanged(ctx, removed); err == nil {
			err = nerr
		}
		m.dropRetired(ctx, removed)
	}
	return seen, waiting, err
}

// dropRetired drops the old artifacts of the components of ds, whose
// placements were just removed: the drop passes after the deploys that
// replaced them (dropOldArtifacts, dropLater) spared them while they were
// placed, and none may come before the component's next deploy.
func (m *Manager) dropRetired(ctx context.Context, ds []int64) {
	done := map[string]bool{}
	for _, id := range ds {
		d, err := m.store.Deployment(ctx, id)
		if err != nil || done[d.Component] {
			continue // gone (its record, after its artifact), or done
		}
		done[d.Component] = true
		m.dropArtifacts(ctx, d.Component)
	}
}

// placementsChanged tells workers that the placements of ds changed: one
// note each, or one for all beyond maxNamedNotes.
func (m *Manager) placementsChanged(ctx context.Context, ds []int64) error {
	if len(ds) > maxNamedNotes {
		return m.store.Notify(ctx, store.PlacementsChanged(0))
	}
	for _, d := range ds {
		if err := m.store.Notify(ctx, store.PlacementsChanged(d)); err != nil {
			return err
		}
	}
	return nil
}

// maxNamedNotes is how many changed deployments get a note each; beyond
// it one note says "many" (workers then read all their placements).
const maxNamedNotes = 32

// dropOldArtifacts removes the artifacts of component's deployments older
// than its newest KeepDeployments, unless a deployment kept (of any
// component, or live, or rolling out) has the same digest or the artifact
// was stored within the last Grace (an upload of it may be under way), and
// the records older than its newest KeepRecords; a pass a Grace later
// (armed here, not left to the next tick) does it again for what was too
// fresh now.
func (m *Manager) dropOldArtifacts(ctx context.Context, component string) {
	if m.redrop == nil {
		m.redrop = map[string]time.Time{}
	}
	m.redrop[component] = time.Now()
	m.armSweep(m.cfg.Grace)
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
	// Their build logs go too; the records stay a while longer, as
	// history (KeepRecords), and the space of all goes back to the file
	// system (reclaim, at most every Grace).
	logs, err := m.store.TrimBuildLogs(ctx, component, m.cfg.KeepDeployments)
	if err != nil && ctx.Err() == nil {
		m.log.Warn("trim old build logs failed", "component", component, "err", err)
	}
	recs, err := m.store.PruneDeployments(ctx, component, m.cfg.KeepRecords)
	if err != nil && ctx.Err() == nil {
		m.log.Warn("prune old deployment records failed", "component", component, "err", err)
	}
	if n > 0 || logs > 0 || recs > 0 {
		m.reclaimWanted = true
	}
}
