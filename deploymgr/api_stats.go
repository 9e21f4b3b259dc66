package deploymgr

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/hist"
	"github.com/velo-run/velo/internal/store"
)

// parseSince reads "1h", "30m", "7d".
func parseSince(s string) (time.Duration, error) {
	if s == "" {
		return time.Hour, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d < time.Minute || d > 7*24*time.Hour {
		return 0, fmt.Errorf("since %q: want a duration from 1m to 7d, like 1h or 1d", s)
	}
	return d, nil
}

func (m *Manager) stats(c echo.Context) error {
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	since, err := parseSince(c.QueryParam("since"))
	if err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	now := time.Now().UTC().Truncate(time.Minute)
	from := now.Add(-since + time.Minute)
	rows, err := m.store.Stats(c.Request().Context(), comp.Name, from)
	if err != nil {
		return err
	}
	byMinute := make(map[int64]store.Hits, len(rows))
	for _, h := range rows {
		byMinute[h.Minute.Unix()] = h
	}
	out := api.Stats{Component: comp.Name, Since: since.String(), Buckets: []api.Bucket{}}
	for t := from; !t.After(now); t = t.Add(time.Minute) {
		h := byMinute[t.Unix()]
		out.Buckets = append(out.Buckets, api.Bucket{
			Minute: t,
			Hits:   h.Hits,
			Errors: h.Errors,
			P50ms:  ms(hist.Quantile(h.Latency, 0.50)),
			P99ms:  ms(hist.Quantile(h.Latency, 0.99)),

			Outbound:       h.Outbound,
			OutboundErrors: h.OutboundErrors,
		})
		out.Hits += h.Hits
		out.Errors += h.Errors
		out.Outbound += h.Outbound
		out.OutboundErrors += h.OutboundErrors
	}
	if out.Deployments, err = m.deploymentStats(c.Request().Context(), comp, from); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// deploymentStats are the counts since from of the component's live
// deployment, its canary, and the deployment live before the last
// promotion when that came within the time: side by side.
func (m *Manager) deploymentStats(ctx context.Context, comp store.Component, from time.Time) ([]api.DeploymentStats, error) {
	ro, err := m.store.Rollout(ctx, comp.Name)
	if err != nil {
		return nil, err
	}
	var ids []int64
	for _, id := range []int64{comp.Live, ro.Canary} {
		if id != 0 && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if ro.Previous != 0 && !ro.PromotedAt.Before(from) && !slices.Contains(ids, ro.Previous) {
		ids = append(ids, ro.Previous)
	}
	out := make([]api.DeploymentStats, 0, len(ids))
	for _, id := range ids {
		rows, err := m.store.DeploymentStats(ctx, id, from)
		if err != nil {
			return nil, err
		}
		ds := api.DeploymentStats{Deployment: id}
		var lat []uint64
		for _, h := range rows {
			ds.Hits += h.Hits
			ds.Errors += h.Errors
			lat = hist.Merge(lat, h.Latency)
		}
		ds.P50ms, ds.P99ms = ms(hist.Quantile(lat, 0.50)), ms(hist.Quantile(lat, 0.99))
		out = append(out, ds)
	}
	return out, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
