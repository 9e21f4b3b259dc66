package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/router"
	"github.com/velo-run/velo/worker"
)

// The environment variables the server commands read; a flag, where there
// is one, overrides its variable. Each sets a field of a node.*Config
// (whose doc names the variable), read here and nowhere else.
const (
	envAddr           = "VELO_ADDR"
	envDatabaseURL    = "VELO_DATABASE_URL"
	envPublicURL      = "VELO_PUBLIC_URL"
	envDashboardURL   = "VELO_DASHBOARD_URL"
	envDomain         = "VELO_DOMAIN"
	envAdminToken     = "VELO_ADMIN_TOKEN"
	envClusterToken   = "VELO_CLUSTER_TOKEN"
	envWorkerName     = "VELO_WORKER_NAME"
	envAdvertise      = "VELO_ADVERTISE"
	envWorkerTimeout  = "VELO_WORKER_TIMEOUT"
	envRouterWait     = "VELO_ROUTER_WAIT"
	envRouterTimeout  = "VELO_ROUTER_TIMEOUT"
	envWasmReplicas   = "VELO_WASM_REPLICAS"
	envDockerReplicas = "VELO_DOCKER_REPLICAS"
	envDockerRPS      = "VELO_DOCKER_TARGET_RPS"
	envScaleCooldown  = "VELO_SCALE_COOLDOWN"
	envDockerPause    = "VELO_DOCKER_IDLE_PAUSE"
	envDockerStop     = "VELO_DOCKER_IDLE_STOP"
	envLogLevel       = "VELO_LOG_LEVEL"
	envMaxInflight    = "VELO_WORKER_MAX_INFLIGHT"
	envWorkerMemory   = "VELO_WORKER_MEMORY"
	envTrustedProxies = "VELO_TRUSTED_PROXIES"
	envKeep           = "VELO_KEEP_DEPLOYMENTS"
	envKeepRecords    = "VELO_KEEP_DEPLOYMENT_RECORDS"
	envHTTPS          = "VELO_HTTPS"
	envHTTPSAddr      = "VELO_HTTPS_ADDR"
	envACMEEmail      = "VELO_ACME_EMAIL"
	envACMECA         = "VELO_ACME_CA"
	envTLSCert        = "VELO_TLS_CERT"
	envTLSKey         = "VELO_TLS_KEY"
	envMetricsToken   = auth.MetricsTokenEnv // VELO_METRICS_TOKEN
	envSecretsKey     = secrets.EnvKey       // VELO_SECRETS_KEY
)

// env reads VELO_* variables into a command's config when the command is
// built (so that flags can default to them). A malformed value does not
// stop the reading: the first one is kept in err, naming the variable, and
// the command returns it when it runs.
type env struct {
	get func(string) string
	err error
}

func newEnv() *env { return &env{get: os.Getenv} }

func (e *env) fail(key, v, want string) {
	if e.err == nil {
		e.err = fmt.Errorf("%s=%q: want %s", key, v, want)
	}
}

// str is key's value, or def when it is unset or empty.
func (e *env) str(key, def string) string {
	if v := e.get(key); v != "" {
		return v
	}
	return def
}

// duration is key's value as a positive duration, or def when unset.
func (e *env) duration(key string, def time.Duration) time.Duration {
	v := e.get(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		e.fail(key, v, "a positive duration like 10s")
		return def
	}
	return d
}

// count is key's value as a whole number ≥ 0, or def when unset.
func (e *env) count(key string, def int) int {
	v := e.get(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		e.fail(key, v, "a whole number ≥ 0")
		return def
	}
	return n
}

// number is key's value as a number ≥ 0, or 0 when unset.
func (e *env) number(key string) float64 {
	v := e.get(key)
	if v == "" {
		return 0
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		e.fail(key, v, "a number ≥ 0")
		return 0
	}
	return f
}

// cluster is what every separate role reads; Addr is the --addr flag's
// default.
func (e *env) cluster(defAddr string) node.Cluster {
	return node.Cluster{
		Addr:         e.str(envAddr, defAddr),
		DatabaseURL:  e.get(envDatabaseURL),
		AdminToken:   e.get(envAdminToken),
		MetricsToken: e.get(envMetricsToken),
		SecretsKey:   e.get(envSecretsKey),
	}
}

// tls is HTTPS's settings (VELO_HTTPS, VELO_HTTPS_ADDR, VELO_ACME_*,
// VELO_TLS_*).
func (e *env) tls() node.TLS {
	return node.TLS{
		HTTPS:    e.get(envHTTPS),
		Addr:     e.get(envHTTPSAddr),
		Email:    e.get(envACMEEmail),
		CA:       e.get(envACMECA),
		CertFile: e.get(envTLSCert),
		KeyFile:  e.get(envTLSKey),
	}
}

// tlsFlags adds --https and --https-addr to a command serving HTTPS;
// apply, called when it runs, sets what --https says.
func tlsFlags(cmd *cobra.Command, t *node.TLS) (apply func()) {
	https := cmd.Flags().Bool("https", t.HTTPS == node.HTTPSACME,
		"obtain and renew certificates with ACME for the domain's hosts ("+envHTTPS+"=acme; "+envACMEEmail+", "+envACMECA+")")
	cmd.Flags().StringVar(&t.Addr, "https-addr", t.Addr, "address to serve HTTPS on with --https or "+envTLSCert+" ("+envHTTPSAddr+", default "+node.DefaultHTTPSAddr+"); --addr then redirects to it")
	return func() {
		if *https && t.HTTPS == "" {
			t.HTTPS = node.HTTPSACME
		}
	}
}

// docker is the Docker runtime with the idle timers of VELO_DOCKER_IDLE_*.
// A malformed timer disables Docker components with the reason, as an
// unreachable engine does, rather than stop the worker.
func (e *env) docker() node.DockerFunc {
	timers := &env{get: e.get}
	pause, stop := timers.duration(envDockerPause, 0), timers.duration(envDockerStop, 0)
	if err := timers.err; err != nil {
		return func(context.Context, string, *slog.Logger) (worker.Runtime, error) { return nil, err }
	}
	return node.Docker(pause, stop)
}

// githubConfig is the GitHub App's settings from getenv (VELO_GITHUB_*);
// nil when they are not set.
func githubConfig(getenv func(string) string) (*github.Config, error) {
	cfg, ok, err := github.ConfigFromEnv(getenv)
	if err != nil || !ok {
		return nil, err
	}
	return &cfg, nil
}

// keepDeployments is VELO_KEEP_DEPLOYMENTS: how many of each component's
// newest deployments keep their artifact for rollback.
func (e *env) keepDeployments() int {
	n := e.count(envKeep, deploymgr.DefaultKeepDeployments)
	if n < 1 && e.err == nil {
		e.err = fmt.Errorf("%s=%d: want at least 1 (the live deployment)", envKeep, n)
	}
	return n
}

// keepRecords is VELO_KEEP_DEPLOYMENT_RECORDS: how many of each
// component's newest deployments keep their record (0 when unset:
// deploymgr's default, 10 × VELO_KEEP_DEPLOYMENTS). Fewer than
// VELO_KEEP_DEPLOYMENTS is refused: the records of rollback targets would
// be deleted with their artifacts kept.
func (e *env) keepRecords(keep int) int {
	if e.get(envKeepRecords) == "" {
		return 0
	}
	n := e.count(envKeepRecords, 0)
	if n < keep && e.err == nil {
		e.err = fmt.Errorf("%s=%d: want at least %s (%d): a rollback target keeps its record", envKeepRecords, n, envKeep, keep)
	}
	return n
}

// trustedProxies is VELO_TRUSTED_PROXIES, the load balancers whose
// forwarding headers the router keeps.
func (e *env) trustedProxies() []netip.Prefix {
	v := e.get(envTrustedProxies)
	p, err := router.ParseTrustedProxies(v)
	if err != nil && e.err == nil {
		e.err = fmt.Errorf("%s: %w", envTrustedProxies, err)
	}
	return p
}

// workerLimits reads the worker's limits from the environment, resolving
// the memory budget, and holds the Go runtime's heap to that budget too
// (unless GOMEMLIMIT says otherwise), so that garbage does not pile up
// beyond what admission reckons with. It runs when a worker starts (up,
// worker), not when the command is built: it sets the process's limit.
func workerLimits() (worker.Limits, error) {
	e := newEnv()
	l := worker.Limits{MaxInflight: e.count(envMaxInflight, 0)}
	if e.err != nil {
		return l, e.err
	}
	if v := e.get(envWorkerMemory); v != "" {
		m, err := manifest.ParseSize(v)
		if err != nil || m < 64<<20 {
			return l, fmt.Errorf("%s=%q: want a size of at least 64MiB, like 2GiB or 512MiB", envWorkerMemory, v)
		}
		l.Memory = m
	} else {
		m, err := worker.DefaultMemory()
		if err != nil {
			return l, err
		}
		l.Memory = m
	}
	if e.get("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(l.Memory)
	}
	if e.get("GOGC") == "" {
		l.HeapFloor = worker.DefaultHeapFloor
	}
	return l, nil
}

// envOr is key's value, or def when it is unset or empty.
func envOr(key, def string) string { return newEnv().str(key, def) }
