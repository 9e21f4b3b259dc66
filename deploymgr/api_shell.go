package deploymgr

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/shell"
	"github.com/velo-run/velo/internal/store"
)

// ShellDialer opens a shell session on the worker that serves a
// deployment: the connection speaks package shell's frames from the
// worker's side. A refusal before the session starts is a *shell.Error
// with the worker's status (421: the worker does not serve it).
type ShellDialer interface {
	DialShell(ctx context.Context, w store.Worker, deployment int64, req shell.Request, who string) (io.ReadWriteCloser, error)
}

// RemoteShells dials workers at their advertised URL, with the cluster
// token (worker.ShellHandler answers there).
func RemoteShells(clusterToken string) ShellDialer {
	return &remoteShells{token: clusterToken, hc: &http.Client{Transport: &http.Transport{
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		// The worker may have to start a container first.
		ResponseHeaderTimeout: 2 * time.Minute,
		DisableKeepAlives:     true,
		Proxy:                 nil,
	}}}
}

type remoteShells struct {
	token string
	hc    *http.Client
}

func (s *remoteShells) DialShell(ctx context.Context, w store.Worker, d int64, req shell.Request, who string) (io.ReadWriteCloser, error) {
	if w.Addr == "" {
		return nil, &shell.Error{Status: http.StatusMisdirectedRequest, Msg: fmt.Sprintf("worker %s has no address", w.Name)}
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+s.token)
	h.Set(shell.HeaderDeployment, strconv.FormatInt(d, 10))
	h.Set(shell.HeaderUser, who)
	url := strings.TrimSuffix(w.Addr, "/") + shell.WorkerPath + "?" + req.Query().Encode()
	conn, resp, err := shell.Dial(ctx, s.hc, url, h)
	if errors.Is(err, shell.ErrNotUpgraded) {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, &shell.Error{Status: resp.StatusCode, Msg: strings.TrimSpace(string(msg))}
	}
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", w.Name, err)
	}
	return conn, nil
}

// shell runs a command in a running container of the component's live
// deployment: POST /components/{name}/shell as an upgrade to package
// shell's protocol. The caller must reach the component, as for any call
// on it; the session is relayed to a worker that serves the deployment
// and the worker writes who opened it, and how it ended, to the
// component's logs.
func (m *Manager) shell(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	if !shell.IsUpgrade(r) {
		c.Response().Header().Set("Upgrade", shell.Protocol)
		return echo.NewHTTPError(http.StatusUpgradeRequired, "a shell is an upgrade to "+shell.Protocol+" (velo shell NAME)")
	}
	req, err := shell.ParseRequest(r.URL.Query())
	if err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	if comp.Live == 0 {
		return echo.NewHTTPError(http.StatusConflict, fmt.Sprintf("component %q has no live deployment yet", comp.Name))
	}
	dep, err := m.store.Deployment(ctx, comp.Live)
	if err != nil {
		return err
	}
	if dep.Runtime != "docker" {
		return echo.NewHTTPError(http.StatusConflict, fmt.Sprintf("component %q: %s", comp.Name, shell.Unsupported(dep.Runtime)))
	}
	if m.cfg.Shells == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "shells are off on this deploymgr: it needs VELO_CLUSTER_TOKEN to reach the workers")
	}
	workers, err := m.shellWorkers(ctx, dep.ID)
	if err != nil {
		return err
	}
	if len(workers) == 0 {
		return echo.NewHTTPError(http.StatusServiceUnavailable, fmt.Sprintf("no live worker serves deployment %d of %q", dep.ID, comp.Name))
	}
	user, _ := c.Get(ctxUser).(string)
	var conn io.ReadWriteCloser
	var refusal error
	var on store.Worker
	for _, w := range workers {
		conn, err = m.cfg.Shells.DialShell(ctx, w, dep.ID, req, user)
		if err == nil {
			on = w
			break
		}
		refusal = err
		var se *shell.Error
		if errors.As(err, &se) && se.Status != http.StatusMisdirectedRequest {
			break // the worker serves it but cannot run the command
		}
	}
	if conn == nil {
		var se *shell.Error
		if errors.As(refusal, &se) {
			status := se.Status
			if status == http.StatusMisdirectedRequest {
				status = http.StatusServiceUnavailable
			}
			return echo.NewHTTPError(status, se.Msg)
		}
		return echo.NewHTTPError(http.StatusBadGateway, "open shell: "+refusal.Error())
	}
	client, err := shell.Upgrade(c.Response(), r)
	if err != nil {
		conn.Close()
		return nil
	}
	start := time.Now()
	log := m.log.With("component", comp.Name, "deployment", dep.ID, "worker", on.Name, "user", user)
	log.Info("shell opened", "command", req.String(), "tty", req.TTY)
	shell.Splice(client, conn)
	log.Info("shell closed", "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// shellWorkers are the live workers on which deployment d is ready, by
// name.
func (m *Manager) shellWorkers(ctx context.Context, d int64) ([]store.Worker, error) {
	places, err := m.store.Placements(ctx, d)
	if err != nil {
		return nil, err
	}
	all, err := m.store.Workers(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]store.Worker{}
	for _, w := range all {
		byName[w.Name] = w
	}
	var out []store.Worker
	for _, p := range places {
		w, ok := byName[p.Worker]
		if ok && p.State == store.PlacementReady && time.Since(w.SeenAt) < m.cfg.WorkerTimeout {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b store.Worker) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
