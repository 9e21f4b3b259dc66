package deploymgr

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// routerStore is what the deploymgr needs to know which route version
// every router serves (see awaitRouters).
type routerStore interface {
	BumpRouteVersion(ctx context.Context) (int64, error)
	RouteVersion(ctx context.Context) (int64, error)
	Routers(ctx context.Context) ([]store.RouterState, error)
	PruneRouters(ctx context.Context, before time.Time) error
}

// Defaults of Config.RouterWait and Config.RouterTimeout.
const (
	DefaultRouterWait    = 5 * time.Second
	DefaultRouterTimeout = 5 * time.Second
)

// routerPoll is how often the routers' reports are read while a promotion
// waits for them.
const routerPoll = 20 * time.Millisecond

// maxAwaiting bounds the promotions waiting for routers at once; past it a
// promotion is called live without waiting (and the log says so).
const maxAwaiting = 10000

// awaiting is the promotions that wait until every router serves them.
type awaiting struct {
	mu      sync.Mutex
	running bool // Run's waiter is there to release them
	deps    map[int64]awaited
	kick    chan struct{} // cap 1: something new to wait for
}

type awaited struct {
	component string
	version   int64
	deadline  time.Time
}

// announce tells the routers that what component serves has changed
// ("": more than one): it bumps the route version, notifies with it, and
// refreshes the router in this process (Config.RoutesChanged). It returns
// the version every router has to report before it serves the change.
func (m *Manager) announce(ctx context.Context, component string) (int64, error) {
	v, err := m.store.BumpRouteVersion(ctx)
	if err != nil {
		return 0, err
	}
	return v, m.announced(ctx, component, v)
}

// announced is announce for a change whose version v is already bumped
// (PromoteVersioned): it notifies the routers with it and refreshes the
// router in this process.
func (m *Manager) announced(ctx context.Context, component string, v int64) error {
	if err := m.store.Notify(ctx, store.RoutesChangedAt(component, v)); err != nil {
		return err
	}
	if m.cfg.RoutesChanged != nil {
		return m.cfg.RoutesChanged(ctx, component)
	}
	return nil
}

// lagging returns the routers seen within Config.RouterTimeout that do not
// serve route version v yet, as named for a person.
func (m *Manager) lagging(ctx context.Context, v int64) ([]string, error) {
	rs, err := m.store.Routers(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []string
	for _, r := range rs {
		if now.Sub(r.SeenAt) < m.cfg.RouterTimeout && r.Applied < v {
			out = append(out, routerName(r))
		}
	}
	return out, nil
}

// changeServed announces a change of component (announce) and waits until
// every router serves it, at most Config.RouterWait: what the API answers
// a pause, a resume or a canary weight after, so that the answer means the
// routers act on it. When a router lags at the deadline it returns a
// warning naming it (the change is made either way). Any deploymgr may
// call it: it reads only the store.
func (m *Manager) changeServed(ctx context.Context, component string) (warning string, err error) {
	v, err := m.announce(ctx, component)
	if err != nil {
		return "", err
	}
	return m.waitServed(ctx, component, v)
}

// waitServed is changeServed's wait for route version v.
func (m *Manager) waitServed(ctx context.Context, component string, v int64) (warning string, err error) {
	deadline := time.Now().Add(m.cfg.RouterWait)
	tick := time.NewTicker(routerPoll)
	defer tick.Stop()
	for {
		lag, err := m.lagging(ctx, v)
		switch {
		case err == nil && len(lag) == 0:
			return "", nil
		case time.Now().After(deadline):
			why := "router(s) " + strings.Join(lag, ", ") + " did not report serving it"
			if err != nil {
				why = "the routers' reports could not be read: " + err.Error()
			}
			m.log.Warn("change made before every router serves it", "component", component, "reason", why)
			return fmt.Sprintf("not confirmed by every router within %s: %s", m.cfg.RouterWait, why), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
}

// servedByRouters tells whether deployment d, live in the store, is served
// by every router, for a deploymgr that did not promote it itself (one
// not scheduling: it has no hold in routing). PromoteVersioned bumped the
// route version with the promotion, so every router that reports the
// current version or a later one serves it; the check is conservative (a
// later change also has to be served) and ends a RouterWait after the
// promotion, plus a second for the promoter's own deadline and build-log
// line (velo deploy prints it) to come first.
func (m *Manager) servedByRouters(ctx context.Context, d store.Deployment) bool {
	if m.awaiting.isRunning() || time.Since(d.UpdatedAt) > m.cfg.RouterWait+time.Second {
		return true
	}
	v, err := m.store.RouteVersion(ctx)
	if err != nil {
		return false // asked again by the next poll
	}
	lag, err := m.lagging(ctx, v)
	return err == nil && len(lag) == 0
}

// isRunning reports whether Run's waiter holds this process's promotions.
func (a *awaiting) isRunning() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running
}

// awaitRouters keeps deployment d of component marked routing (not yet
// live to the API) until every live router reports route version v or
// later, at most Config.RouterWait. Without Run's waiter (a Manager not
// running) the mark goes at once.
func (m *Manager) awaitRouters(d store.Deployment, v int64) {
	a := &m.awaiting
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.running || len(a.deps) >= maxAwaiting {
		if a.running {
			m.log.Warn("too many promotions waiting for the routers; live without waiting", "component", d.Component, "deployment", d.ID)
		}
		m.routing.Delete(d.ID)
		return
	}
	a.deps[d.ID] = awaited{component: d.Component, version: v, deadline: time.Now().Add(m.cfg.RouterWait)}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// startWaiting readies the waiter; Run calls it before it schedules, then
// runs waitRouters.
func (m *Manager) startWaiting() {
	a := &m.awaiting
	a.mu.Lock()
	a.running, a.deps, a.kick = true, map[int64]awaited{}, make(chan struct{}, 1)
	a.mu.Unlock()
}

// waitRouters releases the promotions awaitRouters holds, as the routers
// report, until ctx is done (then it releases every one).
func (m *Manager) waitRouters(ctx context.Context) {
	a := &m.awaiting
	a.mu.Lock()
	kick := a.kick
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		for id := range a.deps {
			m.routing.Delete(id)
		}
		a.running, a.deps = false, nil
		a.mu.Unlock()
	}()
	tick := time.NewTicker(routerPoll)
	defer tick.Stop()
	for {
		a.mu.Lock()
		n := len(a.deps)
		a.mu.Unlock()
		if n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
		}
		m.releaseServed(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// releaseServed reads the routers' reports once and releases the
// promotions every live router serves, and those past their deadline
// (naming the routers that lag, in the log and the build log).
func (m *Manager) releaseServed(ctx context.Context) {
	rs, err := m.store.Routers(ctx)
	now := time.Now()
	var live []store.RouterState
	for _, r := range rs {
		if now.Sub(r.SeenAt) < m.cfg.RouterTimeout {
			live = append(live, r) // one silent longer is not waited for
		}
	}
	a := &m.awaiting
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, w := range a.deps {
		var lagging []string
		for _, r := range live {
			if r.Applied < w.version {
				lagging = append(lagging, routerName(r))
			}
		}
		switch {
		case err == nil && len(lagging) == 0:
		case now.After(w.deadline):
			why := "router(s) " + strings.Join(lagging, ", ") + " did not report serving it"
			if err != nil {
				why = "the routers' reports could not be read: " + err.Error()
			}
			msg := fmt.Sprintf("routers: live after %s without every router confirming: %s", m.cfg.RouterWait, why)
			m.log.Warn("deployment live before every router serves it", "component", w.component, "deployment", id, "reason", why)
			if err := m.store.AppendBuildLog(ctx, id, msg+"\n"); err != nil && ctx.Err() == nil {
				m.log.Warn("append build log failed", "deployment", id, "err", err)
			}
		default:
			continue
		}
		delete(a.deps, id)
		m.routing.Delete(id)
	}
}

// routerName names r for a person: its address, else its id.
func routerName(r store.RouterState) string {
	if r.Addr != "" {
		return r.Addr + " (" + r.ID + ")"
	}
	return r.ID
}

// pruneRouters forgets routers silent for an hour (killed ones).
func (m *Manager) pruneRouters(ctx context.Context) {
	if err := m.store.PruneRouters(ctx, time.Now().Add(-time.Hour)); err != nil && ctx.Err() == nil {
		m.log.Warn("prune routers failed", "err", err)
	}
}
