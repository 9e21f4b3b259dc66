package deploymgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

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
	w, err := parseWait(c)
	if err != nil {
		return err
	}
	d, comp, err := m.deploymentFor(c, id)
	if err != nil {
		return err
	}
	if w.wait > 0 {
		if d, comp, err = m.awaitChange(c, id, d, comp, w); err != nil {
			return err
		}
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

// deploymentFor reads deployment id and its component, as the caller may
// see them (404 otherwise).
func (m *Manager) deploymentFor(c echo.Context, id int64) (store.Deployment, store.Component, error) {
	ctx := c.Request().Context()
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
		return d, comp, echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no deployment %d", id))
	}
	return d, comp, err
}

// MaxWait bounds the wait of GET /deployments/{id}?wait=.
const MaxWait = time.Minute

// waitQuery is what a caller of GET /deployments/{id} waits for: an
// answer once the deployment's status differs from status or its
// liveness from live (each only when given), at most wait from now.
type waitQuery struct {
	wait   time.Duration
	status string
	live   *bool
}

func parseWait(c echo.Context) (waitQuery, error) {
	var w waitQuery
	if s := c.QueryParam("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > MaxWait {
			return w, echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("wait %q: want a duration up to %s, such as 30s", s, MaxWait))
		}
		w.wait = d
	}
	w.status = c.QueryParam("status")
	if s := c.QueryParam("live"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return w, echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("live %q: want true or false", s))
		}
		w.live = &b
	}
	return w, nil
}

// differs reports whether what the caller saw is out of date.
func (w waitQuery) differs(status string, live bool) bool {
	return (w.status != "" && status != w.status) || (w.live != nil && live != *w.live) || (w.status == "" && w.live == nil)
}

// waitRecheck is how often a waiting GET /deployments/{id} reads the
// deployment again without being told of a change (a status set by the
// scheduler of another process sends no note of its own).
const waitRecheck = time.Second

// awaitChange waits, for the caller of GET /deployments/{id}?wait=, until
// deployment id differs from what it saw, or the wait or its request
// ends; it returns the deployment then. It is woken by this process's
// scheduler (m.changes) and by the store's notes about placements and
// routes, and reads the deployment again at least every waitRecheck: a
// waiting client costs a read per change, not one per few milliseconds.
func (m *Manager) awaitChange(c echo.Context, id int64, d store.Deployment, comp store.Component, w waitQuery) (store.Deployment, store.Component, error) {
	ctx, cancel := context.WithTimeout(c.Request().Context(), w.wait)
	defer cancel()
	places, err := m.store.Listen(ctx, store.ChannelPlacements)
	if err != nil {
		return d, comp, err
	}
	routes, err := m.store.Listen(ctx, store.ChannelRoutes)
	if err != nil {
		return d, comp, err
	}
	recheck := time.NewTicker(waitRecheck)
	defer recheck.Stop()
	for {
		changed, done := m.changes.watch(id) // before the read: a change after it wakes us
		if w.differs(d.Status, m.live(c.Request().Context(), comp, d)) {
			done()
			return d, comp, nil
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				done()
				if err := c.Request().Context().Err(); err != nil {
					return d, comp, err // the caller went away
				}
				return d, comp, nil // waited long enough: as it is
			case <-changed:
				break wait
			case n, ok := <-places:
				if !ok {
					places = nil
				} else if n.Resync() || n.Deployment() == id {
					break wait
				}
			case n, ok := <-routes:
				if !ok {
					routes = nil
				} else if n.Component() == "" || n.Component() == comp.Name {
					break wait
				}
			case <-recheck.C:
				break wait
			}
		}
		done()
		if d, comp, err = m.deploymentFor(c, id); err != nil {
			return d, comp, err
		}
	}
}

// deploymentChanges wakes the waits of GET /deployments/{id}?wait= of
// this process when the scheduler here changes a deployment's status or
// it becomes live.
type deploymentChanges struct {
	mu    sync.Mutex
	waits map[int64]*changeWait
}

type changeWait struct {
	ch   chan struct{}
	refs int
}

// watch returns a channel closed at the next change of deployment id, and
// the func to call once done with it.
func (dc *deploymentChanges) watch(id int64) (<-chan struct{}, func()) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.waits == nil {
		dc.waits = map[int64]*changeWait{}
	}
	w := dc.waits[id]
	if w == nil {
		w = &changeWait{ch: make(chan struct{})}
		dc.waits[id] = w
	}
	w.refs++
	return w.ch, func() {
		dc.mu.Lock()
		defer dc.mu.Unlock()
		if w.refs--; w.refs == 0 && dc.waits[id] == w {
			delete(dc.waits, id)
		}
	}
}

// changed wakes the waits for deployment id.
func (dc *deploymentChanges) changed(id int64) {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if w := dc.waits[id]; w != nil {
		close(w.ch)
		delete(dc.waits, id)
	}
}

// routingSet holds the deployments being promoted (Manager.routing); the
// end of a promotion wakes the waits for it.
type routingSet struct {
	sync.Map // int64 → struct{}
	changes  *deploymentChanges
}

// Delete ends deployment key's promotion.
func (r *routingSet) Delete(key any) {
	r.Map.Delete(key)
	if id, ok := key.(int64); ok && r.changes != nil {
		r.changes.changed(id)
	}
}
