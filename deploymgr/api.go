package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/hist"
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
	g.GET("/components/:name", m.getComponent)
	g.DELETE("/components/:name", m.deleteComponent)
	g.POST("/components/:name/deployments", m.postDeployment)
	g.GET("/components/:name/deployments", m.listDeployments)
	g.POST("/components/:name/pause", m.pause(true))
	g.POST("/components/:name/resume", m.pause(false))
	g.POST("/components/:name/rollback", m.rollback)
	g.GET("/components/:name/stats", m.stats)
	g.GET("/components/:name/logs", m.logs)
	g.GET("/deployments/:id", m.getDeployment)
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
		status, msg = http.StatusBadRequest, ie.Msg
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
		ad := m.apiDeployment(d, comp)
		ac.Live = &ad
	}
	if comp.Target != comp.Live && comp.Target != 0 {
		d, err := m.store.Deployment(ctx, comp.Target)
		if err != nil {
			return ac, fmt.Errorf("read target deployment %d: %w", comp.Target, err)
		}
		ad := m.apiDeployment(d, comp)
		ac.Target = &ad
	}
	switch {
	case comp.Paused:
		ac.Status = "paused"
	case ac.Target != nil:
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

func (m *Manager) apiDeployment(d store.Deployment, comp store.Component) api.Deployment {
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
		Live:      comp.Live == d.ID,
		Error:     d.Error,
		URL:       m.ComponentURL(d.Component),
		CreatedAt: d.CreatedAt,
		UpdatedAt: d.UpdatedAt,
	}
}

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
	body := http.MaxBytesReader(c.Response(), r.Body, m.cfg.Limits.Compressed+1)
	d, err := m.Deploy(r.Context(), DeployRequest{
		Name:    c.Param("name"),
		Archive: body,
		Source:  SourceUpload,
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
	return c.JSON(http.StatusAccepted, m.apiDeployment(d, comp))
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
		out = append(out, m.apiDeployment(d, comp))
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
	ad := m.apiDeployment(d, comp)
	if ad.BuildLog, err = m.store.BuildLog(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return c.JSON(http.StatusOK, ad)
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
		if err := m.routesChanged(ctx, comp.Name); err != nil {
			return err
		}
		m.log.Info("component paused", "component", comp.Name, "paused", paused, "by", c.Get(ctxUser))
		comp.Paused = paused
		ac, err := m.apiComponent(ctx, comp, true)
		if err != nil {
			return err
		}
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
	return c.JSON(http.StatusAccepted, m.apiDeployment(d, comp))
}

// Rollback makes deployment id of comp (0: the newest ready one older than
// the live one) the target again; the scheduler re-places it and promotes
// it once prepared, exactly as a new deployment.
func (m *Manager) Rollback(ctx context.Context, comp store.Component, id int64) (store.Deployment, error) {
	if id == 0 {
		ds, err := m.store.Deployments(ctx, comp.Name, 1000)
		if err != nil {
			return store.Deployment{}, err
		}
		for _, d := range ds {
			if d.ID < comp.Live && d.Status == store.StatusReady {
				id = d.ID
				break
			}
		}
		if id == 0 {
			return store.Deployment{}, &ConflictError{Msg: fmt.Sprintf("component %q has no earlier successful deployment to roll back to", comp.Name)}
		}
	}
	d, err := m.store.Deployment(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && d.Component != comp.Name) {
		return store.Deployment{}, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("component %q has no deployment %d", comp.Name, id))
	} else if err != nil {
		return store.Deployment{}, err
	}
	if d.Status == store.StatusFailed {
		return store.Deployment{}, &ConflictError{Msg: fmt.Sprintf("deployment %d failed (%s); roll back to one that succeeded", id, d.Error)}
	}
	if id == comp.Live && comp.Target == comp.Live {
		return d, nil // already live
	}
	if err := m.store.SetDeploymentStatus(ctx, id, store.StatusPending, ""); err != nil {
		return store.Deployment{}, err
	}
	if err := m.store.SetTarget(ctx, comp.Name, id); err != nil {
		return store.Deployment{}, err
	}
	_ = m.store.AppendBuildLog(ctx, id, fmt.Sprintf("rollback of %s to deployment %d requested\n", comp.Name, id))
	_ = m.store.Notify(ctx, ChannelDeployments, strconv.FormatInt(id, 10))
	d.Status = store.StatusPending
	return d, nil
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
	_ = m.store.Notify(ctx, ChannelPlacements, "")
	m.log.Info("component deleted", "component", comp.Name, "by", c.Get(ctxUser))
	return c.NoContent(http.StatusNoContent)
}

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
		})
		out.Hits += h.Hits
		out.Errors += h.Errors
	}
	return c.JSON(http.StatusOK, out)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func apiLog(l store.LogLine) api.LogLine {
	return api.LogLine{ID: l.ID, Time: l.Time, Deployment: l.Deployment, Stream: l.Stream, Line: l.Line}
}

func (m *Manager) logs(c echo.Context) error {
	ctx := c.Request().Context()
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	tail := 100
	if s := c.QueryParam("tail"); s != "" {
		if tail, err = strconv.Atoi(s); err != nil || tail < 0 || tail > 10000 {
			return echo.NewHTTPError(http.StatusBadRequest, "tail: want a number from 0 to 10000")
		}
	}
	follow := c.QueryParam("follow")
	if follow == "" || follow == "0" || follow == "false" {
		lines, err := m.store.TailLogs(ctx, comp.Name, tail)
		if err != nil {
			return err
		}
		out := make([]api.LogLine, 0, len(lines))
		for _, l := range lines {
			out = append(out, apiLog(l))
		}
		return c.JSON(http.StatusOK, out)
	}
	return m.followLogs(c, comp.Name, tail)
}

// followLogs streams a component's log as Server-Sent Events until the
// client goes away.
func (m *Manager) followLogs(c echo.Context, name string, tail int) error {
	ctx := c.Request().Context()
	changes, err := m.store.Listen(ctx, ChannelLogs)
	if err != nil {
		return err
	}
	var after int64
	var backlog []store.LogLine
	if id := c.Request().Header.Get("Last-Event-ID"); id != "" {
		if after, err = strconv.ParseInt(id, 10, 64); err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "Last-Event-ID is not a log line id")
		}
	} else {
		// Start after the newest line, whether or not it is sent as
		// backlog: following means what comes next.
		n := max(tail, 1)
		if backlog, err = m.store.TailLogs(ctx, name, n); err != nil {
			return err
		}
		if len(backlog) > 0 {
			after = backlog[len(backlog)-1].ID
		}
		backlog = backlog[max(len(backlog)-tail, 0):]
	}
	w := c.Response()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(lines []store.LogLine) error {
		for _, l := range lines {
			data, _ := json.Marshal(apiLog(l))
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", l.ID, data); err != nil {
				return err
			}
			after = l.ID
		}
		w.Flush()
		return nil
	}
	if err := send(backlog); err != nil {
		return nil
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	poll := time.NewTicker(2 * time.Second)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-keepalive.C:
			if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil {
				return nil
			}
			w.Flush()
			continue
		case who := <-changes:
			if who != "" && who != name {
				continue
			}
		case <-poll.C:
		}
		lines, err := m.store.Logs(ctx, name, after, 1000)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("read logs failed", "component", name, "err", err)
			continue
		}
		if err := send(lines); err != nil {
			return nil
		}
	}
}
