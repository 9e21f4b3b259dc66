package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// rolloutStore is what canaries and automatic rollback need of the store.
type rolloutStore interface {
	Rollout(ctx context.Context, component string) (store.Rollout, error)
	Rollouts(ctx context.Context) ([]store.Rollout, error)
	PromotedRollouts(ctx context.Context, since time.Time) ([]store.Rollout, error)
	SetCanary(ctx context.Context, component string, deployment int64, weight int) error
	DeploymentStats(ctx context.Context, deployment int64, since time.Time) ([]store.Hits, error)
	AppendLogs(ctx context.Context, lines []store.LogLine) error
}

// Automatic rollback thresholds (see watch).
const (
	// RollbackMinErrors is how many failed calls a new deployment must
	// have answered before it can be rolled back.
	RollbackMinErrors = 10
	// RollbackRate is the error rate above which it is.
	RollbackRate = 0.05
)

// promote serves POST /components/{name}/deployments/{id}/promote with
// {"weight": N}: N of 100 calls go to the deployment, beside the live one
// (a canary); 100 makes it live; 0 ends the canary.
func (m *Manager) promote(c echo.Context) error {
	ctx := c.Request().Context()
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("bad deployment %q", c.Param("id")))
	}
	var req api.Promote
	if err := json.NewDecoder(io.LimitReader(c.Request().Body, 1<<16)).Decode(&req); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, `promote body: want {"weight": 0-100}: `+err.Error())
	}
	d, warning, err := m.Promote(ctx, comp, id, req.Weight)
	if err != nil {
		return err
	}
	m.log.Info("deployment promoted", "component", comp.Name, "deployment", id, "weight", req.Weight, "by", c.Get(ctxUser))
	comp, err = m.store.Component(ctx, comp.Name)
	if err != nil {
		return err
	}
	ad := m.apiDeployment(ctx, d, comp)
	ad.Warning = warning
	return c.JSON(http.StatusOK, ad)
}

// Promote gives deployment id of comp weight percent of the calls: 1-99
// makes it the component's canary (placed first if it is not), 100 makes
// it live at once (it must be ready), 0 ends it being the canary. It
// returns once every router serves the change, at most Config.RouterWait;
// then with a warning naming the routers that lag (see changeServed).
func (m *Manager) Promote(ctx context.Context, comp store.Component, id int64, weight int) (store.Deployment, string, error) {
	d, served, err := m.promote1(ctx, comp, id, weight)
	if err != nil || served == nil {
		return d, "", err
	}
	warning, err := served()
	return d, warning, err
}

// promote1 is Promote up to the wait, which it returns (nil: no change).
func (m *Manager) promote1(ctx context.Context, comp store.Component, id int64, weight int) (store.Deployment, func() (string, error), error) {
	changed := func() (string, error) { return m.changeServed(ctx, comp.Name) }
	if weight < 0 || weight > 100 {
		return store.Deployment{}, nil, inputErr("weight %d: want 0 to 100 (percent of the calls)", weight)
	}
	d, err := m.store.Deployment(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && d.Component != comp.Name) {
		return store.Deployment{}, nil, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("component %q has no deployment %d", comp.Name, id))
	} else if err != nil {
		return store.Deployment{}, nil, err
	}
	ro, err := m.store.Rollout(ctx, comp.Name)
	if err != nil {
		return store.Deployment{}, nil, err
	}
	switch {
	case weight == 0:
		if ro.Canary == id {
			if err := m.store.SetCanary(ctx, comp.Name, 0, 0); err != nil {
				return store.Deployment{}, nil, err
			}
			m.componentLog(ctx, comp.Name, id, fmt.Sprintf("canary deployment %d ended: deployment %d takes every call", id, comp.Live))
		}
		return d, changed, nil
	case d.Status == store.StatusFailed:
		return store.Deployment{}, nil, &ConflictError{Msg: fmt.Sprintf("deployment %d failed (%s)", id, d.Error)}
	case id == comp.Live:
		if weight == 100 {
			return d, nil, nil
		}
		return store.Deployment{}, nil, &ConflictError{Msg: fmt.Sprintf("deployment %d is live: it takes every call already", id)}
	case weight == 100:
		if d.Status != store.StatusReady || ro.Canary != id {
			return store.Deployment{}, nil, &ConflictError{Msg: fmt.Sprintf("deployment %d is %s and not the canary: make it one first (weight 1-99), or roll back to it", id, d.Status)}
		}
		// Not live to the API until the routers serve it, as in settle.
		m.routing.Store(id, struct{}{})
		v, err := m.store.PromoteVersioned(ctx, comp.Name, id)
		if err == nil {
			err = m.announced(ctx, comp.Name, v)
		}
		if err != nil {
			m.routing.Delete(id)
			return store.Deployment{}, nil, err
		}
		m.componentLog(ctx, comp.Name, id, fmt.Sprintf("canary deployment %d promoted: it takes every call", id))
		return d, func() (string, error) {
			defer m.routing.Delete(id)
			return m.waitServed(ctx, comp.Name, v)
		}, nil
	}
	if comp.Live == 0 {
		return store.Deployment{}, nil, &ConflictError{Msg: fmt.Sprintf("component %q has no live deployment to share calls with", comp.Name)}
	}
	if d.Status == store.StatusSkipped {
		return store.Deployment{}, nil, &ConflictError{Msg: fmt.Sprintf("deployment %d was skipped (%s): it has no artifact to place", id, d.Error)}
	}
	// Checked before anything changes: a canary whose artifact was dropped
	// could never be placed. (Once it is the canary, DropArtifacts spares
	// it.)
	if err := m.artifactKept(ctx, d); err != nil {
		return store.Deployment{}, nil, err
	}
	if err := m.store.SetCanary(ctx, comp.Name, id, weight); err != nil {
		return store.Deployment{}, nil, err
	}
	if d.Status == store.StatusReady && ro.Canary != id {
		// Not placed any more (an older deployment): the scheduler places
		// it again, and the router sends it its share once it is ready.
		if err := m.store.SetDeploymentStatus(ctx, id, store.StatusPending, ""); err != nil {
			return store.Deployment{}, nil, err
		}
		d.Status = store.StatusPending
		m.notify(ctx, store.DeploymentChanged(id))
	}
	m.componentLog(ctx, comp.Name, id, fmt.Sprintf("deployment %d is the canary: %d %% of the calls, deployment %d the rest", id, weight, comp.Live))
	return d, changed, nil
}

// componentLog writes a line about the component from Velo into its logs
// (velo logs, the dashboard); a failure is logged.
func (m *Manager) componentLog(ctx context.Context, component string, deployment int64, line string) {
	err := m.store.AppendLogs(ctx, []store.LogLine{{Component: component, Deployment: deployment, Time: time.Now(), Stream: "velo", Line: line}})
	if err != nil {
		m.log.Warn("write component log failed", "component", component, "err", err)
	}
}

// watch rolls back, by itself, a deployment whose calls fail far more
// often than its predecessor's did, within its watch window after it was
// promoted (manifest auto_rollback, default manifest.DefaultWatch): when
// at least RollbackMinErrors of its calls failed (5xx, timeouts), more than
// RollbackRate of them, and clearly more than the previous deployment's
// rate over the same length of time before the promotion (twice it plus
// one point).
func (m *Manager) watch(ctx context.Context) error {
	now := time.Now()
	ros, err := m.store.PromotedRollouts(ctx, now.Add(-manifest.MaxWatch))
	if err != nil {
		return fmt.Errorf("read rollouts: %w", err)
	}
	for _, ro := range ros {
		if ro.Previous == 0 || ro.PromotedAt.IsZero() || now.Sub(ro.PromotedAt) > manifest.MaxWatch {
			continue
		}
		comp, err := m.store.Component(ctx, ro.Component)
		if err != nil {
			if isNotFound(err) {
				continue
			}
			return err
		}
		if comp.Live == 0 || comp.Live == ro.Previous || comp.Target != comp.Live {
			continue // a rollout (or a rollback) under way
		}
		live, err := m.store.Deployment(ctx, comp.Live)
		if err != nil {
			return err
		}
		window := autoRollbackOf(live).Window()
		if window == 0 || now.Sub(ro.PromotedAt) > window || live.Status != store.StatusReady {
			continue
		}
		newHits, newErrs, err := m.deploymentCounts(ctx, live.ID, ro.PromotedAt, now)
		if err != nil {
			return err
		}
		if newErrs < RollbackMinErrors || newHits == 0 {
			continue
		}
		oldHits, oldErrs, err := m.deploymentCounts(ctx, ro.Previous, ro.PromotedAt.Add(-window), ro.PromotedAt)
		if err != nil {
			return err
		}
		newRate, oldRate := float64(newErrs)/float64(newHits), 0.0
		if oldHits > 0 {
			oldRate = float64(oldErrs) / float64(oldHits)
		}
		if newRate <= RollbackRate || newRate <= 2*oldRate+0.01 {
			continue
		}
		reason := fmt.Sprintf("rolled back: %s errors vs %s", percent(newRate), percent(oldRate))
		if err := m.autoRollback(ctx, comp, live, ro.Previous, reason, newErrs, newHits); err != nil {
			m.log.Warn("automatic rollback failed", "component", comp.Name, "deployment", live.ID, "err", err)
		}
	}
	return nil
}

// autoRollback makes previous live again in bad's stead and says why
// everywhere a person looks: bad's status and build log, the component's
// logs, Velo's log and GitHub.
func (m *Manager) autoRollback(ctx context.Context, comp store.Component, bad store.Deployment, previous int64, reason string, errs, hits int64) error {
	m.log.Warn("deployment rolled back automatically", "component", comp.Name, "deployment", bad.ID,
		"to", previous, "reason", reason, "errors", errs, "calls", hits)
	if _, err := m.Rollback(ctx, comp, previous); err != nil {
		return err
	}
	if err := m.store.SetDeploymentStatus(ctx, bad.ID, store.StatusFailed, reason); err != nil {
		return err
	}
	_ = m.store.AppendBuildLog(ctx, bad.ID, fmt.Sprintf("%s (%d of %d calls failed since it went live); deployment %d is live again\n", reason, errs, hits, previous))
	m.componentLog(ctx, comp.Name, bad.ID, fmt.Sprintf("deployment %d %s (%d of %d calls failed); deployment %d serves again", bad.ID, reason, errs, hits, previous))
	if m.github != nil {
		m.github.rolledBack(ctx, bad, reason)
	}
	return nil
}

// deploymentCounts sums a deployment's calls and failed calls in the
// minutes from since to until.
func (m *Manager) deploymentCounts(ctx context.Context, deployment int64, since, until time.Time) (hits, errs int64, err error) {
	rows, err := m.store.DeploymentStats(ctx, deployment, since)
	if err != nil {
		return 0, 0, err
	}
	for _, h := range rows {
		if h.Minute.After(until) {
			break
		}
		hits += h.Hits
		errs += h.Errors
	}
	return hits, errs, nil
}

// autoRollbackOf reads a deployment's auto_rollback setting.
func autoRollbackOf(d store.Deployment) manifest.AutoRollback {
	var m struct {
		AutoRollback manifest.AutoRollback `json:"auto_rollback"`
	}
	_ = json.Unmarshal(d.Manifest, &m)
	return m.AutoRollback
}

// percent writes a rate as people read it: "42 %", "0.3 %", "0 %".
func percent(r float64) string {
	p := r * 100
	switch {
	case p == 0:
		return "0 %"
	case p < 10:
		return strconv.FormatFloat(p, 'f', 1, 64) + " %"
	}
	return strconv.FormatFloat(p, 'f', 0, 64) + " %"
}
