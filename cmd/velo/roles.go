package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/node"
)

// roleCommands are the production roles, each its own process against one
// Postgres: deploymgr, worker, router, webui. Each reads its
// node.*Config from the environment and flags (nothing else) and runs the
// role node builds from it.
func roleCommands() []*cobra.Command {
	return []*cobra.Command{deploymgrCmd(), workerCmd(), routerCmd(), webuiCmd(), healthcheckCmd()}
}

// runRole builds a role once env has been read without error, with its
// log on the command's stderr, and runs it until the command's context is
// done.
func runRole(cmd *cobra.Command, e *env, c *node.Cluster, build func(context.Context) (*node.Role, error)) error {
	if e.err != nil {
		return e.err
	}
	c.Logger = newLogger(cmd.ErrOrStderr())
	ln, err := systemdListener()
	if err != nil {
		return err
	}
	c.Listener = ln
	r, err := build(cmd.Context())
	if err != nil {
		return err
	}
	return r.Run(cmd.Context())
}

func addrFlag(cmd *cobra.Command, c *node.Cluster) {
	cmd.Flags().StringVar(&c.Addr, "addr", c.Addr, "address to listen on ("+envAddr+")")
}

func deploymgrCmd() *cobra.Command {
	e := newEnv()
	cfg := node.DeploymgrConfig{
		Cluster:         e.cluster("127.0.0.1:8081"),
		ClusterToken:    e.get(envClusterToken),
		WorkerTimeout:   e.duration(envWorkerTimeout, node.DefaultWorkerTimeout),
		RouterWait:      e.duration(envRouterWait, 0),
		RouterTimeout:   e.duration(envRouterTimeout, 0),
		WasmReplicas:    e.count(envWasmReplicas, 0),
		DockerReplicas:  e.count(envDockerReplicas, 1),
		DockerTargetRPS: e.number(envDockerRPS),
		ScaleCooldown:   e.duration(envScaleCooldown, 30*time.Second),
		KeepDeployments: e.keepDeployments(),
	}
	cfg.KeepRecords = e.keepRecords(cfg.KeepDeployments)
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
bootstrapping), VELO_CLUSTER_TOKEN (to reach the workers for velo shell;
shells are off without it), VELO_PUBLIC_URL (where users reach the routers),
VELO_DOMAIN, VELO_WORKER_TIMEOUT (default 10s: a worker silent that long
loses its placements), VELO_ROUTER_WAIT (default 5s: how long a new
deployment waits for every router to serve it before it is called live
anyway, the lagging routers named), VELO_ROUTER_TIMEOUT (default 5s: a
router silent that long is not waited for), VELO_WASM_REPLICAS (0 = every worker),
VELO_DOCKER_REPLICAS (default 1; the floor when autoscaling),
VELO_KEEP_DEPLOYMENTS (default 10: each component's newest deployments whose
artifacts are kept for rollback; older ones are removed),
VELO_KEEP_DEPLOYMENT_RECORDS (default 10 × VELO_KEEP_DEPLOYMENTS: each
component's newest deployments whose records are kept as history; older
records are deleted; at least VELO_KEEP_DEPLOYMENTS),
VELO_DOCKER_TARGET_RPS (autoscale Docker components across workers to about
this many requests/s per replica; off when unset), VELO_SCALE_COOLDOWN
(default 30s between two scaling changes of a component).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			gh, err := githubConfig(os.Getenv)
			if err != nil {
				return err
			}
			cfg.GitHub = gh
			return runRole(cmd, e, &cfg.Cluster, func(ctx context.Context) (*node.Role, error) { return node.NewDeploymgr(ctx, cfg) })
		},
	}
	addrFlag(cmd, &cfg.Cluster)
	cmd.Flags().StringVar(&cfg.PublicURL, "public-url", e.get(envPublicURL), "where users reach the routers; component URLs are built on it ("+envPublicURL+", default http://<addr>)")
	cmd.Flags().StringVar(&cfg.Domain, "domain", e.get(envDomain), "serve component NAME at NAME.<domain> too ("+envDomain+")")
	return cmd
}

func workerCmd() *cobra.Command {
	e := newEnv()
	cfg := node.WorkerConfig{
		Cluster:      e.cluster("127.0.0.1:8082"),
		ClusterToken: e.get(envClusterToken),
		Docker:       e.docker(),
	}
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
			return runRole(cmd, e, &cfg.Cluster, func(ctx context.Context) (*node.Role, error) {
				limits, err := workerLimits()
				if err != nil {
					return nil, fmt.Errorf("worker: %w", err)
				}
				cfg.Limits = limits
				return node.NewWorker(ctx, cfg)
			})
		},
	}
	addrFlag(cmd, &cfg.Cluster)
	cmd.Flags().StringVar(&cfg.Name, "name", e.get(envWorkerName), "the worker's identity in the cluster ("+envWorkerName+", default the host name)")
	cmd.Flags().StringVar(&cfg.Advertise, "advertise", e.get(envAdvertise), "base URL routers reach this worker at ("+envAdvertise+", default http://<addr>)")
	cmd.Flags().StringVar(&cfg.DataDir, "data", e.str(envData, node.DefaultWorkerData), "directory for artifacts and compiled modules ("+envData+")")
	return cmd
}

func routerCmd() *cobra.Command {
	e := newEnv()
	cfg := node.RouterConfig{
		Cluster:        e.cluster("127.0.0.1:8080"),
		ClusterToken:   e.get(envClusterToken),
		WorkerTimeout:  e.duration(envWorkerTimeout, node.DefaultWorkerTimeout),
		TrustedProxies: e.trustedProxies(),
		TLS:            e.tls(),
	}
	var applyTLS func()
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
leave the table). HTTPS: VELO_HTTPS=acme (or --https) with VELO_ACME_EMAIL,
VELO_ACME_CA and VELO_SECRETS_KEY (certificates are shared by every router
through the store, sealed), or VELO_TLS_CERT and VELO_TLS_KEY; served on
--https-addr while --addr answers ACME challenges and redirects.
Dashboard sign-in ([access] dashboard = true): VELO_DASHBOARD_URL (where
browsers without a session are sent to sign in) and the webui's
VELO_GITHUB_* (to check a signed-in user's repositories on GitHub).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			applyTLS()
			gh, err := githubConfig(os.Getenv)
			if err != nil {
				return fmt.Errorf("router: %w", err)
			}
			cfg.GitHub = gh
			return runRole(cmd, e, &cfg.Cluster, func(ctx context.Context) (*node.Role, error) { return node.NewRouter(ctx, cfg) })
		},
	}
	addrFlag(cmd, &cfg.Cluster)
	cmd.Flags().StringVar(&cfg.Domain, "domain", e.get(envDomain), "serve component NAME at NAME.<domain> too ("+envDomain+")")
	cmd.Flags().BoolVar(&cfg.NoHits, "no-hits", false, "do not record hit statistics (to measure their cost)")
	cmd.Flags().BoolVar(&cfg.NoFastPath, "no-fast-path", false, "serve every request through net/http instead of the router's lean HTTP/1.1 path (to compare them)")
	cmd.Flags().StringVar(&cfg.DashboardURL, "dashboard-url", e.get(envDashboardURL), "where browsers reach the dashboard, to sign in for components with [access] dashboard = true ("+envDashboardURL+")")
	applyTLS = tlsFlags(cmd, &cfg.TLS)
	return cmd
}

func webuiCmd() *cobra.Command {
	e := newEnv()
	cfg := node.WebUIConfig{
		Cluster: e.cluster("127.0.0.1:8083"),
	}
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
			gh, err := githubConfig(os.Getenv)
			if err != nil {
				return fmt.Errorf("webui: %w", err)
			}
			cfg.GitHub = gh
			return runRole(cmd, e, &cfg.Cluster, func(ctx context.Context) (*node.Role, error) { return node.NewWebUI(ctx, cfg) })
		},
	}
	addrFlag(cmd, &cfg.Cluster)
	cmd.Flags().StringVar(&cfg.PublicURL, "public-url", e.get(envPublicURL), "where users reach the routers; component URLs are built on it ("+envPublicURL+", default http://<addr>)")
	cmd.Flags().StringVar(&cfg.DashboardURL, "dashboard-url", e.get(envDashboardURL), "where browsers reach this dashboard ("+envDashboardURL+", default the public URL)")
	cmd.Flags().StringVar(&cfg.Domain, "domain", e.get(envDomain), "components are served at NAME.<domain> too ("+envDomain+")")
	return cmd
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
