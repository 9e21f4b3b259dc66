package deploymgr

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/store"
)

// Handler serves the REST API under /api/v1 and /healthz.
func (m *Manager) Handler() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = m.errorHandler
	e.GET("/healthz", func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	g := e.Group("/api/v1", m.requireAuth)
	g.GET("/components", m.listComponents)
	g.POST("/components", m.startComponent)
	g.POST("/tokens", m.createToken)
	g.GET("/repos", m.listRepos)
	g.GET("/tokens", m.listTokens)
	g.DELETE("/tokens/:id", m.deleteToken)
	g.GET("/components/:name", m.getComponent)
	g.DELETE("/components/:name", m.deleteComponent)
	g.POST("/components/:name/deployments", m.postDeployment)
	g.GET("/components/:name/deployments", m.listDeployments)
	g.POST("/components/:name/pause", m.pause(true))
	g.POST("/components/:name/resume", m.pause(false))
	g.POST("/components/:name/rollback", m.rollback)
	g.POST("/components/:name/deployments/:id/promote", m.promote)
	g.GET("/components/:name/stats", m.stats)
	g.GET("/components/:name/logs", m.logs)
	g.POST("/components/:name/shell", m.shell)
	g.GET("/deployments/:id", m.getDeployment)
	m.secretRoutes(g)
	m.keyRoutes(g)
	m.openAPIRoutes(g)
	m.invocationRoutes(g)
	g.Any("/*", func(c echo.Context) error {
		return echo.NewHTTPError(http.StatusNotFound, "no such API endpoint: "+c.Request().Method+" "+c.Request().URL.Path)
	})
	return e
}

// errorHandler answers every error as JSON {"error": "…"} with its status.
func (m *Manager) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, msg := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	var ie *InputError
	var ce *ConflictError
	switch {
	case errors.As(err, &he):
		status = he.Code
		msg = fmt.Sprint(he.Message)
	case errors.As(err, &ie):
		status, msg = http.StatusBadRequest, ie.Error()
		if ie.TooLarge {
			status = http.StatusRequestEntityTooLarge
		}
	case errors.As(err, &ce):
		status, msg = http.StatusConflict, ce.Msg
	case errors.Is(err, store.ErrNotFound):
		status, msg = http.StatusNotFound, "not found"
	default:
		m.log.Error("api request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	_ = c.JSON(status, api.Error{Error: msg})
}

func (m *Manager) component(c echo.Context) (store.Component, error) {
	name := c.Param("name")
	comp, err := m.store.Component(c.Request().Context(), name)
	if err == nil {
		// A component the caller cannot reach does not exist for them.
		var ok bool
		if ok, err = m.allowed(c, comp); err == nil && !ok {
			err = store.ErrNotFound
		}
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Component{}, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no component named %q", name))
	}
	return comp, err
}
