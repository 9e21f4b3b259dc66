package deploymgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

func (m *Manager) postDeployment(c echo.Context) error {
	r := c.Request()
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/gzip", "application/x-gzip", "application/octet-stream":
	default:
		return echo.NewHTTPError(http.StatusUnsupportedMediaType,
			fmt.Sprintf("Content-Type %q: send the component as a .tar.gz with Content-Type: application/gzip", ct))
	}
	if sc, err := m.callerScope(c); err != nil {
		return err
	} else if !sc.all {
		// Only the admin creates components by upload; others may upload
		// to the components of repositories they reach.
		if _, err := m.component(c); err != nil {
			return err
		}
	}
	canary := 0
	if q := c.QueryParam("canary"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 || n > 99 {
			return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("canary %q: want 1 to 99 (percent of the calls)", q))
		}
		canary = n
	}
	body := http.MaxBytesReader(c.Response(), r.Body, m.cfg.Limits.Compressed+1)
	d, err := m.Deploy(r.Context(), DeployRequest{
		Name:    c.Param("name"),
		Archive: body,
		Source:  SourceUpload,
		Canary:  canary,
	})
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("archive larger than %d bytes", m.cfg.Limits.Compressed))
		}
		return err
	}
	comp, err := m.store.Component(r.Context(), d.Component)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, m.apiDeployment(r.Context(), d, comp))
}

func (m *Manager) listDeployments(c echo.Context) error {
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	limit := 50
	if s := c.QueryParam("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
			return echo.NewHTTPError(http.StatusBadRequest, "limit: want a number from 1 to 1000")
		}
	}
	ds, err := m.store.Deployments(c.Request().Context(), comp.Name, limit)
	if err != nil {
		return err
	}
	out := make([]api.Deployment, 0, len(ds))
	for _, d := range ds {
		out = append(out, m.apiDeployment(c.Request().Context(), d, comp))
	}
	return c.JSON(http.StatusOK, out)
}

func (m *Manager) getDeployment(c echo.Context) error {
	ctx := c.Request().Context()
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("deployment id %q is not a number", c.Param("id")))
	}
	d, err := m.store.Deployment(ctx, id)
	var comp store.Component
	if err == nil {
		comp, err = m.store.Component(ctx, d.Component)
	}
	if err == nil {
		var ok bool
		if ok, err = m.allowed(c, comp); err == nil && !ok {
			err = store.ErrNotFound
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no deployment %d", id))
	} else if err != nil {
		return err
	}
	ad := m.apiDeployment(ctx, d, comp)
	if ad.BuildLog, err = m.store.BuildLog(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	var mf manifest.Manifest
	if len(d.Manifest) > 0 {
		if err := json.Unmarshal(d.Manifest, &mf); err != nil {
			return fmt.Errorf("manifest of deployment %d: %w", id, err)
		}
		ad.Env = mf.Env
	}
	return c.JSON(http.StatusOK, ad)
}
