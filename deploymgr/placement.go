package deploymgr

import (
	"context"
	"errors"
	"fmt"
	"slices"

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
	load, err := m.store.PlacementCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("count placements: %w", err)
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
	var changed []int64                     // deployments placed or unplaced
	judge := m.judging()
	for _, p := range all {
		if !live[p.Worker] {
			if !judge {
				continue
			}
			if err := m.store.DeletePlacement(ctx, p.Deployment, p.Worker); err != nil && !isNotFound(err) {
				return err
			}
			m.log.Info("placement removed from dead worker", "deployment", p.Deployment, "worker", p.Worker)
			changed = append(changed, p.Deployment)
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
				if ch {
					changed = append(changed, c.Live)
				}
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
				changed = append(changed, d.ID)
			}
		}
	}
	if len(changed) > 0 {
		slices.Sort(changed)
		if err := m.placementsChanged(ctx, slices.Compact(changed)); err != nil {
			return err
		}
		return m.store.Notify(ctx, store.RoutesChanged())
	}
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
