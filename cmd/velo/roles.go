package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/wasm"
)

// roleCommands are the production roles, each its own process against one
// Postgres: deploymgr, worker, router, webui.
func roleCommands() []*cobra.Command {
	return []*cobra.Command{deploymgrCmd(), workerCmd(), routerCmd(), webuiCmd(), healthcheckCmd()}
}

// Environment variables the roles read (flags override them).
const (
	envDatabaseURL    = "VELO_DATABASE_URL"
	envClusterToken   = "VELO_CLUSTER_TOKEN"
	envAdminToken     = "VELO_ADMIN_TOKEN"
	envAddr           = "VELO_ADDR"
	envWorkerTimeout  = "VELO_WORKER_TIMEOUT"
	envWasmReplicas   = "VELO_WASM_REPLICAS"
	envDockerReplicas = "VELO_DOCKER_REPLICAS"
	envMaxInflight    = "VELO_WORKER_MAX_INFLIGHT"
	envWorkerMemory   = "VELO_WORKER_MEMORY"
	envKeep           = "VELO_KEEP_DEPLOYMENTS"
)

// roleConfig is what every role needs.
type roleConfig struct {
	Role        string
	Addr        string
	DatabaseURL string
}

func (c roleConfig) validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("%s: --addr %q: want host:port, like 127.0.0.1:8080", c.Role, c.Addr)
	}
	if c.DatabaseURL == "" {
		return fmt.Errorf("%s: %s is not set: give the Postgres URL, like postgres://velo:secret@db:5432/velo", c.Role, envDatabaseURL)
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return fmt.Errorf("%s: %s must be a postgres:// URL: separate roles share state through Postgres (use velo up for the embedded store)", c.Role, envDatabaseURL)
	}
	return nil
}

func (c *roleConfig) flags(cmd *cobra.Command, defAddr string) {
	cmd.Flags().StringVar(&c.Addr, "addr", envOr(envAddr, defAddr), "address to listen on ("+envAddr+")")
	c.DatabaseURL = os.Getenv(envDatabaseURL)
}

// durationEnv reads a duration from the environment, naming the variable
// when it is malformed.
func durationEnv(key string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration like 10s", key, v)
	}
	return d, nil
}

func floatEnv(key string) (float64, error) {
	v := os.Getenv(key)
	if v == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%s=%q: want a number ≥ 0", key, v)
	}
	return f, nil
}

// keepDeployments reads VELO_KEEP_DEPLOYMENTS: how many of each
// component's newest deployments keep their artifact for rollback.
func keepDeployments() (int, error) {
	n, err := intEnv(envKeep, deploymgr.DefaultKeepDeployments)
	if err == nil && n < 1 {
		err = fmt.Errorf("%s=%d: want at least 1 (the live deployment)", envKeep, n)
	}
	return n, err
}

func intEnv(key string, def int) (int, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q: want a whole number ≥ 0", key, v)
	}
	return n, nil
}

// workerLimits reads the worker's limits from the environment, resolving
// the memory budget, and holds the Go runtime's heap to that budget too
// (unless GOMEMLIMIT says otherwise), so that garbage does not pile up
// beyond what admission reckons with.
func workerLimits() (worker.Limits, error) {
	var l worker.Limits
	n, err := intEnv(envMaxInflight, 0)
	if err != nil {
		return l, err
	}
	l.MaxInflight = n
	if v := os.Getenv(envWorkerMemory); v != "" {
		m, err := manifest.ParseSize(v)
		if err != nil || m < 64<<20 {
			return l, fmt.Errorf("%s=%q: want a size of at least 64MiB, like 2GiB or 512MiB", envWorkerMemory, v)
		}
		l.Memory = m
	} else if l.Memory, err = worker.DefaultMemory(); err != nil {
		return l, err
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(l.Memory)
	}
	return l, nil
}

// role is one running role process: a store, an HTTP server and the loops
// that keep the role's state current.
type role struct {
	log   *slog.Logger
	store *store.Store
	reg   *prometheus.Registry
	// fast, when set, serves the listener through the router's fast
	// path, with the handler as its fallback.
	fast *router.Router
	// keys is the secrets keyring from VELO_SECRETS_KEY (nil when unset).
	keys *secrets.Keyring
}

func openRole(ctx context.Context, cfg roleConfig, log *slog.Logger) (*role, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	keys, err := secrets.Load(os.Getenv(secrets.EnvKey), "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Role, err)
	}
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.Role, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &role{log: log.With("role", cfg.Role), store: st, reg: reg, keys: keys}, nil
}

// serve listens on addr with handler and runs loops until ctx is done or one
// fails; then it stops the server (letting requests in flight finish, up to
// 15s), stops the loops and closes the store.
func (r *role) serve(ctx context.Context, addr string, handler http.Handler, loops ...func(context.Context) error) error {
	defer r.store.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	var server interface {
		Serve(net.Listener) error
		Shutdown(context.Context) error
	} = srv
	if r.fast != nil {
		server = &router.FastServer{Router: r.fast, Fallback: srv}
	}
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	errc := make(chan error, len(loops)+1)
	var wg sync.WaitGroup
	for _, loop := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loop(runCtx); err != nil {
				errc <- err
			}
		}()
	}
	go func() {
		if err := server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve: %w", err)
		}
	}()
	r.log.Info("listening", "addr", ln.Addr().String())
	var failed error
	select {
	case <-ctx.Done():
	case failed = <-errc:
	}
	r.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = server.Shutdown(sctx)
	stop()
	wg.Wait()
	return failed
}

// base adds /healthz and /metrics to mux; /metrics answers only with
// VELO_METRICS_TOKEN (or VELO_ADMIN_TOKEN) as a bearer token.
func (r *role) base(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		// A role keeps working from memory while Postgres is away (the
		// router serves its last table), so the store's state is
		// reported, not made a failure.
		if _, err := r.store.Workers(ctx); err != nil {
			fmt.Fprintln(w, "ok (store unreachable)")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", auth.RequireMetricsToken(promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{}),
		os.Getenv(auth.MetricsTokenEnv), os.Getenv(envAdminToken)))
}

func deploymgrCmd() *cobra.Command {
	var (
		cfg       = roleConfig{Role: "deploymgr"}
		publicURL string
		domain    string
	)
	cmd := &cobra.Command{
		Use:   "deploymgr",
		Short: "Run the control plane: REST API, scheduler (one leader among all deploymgrs), /healthz, /metrics",
		Long: `Run the control plane against Postgres (VELO_DATABASE_URL): the REST API
under /api/v1, the scheduler that places deployments on workers, /healthz and
/metrics. Any number of deploymgr processes may run; a Postgres advisory lock
makes exactly one of them schedule, and another takes over when it dies.

With the VELO_GITHUB_* variables set it also takes GitHub App webhooks at
/webhooks/github (any deploymgr; the leader runs the deploy jobs) and signs
API users in with GitHub.

Environment: VELO_DATABASE_URL (required), VELO_ADMIN_TOKEN (API token for
bootstrapping), VELO_PUBLIC_URL (where users reach the routers),
VELO_DOMAIN, VELO_WORKER_TIMEOUT (default 10s: a worker silent that long
loses its placements), VELO_WASM_REPLICAS (0 = every worker),
VELO_DOCKER_REPLICAS (default 1; the floor when autoscaling),
VELO_KEEP_DEPLOYMENTS (default 10: each component's newest deployments whose
artifacts are kept for rollback; older ones are removed),
VELO_DOCKER_TARGET_RPS (autoscale Docker components across workers to about
this many requests/s per replica; off when unset), VELO_SCALE_COOLDOWN
(default 30s between two scaling changes of a component).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := newLogger(cmd.ErrOrStderr())
			timeout, err := durationEnv(envWorkerTimeout, 10*time.Second)
			if err != nil {
				return err
			}
			wasmN, err := intEnv(envWasmReplicas, 0)
			if err != nil {
				return err
			}
			dockerN, err := intEnv(envDockerReplicas, 1)
			if err != nil {
				return err
			}
			targetRPS, err := floatEnv("VELO_DOCKER_TARGET_RPS")
			if err != nil {
				return err
			}
			cooldown, err := durationEnv("VELO_SCALE_COOLDOWN", 30*time.Second)
			if err != nil {
				return err
			}
			keep, err := keepDeployments()
			if err != nil {
				return err
			}
			if publicURL == "" {
				publicURL = "http://" + cfg.Addr
			}
			r, err := openRole(ctx, cfg, log)
			if err != nil {
				return err
			}
			admin := os.Getenv(envAdminToken)
			if admin == "" {
				r.log.Warn(envAdminToken + " is not set: only tokens stored in the database are accepted")
			}
			app, err := githubApp(os.Getenv)
			if err != nil {
				r.store.Close()
				return err
			}
			mgr, err := deploymgr.New(deploymgr.Config{
				PublicURL:       publicURL,
				Domain:          domain,
				AdminToken:      admin,
				WorkerTimeout:   timeout,
				WasmReplicas:    wasmN,
				DockerReplicas:  dockerN,
				DockerTargetRPS: targetRPS,
				ScaleCooldown:   cooldown,
				Secrets:         r.keys,
				KeepDeployments: keep,
				Logger:          r.log,
			}, r.store)
			if err != nil {
				r.store.Close()
				return err
			}
			sessions, err := auth.New(auth.Config{Store: r.store, PublicURL: publicURL, AdminToken: admin, App: app, Logger: r.log})
			if err != nil {
				r.store.Close()
				return err
			}
			mgr.AddAuthenticator(sessions.Authenticator())
			var el deploymgr.Election
			var gh *deploymgr.GitHub
			if app != nil {
				mgr.SetAccess(sessions.Access())
				if gh, err = mgr.EnableGitHub(deploymgr.GitHubConfig{App: app, Store: r.store}); err != nil {
					r.store.Close()
					return err
				}
				// The job runner requeues what it finds running at
				// start: it must run in the leader only.
				el.Also = append(el.Also, gh.Run)
			}
			r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "velo_deploymgr_leader", Help: "1 while this deploymgr is the active scheduler.",
			}, func() float64 {
				if el.Leading() {
					return 1
				}
				return 0
			}))
			mux := http.NewServeMux()
			r.base(mux)
			api := mgr.Handler()
			mux.Handle("/api/", api)
			mux.Handle(auth.LoginPath, sessions.Handler())
			mux.Handle("/auth/", sessions.Handler())
			if gh != nil {
				// Every deploymgr takes deliveries (stored and
				// deduplicated); the leader runs the jobs.
				mux.Handle(github.WebhookPath, gh.Handler())
			}
			return r.serve(ctx, cfg.Addr, mux, func(ctx context.Context) error {
				return el.Run(ctx, mgr, r.store)
			})
		},
	}
	cfg.flags(cmd, "127.0.0.1:8081")
	cmd.Flags().StringVar(&publicURL, "public-url", os.Getenv("VELO_PUBLIC_URL"), "where users reach the routers; component URLs are built on it (VELO_PUBLIC_URL, default http://<addr>)")
	cmd.Flags().StringVar(&domain, "domain", os.Getenv("VELO_DOMAIN"), "serve component NAME at NAME.<domain> too (VELO_DOMAIN)")
	return cmd
}

func workerCmd() *cobra.Command {
	var (
		cfg       = roleConfig{Role: "worker"}
		name      string
		advertise string
		data      string
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run a worker: prepares the deployments placed on it and serves the calls routers forward",
		Long: `Run a worker against Postgres (VELO_DATABASE_URL). It registers under --name
with the address routers reach it at (--advertise), heartbeats, fetches the
artifacts placed on it from the store, prepares them and serves the calls
routers forward. Every call must carry the cluster token (VELO_CLUSTER_TOKEN).

Environment: VELO_DATABASE_URL and VELO_CLUSTER_TOKEN (required),
VELO_WORKER_NAME, VELO_ADVERTISE, VELO_DATA, VELO_WORKER_MAX_INFLIGHT (calls
at once, default 512), VELO_WORKER_MEMORY (the memory budget calls are
admitted against, like 2GiB; default half the machine's or cgroup's memory).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := newLogger(cmd.ErrOrStderr())
			token := os.Getenv(envClusterToken)
			if token == "" {
				return fmt.Errorf("worker: %s is not set: routers and workers share it to authenticate internal calls", envClusterToken)
			}
			if name == "" {
				h, err := os.Hostname()
				if err != nil || h == "" {
					return errors.New("worker: --name is required (VELO_WORKER_NAME): the worker's identity in the cluster")
				}
				name = h
			}
			adv, err := advertiseURL(advertise, cfg.Addr)
			if err != nil {
				return err
			}
			if data == "" {
				return errors.New("worker: --data is required (VELO_DATA): a directory for artifacts and caches")
			}
			r, err := openRole(ctx, cfg, log)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(data, 0o700); err != nil {
				r.store.Close()
				return fmt.Errorf("worker: data dir: %w", err)
			}
			wasmRT, err := wasm.New(wasm.Config{CacheDir: filepath.Join(data, "wasm-cache"), Logger: r.log,
				OutboundForbidden: clusterAddrs(ctx, adv, cfg.DatabaseURL)})
			if err != nil {
				r.store.Close()
				return fmt.Errorf("worker: wasm runtime: %w", err)
			}
			r.reg.MustRegister(wasm.Collector(wasmRT))
			runtimes, unavailable := []worker.Runtime{wasmRT}, map[string]error{}
			if rt, err := newDockerRuntime(ctx, name, r.log); err == nil {
				runtimes = append(runtimes, rt)
			} else {
				unavailable["docker"] = err
				r.log.Info("docker components disabled on this worker", "reason", err)
			}
			limits, err := workerLimits()
			if err != nil {
				r.store.Close()
				return fmt.Errorf("worker: %w", err)
			}
			wk, err := worker.New(worker.Config{Name: name, Addr: adv, DataDir: data, Logger: r.log, Unavailable: unavailable, Limits: limits, Secrets: r.keys}, r.store, runtimes...)
			if err != nil {
				r.store.Close()
				return err
			}
			mux := http.NewServeMux()
			r.base(mux)
			invoke := wk.Handler(token)
			// Forwarded calls carry X-Velo-Invoke-Deployment whatever
			// their path (a component may serve /healthz itself).
			handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if _, ok := req.Header[router.HeaderInvokeDeployment]; ok {
					invoke.ServeHTTP(w, req)
					return
				}
				mux.ServeHTTP(w, req)
			})
			r.log.Info("worker registering", "name", name, "advertise", adv)
			return r.serve(ctx, cfg.Addr, handler, wk.Run)
		},
	}
	cfg.flags(cmd, "127.0.0.1:8082")
	cmd.Flags().StringVar(&name, "name", os.Getenv("VELO_WORKER_NAME"), "the worker's identity in the cluster (VELO_WORKER_NAME, default the host name)")
	cmd.Flags().StringVar(&advertise, "advertise", os.Getenv("VELO_ADVERTISE"), "base URL routers reach this worker at (VELO_ADVERTISE, default http://<addr>)")
	cmd.Flags().StringVar(&data, "data", envOr("VELO_DATA", ".velo-worker"), "directory for artifacts and compiled modules (VELO_DATA)")
	return cmd
}

// advertiseURL is the URL a worker registers: adv when given, else
// http://<addr>, which must then name a host routers can reach.
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

func advertiseURL(adv, addr string) (string, error) {
	if adv == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return "", fmt.Errorf("worker: --addr %q: want host:port", addr)
		}
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return "", fmt.Errorf("worker: --advertise is required when --addr %q listens on every interface: give the URL routers reach this worker at, like http://10.0.0.5:8082", addr)
		}
		return "http://" + addr, nil
	}
	u, err := url.Parse(adv)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("worker: --advertise %q: want a base URL like http://10.0.0.5:8082", adv)
	}
	return strings.TrimSuffix(adv, "/"), nil
}

func routerCmd() *cobra.Command {
	var (
		cfg    = roleConfig{Role: "router"}
		domain string
		noHits bool
		noFast bool
	)
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Run a router: forwards /fn/NAME/… to the workers serving NAME, round-robin with failover",
		Long: `Run a router against Postgres (VELO_DATABASE_URL). It keeps the route table in
memory, follows changes through LISTEN/NOTIFY with a full resync every 10s,
forwards component calls to the workers over pooled HTTP/1.1 keep-alive
connections with the cluster token (VELO_CLUSTER_TOKEN), skips a worker that
refuses connections for a second (retrying the call on another), and keeps
serving its last table and counting hits while Postgres is away.

Environment: VELO_DATABASE_URL and VELO_CLUSTER_TOKEN (required),
VELO_DOMAIN, VELO_WORKER_TIMEOUT (default 10s: workers silent that long
leave the table).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := newLogger(cmd.ErrOrStderr())
			token := os.Getenv(envClusterToken)
			if token == "" {
				return fmt.Errorf("router: %s is not set: routers and workers share it to authenticate internal calls", envClusterToken)
			}
			timeout, err := durationEnv(envWorkerTimeout, 10*time.Second)
			if err != nil {
				return err
			}
			trusted, err := router.ParseTrustedProxies(os.Getenv("VELO_TRUSTED_PROXIES"))
			if err != nil {
				return fmt.Errorf("VELO_TRUSTED_PROXIES: %w", err)
			}
			r, err := openRole(ctx, cfg, log)
			if err != nil {
				return err
			}
			remote := router.NewRemote(router.RemoteConfig{Token: token, Logger: log})
			defer remote.Close()
			rt := router.New(router.Config{
				Domain:         domain,
				Backend:        remote.Backend,
				NoHits:         noHits,
				WorkerTimeout:  timeout,
				TrustedProxies: trusted,
				Logger:         r.log,
			}, r.store)
			r.reg.MustRegister(router.Collector(rt))
			if !noFast {
				r.fast = rt
			}
			mux := http.NewServeMux()
			r.base(mux)
			mux.Handle(router.Prefix, rt)
			handler := rt.Hosts(mux)
			return r.serve(ctx, cfg.Addr, handler, rt.Run)
		},
	}
	cfg.flags(cmd, "127.0.0.1:8080")
	cmd.Flags().StringVar(&domain, "domain", os.Getenv("VELO_DOMAIN"), "serve component NAME at NAME.<domain> too (VELO_DOMAIN)")
	cmd.Flags().BoolVar(&noHits, "no-hits", false, "do not record hit statistics (to measure their cost)")
	cmd.Flags().BoolVar(&noFast, "no-fast-path", false, "serve every request through net/http instead of the router's lean HTTP/1.1 path (to compare them)")
	return cmd
}

func webuiCmd() *cobra.Command {
	cfg := roleConfig{Role: "webui"}
	var wc webuiConfig
	cmd := &cobra.Command{
		Use:   "webui",
		Short: "Run the dashboard: sign-in, components, graphs, logs, deployments, pause/resume/rollback/delete",
		Long: `Run the server-rendered dashboard against Postgres (VELO_DATABASE_URL). It
serves the pages at /, the REST API under /api/v1 that the pages use (with
the dashboard session and its CSRF token), sign-in at /login (admin token)
and /auth/github/login (GitHub OAuth, when the GitHub App is configured),
/healthz and /metrics. See docs/dashboard.md.

Environment: VELO_DATABASE_URL (required), VELO_ADMIN_TOKEN (signs the admin
in), VELO_PUBLIC_URL (where users reach the routers), VELO_DASHBOARD_URL
(where browsers reach this role; default VELO_PUBLIC_URL, else
http://<addr>), VELO_DOMAIN, VELO_GITHUB_* (GitHub sign-in and onboarding).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			r, err := openRole(ctx, cfg, newLogger(cmd.ErrOrStderr()))
			if err != nil {
				return err
			}
			if wc.PublicURL == "" {
				wc.PublicURL = "http://" + cfg.Addr
			}
			if wc.DashboardURL == "" {
				wc.DashboardURL = wc.PublicURL
			}
			wc.AdminToken = os.Getenv(envAdminToken)
			mux := http.NewServeMux()
			r.base(mux)
			if err := dashboardMux(mux, r.store, wc, r.log); err != nil {
				r.store.Close()
				return err
			}
			return r.serve(ctx, cfg.Addr, mux)
		},
	}
	cfg.flags(cmd, "127.0.0.1:8083")
	cmd.Flags().StringVar(&wc.PublicURL, "public-url", os.Getenv("VELO_PUBLIC_URL"), "where users reach the routers; component URLs are built on it (VELO_PUBLIC_URL, default http://<addr>)")
	cmd.Flags().StringVar(&wc.DashboardURL, "dashboard-url", os.Getenv("VELO_DASHBOARD_URL"), "where browsers reach this dashboard (VELO_DASHBOARD_URL, default the public URL)")
	cmd.Flags().StringVar(&wc.Domain, "domain", os.Getenv("VELO_DOMAIN"), "components are served at NAME.<domain> too (VELO_DOMAIN)")
	return cmd
}

// githubApp connects the GitHub App when the VELO_GITHUB_* variables are
// set; nil when they are not.
func githubApp(getenv func(string) string) (*github.App, error) {
	cfg, ok, err := github.ConfigFromEnv(getenv)
	if err != nil || !ok {
		return nil, err
	}
	return github.NewApp(cfg, &http.Client{Timeout: time.Minute})
}

func healthcheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "healthcheck URL",
		Short: "Exit 0 when URL answers 2xx within 3s (for container healthchecks; images have no curl)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
			if err != nil {
				return err
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			res.Body.Close()
			if res.StatusCode/100 != 2 {
				return fmt.Errorf("%s answered %s", args[0], res.Status)
			}
			return nil
		},
	}
}
