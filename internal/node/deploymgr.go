package node

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/events"
	"github.com/velo-run/velo/internal/github"
)

// DeploymgrConfig configures `velo deploymgr`, the control plane: the REST
// API, the scheduler (one leader among all deploymgrs) and, with GitHub,
// the webhook.
type DeploymgrConfig struct {
	Cluster
	// ClusterToken lets deploymgr reach the workers for `velo shell`
	// (VELO_CLUSTER_TOKEN); shells are refused without it.
	ClusterToken string
	// PublicURL is where users reach the routers; component URLs are
	// built on it (VELO_PUBLIC_URL, --public-url; default http://<Addr>).
	PublicURL string
	// Domain also names component NAME NAME.<Domain> (VELO_DOMAIN, --domain).
	Domain string
	// WorkerTimeout: a worker silent that long loses its placements
	// (VELO_WORKER_TIMEOUT, default DefaultWorkerTimeout).
	WorkerTimeout time.Duration
	// RouterWait bounds how long a promotion waits for every router to
	// serve it before it is called live anyway (VELO_ROUTER_WAIT, default
	// deploymgr.DefaultRouterWait); RouterTimeout: a router silent that
	// long is not waited for (VELO_ROUTER_TIMEOUT, default
	// deploymgr.DefaultRouterTimeout).
	RouterWait, RouterTimeout time.Duration
	// WasmReplicas is how many workers a WASM deployment is placed on, 0
	// for every one (VELO_WASM_REPLICAS).
	WasmReplicas int
	// DockerReplicas is how many workers a Docker deployment is placed
	// on; the floor when autoscaling (VELO_DOCKER_REPLICAS, default 1).
	DockerReplicas int
	// DockerTargetRPS autoscales Docker components to about this many
	// requests/s per replica; 0 is off (VELO_DOCKER_TARGET_RPS).
	DockerTargetRPS float64
	// ScaleCooldown is the least time between two scaling changes of a
	// component (VELO_SCALE_COOLDOWN, default 30s).
	ScaleCooldown time.Duration
	// KeepDeployments is how many of each component's newest deployments
	// keep their artifact for rollback (VELO_KEEP_DEPLOYMENTS; 0:
	// deploymgr's default, 10).
	KeepDeployments int
	// KeepRecords is how many of each component's newest deployments
	// keep their record (VELO_KEEP_DEPLOYMENT_RECORDS; 0: deploymgr's
	// default, 10 × KeepDeployments).
	KeepRecords int
	// GitHub connects the GitHub App (VELO_GITHUB_*); nil without.
	GitHub *github.Config
}

func (c DeploymgrConfig) withDefaults() DeploymgrConfig {
	if c.PublicURL == "" {
		c.PublicURL = "http://" + c.Addr
	}
	if c.WorkerTimeout == 0 {
		c.WorkerTimeout = DefaultWorkerTimeout
	}
	if c.DockerReplicas == 0 {
		c.DockerReplicas = 1
	}
	if c.ScaleCooldown == 0 {
		c.ScaleCooldown = 30 * time.Second
	}
	return c
}

// NewDeploymgr builds the deploymgr role: the API under /api/v1, sign-in,
// the webhook at /webhooks/github when GitHub is configured (every
// deploymgr takes deliveries; the leader runs the jobs), and the
// scheduler, run by whichever deploymgr holds the Postgres lock.
func NewDeploymgr(ctx context.Context, cfg DeploymgrConfig) (*Role, error) {
	cfg = cfg.withDefaults()
	r, err := openRole(ctx, "deploymgr", cfg.Cluster)
	if err != nil {
		return nil, err
	}
	if cfg.AdminToken == "" {
		r.log.Warn("VELO_ADMIN_TOKEN is not set: only tokens stored in the database are accepted")
	}
	app, err := githubApp(cfg.GitHub)
	if err != nil {
		return r.fail(err)
	}
	// The invocations API: the routers run the calls, deploymgr reads
	// and acts on River's tables.
	ev, err := events.New(events.Config{Store: r.store, Secrets: r.keys, Logger: r.log})
	if err != nil {
		return r.fail(err)
	}
	var shells deploymgr.ShellDialer
	if cfg.ClusterToken != "" {
		shells = deploymgr.RemoteShells(cfg.ClusterToken)
	}
	c, err := newControl(r.store, deploymgr.Config{
		PublicURL:       cfg.PublicURL,
		Domain:          cfg.Domain,
		AdminToken:      cfg.AdminToken,
		WorkerTimeout:   cfg.WorkerTimeout,
		RouterWait:      cfg.RouterWait,
		RouterTimeout:   cfg.RouterTimeout,
		WasmReplicas:    cfg.WasmReplicas,
		DockerReplicas:  cfg.DockerReplicas,
		DockerTargetRPS: cfg.DockerTargetRPS,
		ScaleCooldown:   cfg.ScaleCooldown,
		Secrets:         r.keys,
		KeepDeployments: cfg.KeepDeployments,
		KeepRecords:     cfg.KeepRecords,
		Events:          ev,
		Shells:          shells,
		Logger:          r.log,
	}, cfg.PublicURL, app)
	if err != nil {
		return r.fail(err)
	}
	el := new(deploymgr.Election)
	c.handle(r.mux)
	if app != nil {
		gh, err := c.mgr.EnableGitHub(deploymgr.GitHubConfig{App: app, Store: r.store})
		if err != nil {
			return r.fail(err)
		}
		// The job runner requeues what it finds running at start: it
		// must run in the leader only.
		el.Also = append(el.Also, gh.Run)
		r.mux.Handle(github.WebhookPath, gh.Handler())
	}
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "velo_deploymgr_leader", Help: "1 while this deploymgr is the active scheduler.",
	}, func() float64 {
		if el.Leading() {
			return 1
		}
		return 0
	}))
	r.loops = append(r.loops, func(ctx context.Context) error { return el.Run(ctx, c.mgr, r.store) })
	return r, nil
}
