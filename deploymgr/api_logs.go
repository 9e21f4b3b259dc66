package deploymgr

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/store"
)

// errStreamEnded ends a log stream whose caller lost access.
var errStreamEnded = errors.New("log stream ended: access gone")

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
	return m.followLogs(c, comp, tail)
}

// followLogs streams a component's log as Server-Sent Events until the
// client goes away, or the caller may no longer see it: before each batch
// and every StreamRecheck it checks again that the caller's session or
// token is still good and that they still reach the component, and ends
// the stream when not (a reconnect then gets the API's 401 or 404).
func (m *Manager) followLogs(c echo.Context, comp store.Component, tail int) error {
	ctx := c.Request().Context()
	name := comp.Name
	changes, err := m.store.Listen(ctx, store.ChannelLogs)
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
	allowed := func() bool {
		ok, err := m.stillAllowed(c, comp)
		if err != nil {
			// Unsure is no: the client reconnects and is asked afresh.
			m.log.Warn("recheck log stream access failed; ending the stream", "component", name, "err", err)
		} else if !ok {
			m.log.Info("log stream ended: access gone", "component", name, "user", c.Get(ctxUser))
		}
		return ok
	}
	send := func(lines []store.LogLine) error {
		if len(lines) > 0 && !allowed() {
			return errStreamEnded
		}
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
	recheck := time.NewTicker(m.cfg.StreamRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-recheck.C:
			if !allowed() {
				return nil
			}
			continue
		case <-keepalive.C:
			if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil {
				return nil
			}
			w.Flush()
			continue
		case n, ok := <-changes:
			if !ok {
				changes = nil // the store closed: polling goes on
				continue
			}
			if !n.Resync() && n.Component() != name {
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
