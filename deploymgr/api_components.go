package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

func (m *Manager) listComponents(c echo.Context) error {
	ctx := c.Request().Context()
	comps, err := m.store.Components(ctx)
	if err != nil {
		return err
	}
	sc, err := m.callerScope(c)
	if err != nil {
		return err
	}
	out := make([]api.Component, 0, len(comps))
	for _, comp := range comps {
		if !sc.allows(comp) {
			continue
		}
		ac, err := m.apiComponent(ctx, comp, false)
		if err != nil {
			return err
		}
		out = append(out, ac)
	}
	return c.JSON(http.StatusOK, out)
}

func (m *Manager) getComponent(c echo.Context) error {
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	ac, err := m.apiComponent(c.Request().Context(), comp, true)
	if err != nil {
		return err
	}
	if m.cfg.Events != nil {
		ec, err := m.cfg.Events.Counts(c.Request().Context(), comp.Name)
		if err != nil {
			return err
		}
		ac.Events = &ec
		if comp.Live != 0 {
			if ac.Schedules, err = m.schedulesOf(c.Request().Context(), comp); err != nil {
				return err
			}
		}
	}
	return c.JSON(http.StatusOK, ac)
}

// apiComponent renders a component with its live and target deployments.
func (m *Manager) apiComponent(ctx context.Context, comp store.Component, instances bool) (api.Component, error) {
	ac := api.Component{
		Name:      comp.Name,
		Runtime:   comp.Runtime,
		Paused:    comp.Paused,
		URL:       m.ComponentURL(comp.Name),
		Repo:      comp.Repo,
		Instances: []api.Instance{},
		CreatedAt: comp.CreatedAt,
		UpdatedAt: comp.UpdatedAt,
	}
	if comp.Live != 0 {
		d, err := m.store.Deployment(ctx, comp.Live)
		if err != nil {
			return ac, fmt.Errorf("read live deployment %d: %w", comp.Live, err)
		}
		ad := m.apiDeployment(ctx, d, comp)
		ac.Live = &ad
	}
	if comp.Target != comp.Live && comp.Target != 0 {
		d, err := m.store.Deployment(ctx, comp.Target)
		if err != nil {
			return ac, fmt.Errorf("read target deployment %d: %w", comp.Target, err)
		}
		ad := m.apiDeployment(ctx, d, comp)
		ac.Target = &ad
	}
	if ro, err := m.store.Rollout(ctx, comp.Name); err != nil {
		return ac, err
	} else if ro.Canary != 0 && ro.Canary != comp.Live {
		d, err := m.store.Deployment(ctx, ro.Canary)
		if err != nil {
			return ac, fmt.Errorf("read canary deployment %d: %w", ro.Canary, err)
		}
		ad := m.apiDeployment(ctx, d, comp)
		ac.Canary, ac.CanaryWeight = &ad, ro.Weight
	}
	switch {
	case comp.Paused:
		ac.Status = "paused"
	case ac.Target != nil || (ac.Live != nil && !ac.Live.Live):
		ac.Status = "deploying"
	case comp.Live != 0:
		ac.Status = "live"
	default:
		ac.Status = "new"
		if latest, err := m.store.Deployments(ctx, comp.Name, 1); err == nil && len(latest) == 1 && latest[0].Status == store.StatusFailed {
			ac.Status = "failed"
		}
	}
	if instances {
		ps, err := m.store.ComponentPlacements(ctx, comp.Name)
		if err != nil {
			return ac, err
		}
		for _, p := range ps {
			ac.Instances = append(ac.Instances, api.Instance{Deployment: p.Deployment, Worker: p.Worker, State: p.State, Error: p.Error})
		}
	}
	return ac, nil
}

// live tells whether deployment d of comp is live: the store names it
// and every router serves it — held back by this process while it
// promotes it (see settle), else judged from the routers' reports
// (servedByRouters).
func (m *Manager) live(ctx context.Context, comp store.Component, d store.Deployment) bool {
	if comp.Live != d.ID {
		return false
	}
	if _, routing := m.routing.Load(d.ID); routing {
		return false
	}
	return m.servedByRouters(ctx, d)
}

func (m *Manager) apiDeployment(ctx context.Context, d store.Deployment, comp store.Component) api.Deployment {
	return api.Deployment{
		ID:        d.ID,
		Component: d.Component,
		Digest:    d.Digest,
		Runtime:   d.Runtime,
		Source:    d.Source,
		Commit:    d.Commit,
		Message:   d.Message,
		Author:    d.Author,
		Status:    d.Status,
		Live:      m.live(ctx, comp, d),
		Error:     d.Error,
		URL:       m.ComponentURL(d.Component),
		CreatedAt: d.CreatedAt,
		UpdatedAt: d.UpdatedAt,
	}
}

func (m *Manager) pause(paused bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx := c.Request().Context()
		comp, err := m.component(c)
		if err != nil {
			return err
		}
		if err := m.store.SetPaused(ctx, comp.Name, paused); err != nil {
			return err
		}
		// Answered once the routers act on it (at most RouterWait).
		warning, err := m.changeServed(ctx, comp.Name)
		if err != nil {
			return err
		}
		m.log.Info("component paused", "component", comp.Name, "paused", paused, "by", c.Get(ctxUser))
		comp.Paused = paused
		ac, err := m.apiComponent(ctx, comp, true)
		if err != nil {
			return err
		}
		ac.Warning = warning
		return c.JSON(http.StatusOK, ac)
	}
}

func (m *Manager) rollback(c echo.Context) error {
	ctx := c.Request().Context()
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	var req api.Rollback
	if c.Request().ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(c.Request().Body, 1<<16)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			return echo.NewHTTPError(http.StatusBadRequest, "rollback body: "+err.Error())
		}
	}
	d, err := m.Rollback(ctx, comp, req.Deployment)
	if err != nil {
		return err
	}
	comp, err = m.store.Component(ctx, comp.Name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, m.apiDeployment(ctx, d, comp))
}

// Rollback makes deployment id of comp (0: the newest ready one older than
// the live one whose artifact is kept) the target again; the scheduler re-places it and promotes
// it once prepared, exactly as a new deployment.
func (m *Manager) Rollback(ctx context.Context, comp store.Component, id int64) (store.Deployment, error) {
	if id == 0 {
		ds, err := m.store.Deployments(ctx, comp.Name, 1000)
		if err != nil {
			return store.Deployment{}, err
		}
		for _, d := range ds {
			if d.ID < comp.Live && d.Status == store.StatusReady {
				if ok, err := m.store.HasArtifact(ctx, d.Digest); err != nil {
					return store.Deployment{}, err
				} else if ok {
					id = d.ID
					break
				}
			}
		}
		if id == 0 {
			return store.Deployment{}, &ConflictError{Msg: fmt.Sprintf("component %q has no earlier successful deployment to roll back to", comp.Name)}
		}
	}
	d, err := m.store.Deployment(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && d.Component != comp.Name) {
		return store.Deployment{}, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf(
			"component %q has no deployment %d (the records of deployments older than its newest %d are removed)", comp.Name, id, m.cfg.KeepRecords))
	} else if err != nil {
		return store.Deployment{}, err
	}
	if d.Status == store.StatusFailed {
		return store.Deployment{}, &ConflictError{Msg: fmt.Sprintf("deployment %d failed (%s); roll back to one that succeeded", id, d.Error)}
	}
	if id == comp.Live && comp.Target == comp.Live {
		return d, nil // already live
	}
	if err := m.artifactKept(ctx, d); err != nil {
		return store.Deployment{}, err
	}
	if err := m.store.SetDeploymentStatus(ctx, id, store.StatusPending, ""); err != nil {
		return store.Deployment{}, err
	}
	if err := m.store.SetTarget(ctx, comp.Name, id); err != nil {
		return store.Deployment{}, err
	}
	_ = m.store.AppendBuildLog(ctx, id, fmt.Sprintf("rollback of %s to deployment %d requested\n", comp.Name, id))
	m.notify(ctx, store.DeploymentChanged(id))
	d.Status = store.StatusPending
	return d, nil
}

// artifactKept returns nil if d's artifact is still stored, else a
// ConflictError saying it was removed (DropArtifacts: d is older than the
// newest KeepDeployments) and that the version must be deployed again:
// without it no worker can place d, so rollback and promote refuse it.
func (m *Manager) artifactKept(ctx context.Context, d store.Deployment) error {
	if ok, err := m.store.HasArtifact(ctx, d.Digest); err != nil {
		return err
	} else if !ok {
		return &ConflictError{Msg: fmt.Sprintf(
			"deployment %d is older than the %d newest that are kept for rollback (VELO_KEEP_DEPLOYMENTS); its artifact was removed: deploy that version again",
			d.ID, m.cfg.KeepDeployments)}
	}
	return nil
}

func (m *Manager) deleteComponent(c echo.Context) error {
	ctx := c.Request().Context()
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	if err := m.store.DeleteComponent(ctx, comp.Name); err != nil {
		return err
	}
	if err := m.routesChanged(ctx, comp.Name); err != nil {
		return err
	}
	m.notify(ctx, store.PlacementsChanged(0))
	m.log.Info("component deleted", "component", comp.Name, "by", c.Get(ctxUser))
	return c.NoContent(http.StatusNoContent)
}

// startComponent serves POST /api/v1/components: deploy the head of a
// repository's default branch.
func (m *Manager) startComponent(c echo.Context) error {
	var req api.Start
	if err := json.NewDecoder(io.LimitReader(c.Request().Body, 1<<16)).Decode(&req); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "body: want {\"repo\": \"owner/name\"}: "+err.Error())
	}
	owner, name, ok := strings.Cut(req.Repo, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("repo %q: want owner/name", req.Repo))
	}
	if m.github == nil {
		return echo.NewHTTPError(http.StatusNotFound, "GitHub is not configured on this Velo (see docs/github.md)")
	}
	s, err := m.callerScope(c)
	if err != nil {
		return err
	}
	if !s.allowsRepo(req.Repo) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("the GitHub App is not installed on %s, or your account cannot reach it", req.Repo))
	}
	ctx := c.Request().Context()
	d, err := m.github.Start(ctx, req.Repo)
	if err != nil {
		return err
	}
	comp, err := m.store.Component(ctx, d.Component)
	if err != nil {
		return err
	}
	m.log.Info("repository started", "repo", req.Repo, "component", d.Component, "deployment", d.ID, "by", c.Get(ctxUser))
	return c.JSON(http.StatusAccepted, m.apiDeployment(ctx, d, comp))
}

// schedulesOf describes the live deployment's [[schedule]] tables.
func (m *Manager) schedulesOf(ctx context.Context, comp store.Component) ([]api.Schedule, error) {
	d, err := m.store.Deployment(ctx, comp.Live)
	if err != nil {
		return nil, fmt.Errorf("read live deployment %d: %w", comp.Live, err)
	}
	var mf manifest.Manifest
	if err := json.Unmarshal(d.Manifest, &mf); err != nil || len(mf.Schedules) == 0 {
		return nil, nil
	}
	return m.cfg.Events.Schedules(ctx, comp.Name, mf.Schedules)
}
