package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/events"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/router"
)

// RouterConfig configures `velo router`: it forwards /fn/NAME/… to the
// workers serving NAME.
type RouterConfig struct {
	Cluster
	// ClusterToken authenticates the router to the workers
	// (VELO_CLUSTER_TOKEN). Required.
	ClusterToken string
	// Domain also routes NAME.<Domain> to component NAME (VELO_DOMAIN,
	// --domain).
	Domain string
	// WorkerTimeout: workers silent that long leave the route table
	// (VELO_WORKER_TIMEOUT, default DefaultWorkerTimeout).
	WorkerTimeout time.Duration
	// TrustedProxies are the load balancers in front whose forwarding
	// headers the router keeps (VELO_TRUSTED_PROXIES).
	TrustedProxies []netip.Prefix
	// NoHits turns hit recording off (--no-hits, to measure its cost).
	NoHits bool
	// NoFastPath serves every request through net/http instead of the
	// router's lean HTTP/1.1 path (--no-fast-path, to compare them).
	NoFastPath bool
	// TLS turns HTTPS on for NAME.<Domain> and components' custom
	// domains; certificates from ACME are shared by every router through
	// the store (sealed with VELO_SECRETS_KEY, which ACME then requires).
	TLS TLS
	// DashboardURL is where browsers reach the dashboard (velo webui;
	// VELO_DASHBOARD_URL, --dashboard-url): a browser calling a component
	// with [access] dashboard = true without a session is sent there to
	// sign in, and the session cookie's name follows its scheme
	// (__Host-velo_session over https). Empty: such browsers get the 401
	// every other caller gets.
	DashboardURL string
	// GitHub is the GitHub App the dashboard signs users in with
	// (VELO_GITHUB_*, the same values as the webui's): the router opens a
	// signed-in user's GitHub token with its OAuth client secret and asks
	// GitHub which repositories the user reaches. Nil: only the admin's
	// dashboard session is admitted.
	GitHub *github.Config
}

func (c RouterConfig) withDefaults() RouterConfig {
	if c.WorkerTimeout == 0 {
		c.WorkerTimeout = DefaultWorkerTimeout
	}
	return c
}

func (c RouterConfig) validate() error {
	if c.ClusterToken == "" {
		return errors.New("router: VELO_CLUSTER_TOKEN is not set: routers and workers share it to authenticate internal calls")
	}
	if err := c.TLS.validate(); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if c.DashboardURL != "" {
		if u, err := url.Parse(c.DashboardURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("router: VELO_DASHBOARD_URL %q: want the dashboard's absolute http(s) URL, like https://velo.example.com", c.DashboardURL)
		}
	}
	if c.TLS.HTTPS == HTTPSACME && c.SecretsKey == "" {
		return errors.New("router: VELO_HTTPS=acme needs VELO_SECRETS_KEY: certificates' private keys are sealed with it in the store")
	}
	return nil
}

// NewRouter builds the router role: the route table kept in memory and
// current through notifications, calls forwarded to the workers over
// pooled keep-alive connections with the cluster token, /healthz and
// /metrics (with the router's counters).
func NewRouter(ctx context.Context, cfg RouterConfig) (*Role, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r, err := openRole(ctx, "router", cfg.Cluster)
	if err != nil {
		return nil, err
	}
	remote := router.NewRemote(router.RemoteConfig{Token: cfg.ClusterToken, Logger: r.log})
	// Routers are the event engine's executors: a queued call goes the
	// way an HTTP call goes, from the route table to a worker.
	var rt *router.Router
	ev, err := events.New(events.Config{Store: r.store, Secrets: r.keys, Logger: r.log,
		Caller: events.CallerFunc(func(ctx context.Context, w http.ResponseWriter, c *router.Call, id int64, attempt int) error {
			return rt.Invoke(ctx, w, c, id, attempt)
		}),
		Schedules: func() []router.Scheduled { return rt.Schedules() },
		Paused:    func(component string) bool { return rt.Paused(component) }})
	if err != nil {
		return r.fail(err)
	}
	rt = router.New(router.Config{
		Domain:         cfg.Domain,
		Backend:        remote.Backend,
		NoHits:         cfg.NoHits,
		WorkerTimeout:  cfg.WorkerTimeout,
		TrustedProxies: cfg.TrustedProxies,
		Async:          ev,
		ShareLimits:    true, // routers of a cluster hold rate limits together
		Report:         true, // the deploymgr waits for every router before "live"
		Addr:           cfg.Addr,
		Logger:         r.log,
	}, r.store)
	if err := dashboardSessions(rt, r, cfg); err != nil {
		return r.fail(err)
	}
	r.reg.MustRegister(router.Collector(rt), events.Collector(ev))
	r.routes = rt
	if !cfg.NoFastPath {
		r.fast = rt
	}
	r.mux.Handle(router.Prefix, rt)
	r.mux.HandleFunc(router.EventsPrefix, rt.ServeEvents)
	r.handler = rt.Hosts(r.mux)
	if cfg.TLS.Enabled() {
		r.tls = &cfg.TLS
		r.serves = rt.Serves
	}
	r.loops = append(r.loops, func(ctx context.Context) error {
		defer remote.Close()
		return rt.Run(ctx)
	}, ev.Run)
	return r, nil
}

// dashboardSessions makes rt admit the dashboard's signed-in users to the
// components with [access] dashboard = true, as `velo up` does: sessions
// are read from the cluster's store (where the webui keeps them, hashed),
// and a GitHub user's repositories asked of GitHub with their token, which
// the store keeps sealed under the App's OAuth client secret.
func dashboardSessions(rt *router.Router, r *Role, cfg RouterConfig) error {
	app, err := githubApp(cfg.GitHub)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if app == nil {
		r.log.Info("no GitHub App configured (VELO_GITHUB_*): components with [access] dashboard = true admit only the admin's dashboard session")
	}
	cookies := strings.TrimRight(cfg.DashboardURL, "/")
	if cookies == "" {
		cookies = "http://" + cfg.Addr // only the scheme counts: the cookie's name
	}
	sessions, err := auth.New(auth.Config{Store: r.store, PublicURL: cookies, App: app, Logger: r.log})
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	signIn := ""
	if cfg.DashboardURL != "" {
		signIn = strings.TrimRight(cfg.DashboardURL, "/") + "/"
	}
	rt.SetSessions(sessions, signIn)
	return nil
}
