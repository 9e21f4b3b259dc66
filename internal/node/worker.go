package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/velo-run/velo/router"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/wasm"
)

// DefaultWorkerData is the worker's data directory when none is given
// (relative to where it runs; ignored by git in this repository).
const DefaultWorkerData = ".velo-worker"

// WorkerConfig configures `velo worker`: it prepares the deployments
// placed on it and serves the calls routers forward.
type WorkerConfig struct {
	Cluster
	// ClusterToken authenticates the routers' calls (VELO_CLUSTER_TOKEN).
	// Required.
	ClusterToken string
	// Name is the worker's identity in the cluster (VELO_WORKER_NAME,
	// --name; default the host name).
	Name string
	// Advertise is the base URL routers reach the worker at
	// (VELO_ADVERTISE, --advertise; default http://<Addr>, which must then
	// name a host).
	Advertise string
	// DataDir holds artifacts and compiled modules (VELO_DATA, --data,
	// whose default is DefaultWorkerData). Required.
	DataDir string
	// Docker makes the Docker runtime (VELO_DOCKER_IDLE_*); nil disables
	// Docker components.
	Docker DockerFunc
	// Limits bound the calls the worker serves at once
	// (VELO_WORKER_MAX_INFLIGHT, VELO_WORKER_MEMORY).
	Limits worker.Limits
}

func (c WorkerConfig) withDefaults() (WorkerConfig, error) {
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return c, errors.New("worker: --name is required (VELO_WORKER_NAME): the worker's identity in the cluster")
		}
		c.Name = h
	}
	return c, nil
}

func (c WorkerConfig) validate() error {
	if c.ClusterToken == "" {
		return errors.New("worker: VELO_CLUSTER_TOKEN is not set: routers and workers share it to authenticate internal calls")
	}
	if c.DataDir == "" {
		return errors.New("worker: --data is required (VELO_DATA): a directory for artifacts and caches")
	}
	return nil
}

// NewWorker builds the worker role: it registers under its name and
// advertised URL, heartbeats, and serves the calls that carry the cluster
// token and X-Velo-Invoke-Deployment (whatever their path: a component may
// serve /healthz itself); other requests get /healthz and /metrics.
func NewWorker(ctx context.Context, cfg WorkerConfig) (*Role, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	adv, err := advertiseURL(cfg.Advertise, cfg.Addr)
	if err != nil {
		return nil, err
	}
	r, err := openRole(ctx, "worker", cfg.Cluster)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return r.fail(fmt.Errorf("worker: data dir: %w", err))
	}
	rts, wasmRT, unavailable, err := runtimes(ctx, cfg.DataDir, cfg.Name, clusterAddrs(ctx, adv, cfg.DatabaseURL), cfg.Docker, r.log)
	if err != nil {
		return r.fail(fmt.Errorf("worker: wasm runtime: %w", err))
	}
	r.reg.MustRegister(wasm.Collector(wasmRT))
	wk, err := worker.New(worker.Config{Name: cfg.Name, Addr: adv, DataDir: cfg.DataDir, Logger: r.log, Unavailable: unavailable, Limits: cfg.Limits, Secrets: r.keys}, r.store, rts...)
	if err != nil {
		return r.fail(err)
	}
	invoke := wk.Handler(cfg.ClusterToken)
	r.mux.Handle("POST "+worker.ShellPath, wk.ShellHandler(cfg.ClusterToken))
	r.handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if _, ok := req.Header[router.HeaderInvokeDeployment]; ok {
			invoke.ServeHTTP(w, req)
			return
		}
		r.mux.ServeHTTP(w, req)
	})
	r.log.Info("worker registering", "name", cfg.Name, "advertise", adv)
	r.loops = append(r.loops, wk.Run, func(ctx context.Context) error { return wasmRT.RunStats(ctx, r.store, 0) })
	return r, nil
}

// advertiseURL is the URL a worker registers: adv when given, else
// http://<addr>, which must then name a host routers can reach.
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
