package deploymgr

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/events"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// Events is what the invocations API needs from the event engine
// (events.Engine).
type Events interface {
	Invocation(ctx context.Context, id int64) (api.Invocation, error)
	Invocations(ctx context.Context, component, state string, limit int) ([]api.Invocation, error)
	Component(ctx context.Context, id int64) (string, error)
	Replay(ctx context.Context, id int64) error
	Discard(ctx context.Context, id int64) error
	Counts(ctx context.Context, component string) (api.EventCounts, error)
	Schedules(ctx context.Context, component string, list []manifest.Schedule) ([]api.Schedule, error)
}

// invocationRoutes registers the invocations API on the /api/v1 group.
func (m *Manager) invocationRoutes(g *echo.Group) {
	g.GET("/invocations/:id", m.getInvocation)
	g.POST("/invocations/:id/replay", m.replayInvocation)
	g.DELETE("/invocations/:id", m.discardInvocation)
	g.GET("/components/:name/invocations", m.listInvocations)
}

var errNoEvents = echo.NewHTTPError(http.StatusServiceUnavailable, "the event engine is not running on this server")

// invocationID reads :id and checks that the caller reaches its component;
// an invocation of a component they cannot reach does not exist for them.
func (m *Manager) invocationID(c echo.Context) (int64, error) {
	if m.cfg.Events == nil {
		return 0, errNoEvents
	}
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, echo.NewHTTPError(http.StatusNotFound, "no such invocation")
	}
	ctx := c.Request().Context()
	name, err := m.cfg.Events.Component(ctx, id)
	if err != nil {
		return 0, invocationErr(err)
	}
	comp, err := m.store.Component(ctx, name)
	if err != nil {
		return 0, invocationErr(err)
	}
	if ok, err := m.allowed(c, comp); err != nil {
		return 0, err
	} else if !ok {
		return 0, invocationErr(store.ErrNotFound)
	}
	return id, nil
}

func invocationErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return echo.NewHTTPError(http.StatusNotFound, "no such invocation")
	case errors.Is(err, events.ErrRunning):
		return echo.NewHTTPError(http.StatusConflict, "the invocation is running; try again when it is done")
	}
	return err
}

func (m *Manager) getInvocation(c echo.Context) error {
	id, err := m.invocationID(c)
	if err != nil {
		return err
	}
	inv, err := m.cfg.Events.Invocation(c.Request().Context(), id)
	if err != nil {
		return invocationErr(err)
	}
	return c.JSON(http.StatusOK, inv)
}

func (m *Manager) replayInvocation(c echo.Context) error {
	id, err := m.invocationID(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if err := m.cfg.Events.Replay(ctx, id); err != nil {
		return invocationErr(err)
	}
	inv, err := m.cfg.Events.Invocation(ctx, id)
	if err != nil {
		return invocationErr(err)
	}
	return c.JSON(http.StatusOK, inv)
}

func (m *Manager) discardInvocation(c echo.Context) error {
	id, err := m.invocationID(c)
	if err != nil {
		return err
	}
	if err := m.cfg.Events.Discard(c.Request().Context(), id); err != nil {
		return invocationErr(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (m *Manager) listInvocations(c echo.Context) error {
	if m.cfg.Events == nil {
		return errNoEvents
	}
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	state := c.QueryParam("state")
	if state != "" && !events.ValidState(state) {
		return inputErr("state %q: want queued, running, succeeded, failed or dead", state)
	}
	limit := 100
	if s := c.QueryParam("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 {
			return inputErr("limit %q: want a positive number", s)
		}
	}
	list, err := m.cfg.Events.Invocations(c.Request().Context(), comp.Name, state, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, list)
}
