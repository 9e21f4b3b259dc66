package deploymgr

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// replicas is how many of live workers a deployment of runtime is placed on.
func (m *Manager) replicas(runtime string, live int) int {
	n := m.cfg.DockerReplicas
	if runtime != "docker" {
		n = m.cfg.WasmReplicas
		if n <= 0 {
			n = live
		}
	}
	return min(n, live)
}

// load counts the placements on each worker.
func (m *Manager) load(ctx context.Context) (map[string]int, error) {
	all, err := m.store.AllPlacements(ctx)
	if err != nil {
		return nil, err
	}
	load := make(map[string]int)
	for _, p := range all {
		load[p.Worker]++
	}
	return load, nil
}

// pick chooses the workers a deployment of runtime should get, beyond
// those in has: the least loaded live workers first (ties by name), until
// the deployment is on replicas(runtime) workers. It counts the choice in
// load.
func (m *Manager) pick(runtime string, workers []store.Worker, load map[string]int, has map[string]bool) []string {
	return pickUpTo(m.replicas(runtime, len(workers)), workers, load, has)
}

// pickUpTo chooses the least loaded workers (ties by name) not in has
// until has and the choice hold total, and counts the choice in load.
func pickUpTo(total int, workers []store.Worker, load map[string]int, has map[string]bool) []string {
	want := total - len(has)
	if want <= 0 {
		return nil
	}
	cands := make([]string, 0, len(workers))
	for _, w := range workers {
		if !has[w.Name] {
			cands = append(cands, w.Name)
		}
	}
	slices.SortStableFunc(cands, func(a, b string) int {
		if load[a] != load[b] {
			return load[a] - load[b]
		}
		if a < b {
			return -1
		}
		return 1
	})
	cands = cands[:min(want, len(cands))]
	for _, c := range cands {
		load[c]++
	}
	return cands
}

// rebalance keeps every live deployment on as many live workers as it
// should be: it removes the placements of workers whose heartbeat
// expired and places live deployments on other live workers in their
// stead, or on workers that joined since. The router only sends traffic to
// ready placements, so a new placement takes traffic once its worker has
// prepared it.
func (m *Manager) rebalance(ctx context.Context, workers []store.Worker) error {
	all, err := m.store.AllPlacements(ctx)
	if err != nil {
		return fmt.Errorf("read placements: %w", err)
	}
	live := make(map[string]bool, len(workers))
	for _, w := range workers {
		live[w.Name] = true
	}
	load := make(map[string]int)
	held := make(map[int64]map[string]bool) // deployment → live workers holding it
	changed := false
	judge := time.Since(m.scheduling) >= m.cfg.WorkerTimeout
	for _, p := range all {
		if !live[p.Worker] {
			if !judge {
				continue
			}
			if err := m.store.DeletePlacement(ctx, p.Deployment, p.Worker); err != nil && !isNotFound(err) {
				return err
			}
			m.log.Info("placement removed from dead worker", "deployment", p.Deployment, "worker", p.Worker)
			changed = true
			continue
		}
		load[p.Worker]++
		if held[p.Deployment] == nil {
			held[p.Deployment] = make(map[string]bool)
		}
		held[p.Deployment][p.Worker] = true
	}
	if len(workers) > 0 {
		comps, err := m.store.Components(ctx)
		if err != nil {
			return fmt.Errorf("read components: %w", err)
		}
		for _, c := range comps {
			if c.Live == 0 {
				continue
			}
			has := held[c.Live]
			if c.Runtime == "docker" && m.cfg.DockerTargetRPS > 0 {
				ch, err := m.autoscale(ctx, c, workers, load, has)
				if err != nil {
					return err
				}
				changed = changed || ch
				continue
			}
			if len(has) >= m.replicas(c.Runtime, len(workers)) && c.Runtime != "" {
				continue
			}
			d, err := m.store.Deployment(ctx, c.Live)
			if err != nil {
				if isNotFound(err) {
					continue
				}
				return err
			}
			for _, w := range m.pick(d.Runtime, workers, load, has) {
				if err := m.store.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: w, State: store.PlacementPending}); err != nil {
					if isNotFound(err) {
						continue // worker or deployment removed meanwhile
					}
					return fmt.Errorf("place %d on %s: %w", d.ID, w, err)
				}
				m.log.Info("live deployment placed on another worker", "component", c.Name, "deployment", d.ID, "worker", w)
				changed = true
			}
		}
	}
	if changed {
		if err := m.store.Notify(ctx, ChannelPlacements, ""); err != nil {
			return err
		}
		return m.store.Notify(ctx, ChannelRoutes, "")
	}
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// autoscale keeps a live Docker deployment on as many workers as its
// request rate needs, with hysteresis: it adds a replica (on the least
// loaded worker without one) when the rate per replica is over
// DockerTargetRPS, and removes one (from the most loaded worker) only when
// the remaining replicas would each see under half of it; never below
// DockerReplicas or above the live workers, and at most one change per
// ScaleCooldown. The rate is the routers' hit count over the last two
// minutes, so it survives a deploymgr failover.
func (m *Manager) autoscale(ctx context.Context, c store.Component, workers []store.Worker, load map[string]int, has map[string]bool) (bool, error) {
	now := time.Now()
	cur := len(has)
	lo, hi := min(m.cfg.DockerReplicas, len(workers)), len(workers)
	want := min(max(cur, lo), hi)
	if m.scaled == nil {
		m.scaled = map[string]time.Time{}
	}
	if cur > 0 && now.Sub(m.scaled[c.Name]) >= m.cfg.ScaleCooldown {
		since := now.Add(-2 * time.Minute).Truncate(time.Minute)
		hits, err := m.store.Stats(ctx, c.Name, since)
		if err != nil {
			return false, err
		}
		var n int64
		for _, h := range hits {
			n += h.Hits
		}
		rate := float64(n) / now.Sub(since).Seconds()
		switch {
		case rate/float64(cur) > m.cfg.DockerTargetRPS && cur < hi:
			want = cur + 1
		case cur > lo && rate/float64(cur-1) < m.cfg.DockerTargetRPS/2:
			want = cur - 1
		}
		if want != cur {
			m.log.Info("autoscaling", "component", c.Name, "deployment", c.Live, "rps", int(rate), "from", cur, "to", want)
		}
	}
	switch {
	case want > cur:
		d, err := m.store.Deployment(ctx, c.Live)
		if err != nil {
			return false, err
		}
		changed := false
		for _, w := range pickUpTo(want, workers, load, has) {
			if err := m.store.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: w, State: store.PlacementPending}); err != nil && !isNotFound(err) {
				return changed, err
			}
			changed = true
		}
		if changed && cur > 0 {
			m.scaled[c.Name] = now
		}
		return changed, nil
	case want < cur:
		// The most loaded worker gives its replica up; routers skip it
		// once their table changes, and a call that still reaches it
		// is answered "not served here" and sent to another.
		var victim string
		for w := range has {
			if victim == "" || load[w] > load[victim] || (load[w] == load[victim] && w > victim) {
				victim = w
			}
		}
		if err := m.store.DeletePlacement(ctx, c.Live, victim); err != nil && !isNotFound(err) {
			return false, err
		}
		load[victim]--
		m.scaled[c.Name] = now
		return true, nil
	}
	return false, nil
}
