package deploymgr

import (
	"context"
	"time"

	"github.com/velo-run/velo/internal/store"
)

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
