package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/velo-run/velo/internal/events"
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
		Schedules: func() []router.Scheduled { return rt.Schedules() }})
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
