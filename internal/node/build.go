package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"time"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker"
	"github.com/velo-run/velo/worker/wasm"
)

// The builders below are shared by `velo up` (Start) and the separate
// roles, so that both wire a part the same way.

// DockerFunc makes a worker's Docker runtime; owner is the worker's name
// (its containers carry it). An error disables Docker components on the
// worker, with the error as the reason.
type DockerFunc func(ctx context.Context, owner string, log *slog.Logger) (worker.Runtime, error)

// Docker returns the DockerFunc of the local engine (DOCKER_HOST and the
// like) with these idle timers (VELO_DOCKER_IDLE_PAUSE,
// VELO_DOCKER_IDLE_STOP; zero means docker's defaults).
func Docker(idlePause, idleStop time.Duration) DockerFunc {
	return func(ctx context.Context, owner string, log *slog.Logger) (worker.Runtime, error) {
		rt, err := docker.New(ctx, docker.Config{Owner: owner, IdlePause: idlePause, IdleStop: idleStop, Logger: log})
		if err != nil {
			return nil, err
		}
		return rt, nil
	}
}

// runtimes makes a worker's runtimes: wasm (returned too, for its
// metrics), with its compile cache in dataDir and no outbound call to
// forbidden, and Docker when mk makes one. unavailable names the runtimes
// left out and why.
func runtimes(ctx context.Context, dataDir, owner string, forbidden []netip.Prefix, mk DockerFunc, log *slog.Logger) (_ []worker.Runtime, _ *wasm.Runtime, unavailable map[string]error, _ error) {
	wasmRT, err := wasm.New(wasm.Config{CacheDir: filepath.Join(dataDir, "wasm-cache"), Logger: log, OutboundForbidden: forbidden,
		BackgroundCompile: true})
	if err != nil {
		return nil, nil, nil, err
	}
	rts, unavailable := []worker.Runtime{wasmRT}, map[string]error{}
	dockerErr := errors.New("no docker runtime configured")
	if mk != nil {
		var rt worker.Runtime
		if rt, dockerErr = mk(ctx, owner, log); dockerErr == nil {
			rts = append(rts, rt)
		}
	}
	if dockerErr != nil {
		unavailable["docker"] = dockerErr
		log.Info("docker components disabled", "reason", dockerErr)
	}
	return rts, wasmRT, unavailable, nil
}

// githubApp connects the GitHub App; nil when cfg is nil.
func githubApp(cfg *github.Config) (*github.App, error) {
	if cfg == nil {
		return nil, nil
	}
	return github.NewApp(*cfg, &http.Client{Timeout: time.Minute})
}

// control is deploymgr's API with its sign-in: what `velo up`, `velo
// deploymgr` and `velo webui` serve.
type control struct {
	mgr      *deploymgr.Manager
	api      http.Handler // mgr.Handler(), built once
	sessions *auth.Sessions
	app      *github.App // nil without GitHub
}

// newControl builds the Manager of mc and the sessions that sign users in
// at signInURL, with GitHub sign-in and access rules when app is set.
func newControl(st *store.Store, mc deploymgr.Config, signInURL string, app *github.App) (*control, error) {
	mgr, err := deploymgr.New(mc, st)
	if err != nil {
		return nil, err
	}
	sessions, err := auth.New(auth.Config{Store: st, PublicURL: signInURL, AdminToken: mc.AdminToken, App: app, Logger: mc.Logger})
	if err != nil {
		return nil, err
	}
	mgr.AddAuthenticator(sessions.Authenticator())
	if app != nil {
		mgr.SetAccess(sessions.Access())
	}
	return &control{mgr: mgr, api: mgr.Handler(), sessions: sessions, app: app}, nil
}

// handle serves the API and sign-in on mux.
func (c *control) handle(mux *http.ServeMux) {
	mux.Handle("/api/", c.api)
	mux.Handle(auth.LoginPath, c.sessions.Handler())
	mux.Handle("/auth/", c.sessions.Handler())
}

// clusterAddrs are the addresses of the cluster a worker knows at start
// (its own advertised one and the database's), which no outbound call of
// a WASM component may reach through a host name.
func clusterAddrs(ctx context.Context, urls ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range urls {
		u, err := url.Parse(s)
		if err != nil || u.Hostname() == "" {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ips, _ := net.DefaultResolver.LookupNetIP(lctx, "ip", u.Hostname())
		cancel()
		for _, ip := range ips {
			out = append(out, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		}
	}
	return out
}
