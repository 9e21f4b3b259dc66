// Package node assembles Velo's roles into one running process: `velo up`
// runs all of them on one address, and tests start a whole Velo in-process
// through it. It holds wiring only; the roles do the work.
package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
	"github.com/velo-run/velo/webui"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/wasm"
)

// Config configures an all-in-one node.
type Config struct {
	// Addr is the address to listen on ("127.0.0.1:0" picks a port).
	Addr string
	// DataDir holds the embedded store, artifacts, caches and admin.token.
	DataDir string
	// DatabaseURL selects Postgres; empty means SQLite in DataDir.
	DatabaseURL string
	// PublicURL is where users reach this node; default http://<addr>.
	PublicURL string
	// Domain, when set, also serves component NAME at NAME.<Domain>.
	Domain string
	// TrustedProxies are the load balancers in front whose forwarding
	// headers the router keeps (router.Config.TrustedProxies).
	TrustedProxies []netip.Prefix
	// AdminToken is the API token; empty means the one in
	// <DataDir>/admin.token, created on first start.
	AdminToken string
	// MetricsToken is the bearer token /metrics wants besides the admin
	// token (VELO_METRICS_TOKEN); /metrics names every component.
	MetricsToken string
	// Docker makes the docker runtime; nil or an error disables docker
	// components with that error as the reason.
	Docker func(ctx context.Context, owner string, log *slog.Logger) (worker.Runtime, error)
	// WorkerLimits bound the calls the node's worker serves at once.
	WorkerLimits worker.Limits
	// KeepDeployments is how many of each component's newest deployments
	// keep their artifact for rollback (0: deploymgr's default).
	KeepDeployments int
	// Grace is how long a replaced deployment stays placed (0: deploymgr's
	// default); tests shorten it.
	Grace time.Duration
	// NoHits turns hit recording off (benchmarks).
	NoHits bool
	// SecretsKey is the secrets keyring (VELO_SECRETS_KEY's value); empty
	// means the key file <DataDir>/secrets.key, created on first start.
	SecretsKey string
	// GitHub, when set, connects the GitHub App: the webhook at
	// /webhooks/github, GitHub sign-in and POST /api/v1/components.
	GitHub *github.Config
	Logger *slog.Logger
}

// Validate checks the config, naming the field at fault.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("addr %q: want host:port, like 127.0.0.1:8080", c.Addr)
	}
	if c.DataDir == "" {
		return errors.New("data dir: a directory is required")
	}
	return nil
}

// Node is a running all-in-one Velo.
type Node struct {
	URL     string // where it listens, http://host:port
	Token   string // the admin API token
	Store   *store.Store
	Router  *router.Router
	Manager *deploymgr.Manager
	Worker  *worker.Worker
	// GitHub is the GitHub App integration, nil when not configured.
	GitHub *deploymgr.GitHub
	// LoginURL signs the admin in to the dashboard in one click.
	LoginURL string

	log    *slog.Logger
	srv    *router.FastServer
	stop   context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error
	closed sync.Once
}

// Start opens the store and starts every role. Close stops them.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		abs, err := filepath.Abs(filepath.Join(cfg.DataDir, "velo.db"))
		if err != nil {
			return nil, err
		}
		dbURL = "sqlite://" + abs
	}
	st, err := store.Open(ctx, dbURL)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	token := cfg.AdminToken
	if token == "" {
		if token, err = AdminToken(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()
	url := "http://" + ln.Addr().String()
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = url
	}

	keys, err := secrets.Load(cfg.SecretsKey, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	wasmRT, err := wasm.New(wasm.Config{CacheDir: filepath.Join(cfg.DataDir, "wasm-cache"), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("wasm runtime: %w", err)
	}
	runtimes, unavailable := []worker.Runtime{wasmRT}, map[string]error{}
	dockerErr := errors.New("no docker runtime configured")
	if cfg.Docker != nil {
		var rt worker.Runtime
		if rt, dockerErr = cfg.Docker(ctx, "local", log); dockerErr == nil {
			runtimes = append(runtimes, rt)
		}
	}
	if dockerErr != nil {
		unavailable["docker"] = dockerErr
		log.Info("docker components disabled", "reason", dockerErr)
	}
	wk, err := worker.New(worker.Config{Name: "local", DataDir: cfg.DataDir, Logger: log, Unavailable: unavailable, Limits: cfg.WorkerLimits, Secrets: keys}, st, runtimes...)
	if err != nil {
		return nil, err
	}
	rt := router.New(router.Config{
		Domain:         cfg.Domain,
		NoHits:         cfg.NoHits,
		TrustedProxies: cfg.TrustedProxies,
		Logger:         log,
		Backend:        func(store.Worker) router.Backend { return router.InProcess(wk) },
	}, st)
	mgr, err := deploymgr.New(deploymgr.Config{
		PublicURL:       publicURL,
		Domain:          cfg.Domain,
		AdminToken:      token,
		RoutesChanged:   rt.Refresh,
		Secrets:         keys,
		KeepDeployments: cfg.KeepDeployments,
		Grace:           cfg.Grace,
		Logger:          log,
	}, st)
	if err != nil {
		return nil, err
	}

	var app *github.App
	if cfg.GitHub != nil {
		if app, err = github.NewApp(*cfg.GitHub, &http.Client{Timeout: time.Minute}); err != nil {
			return nil, err
		}
	}
	sessions, err := auth.New(auth.Config{Store: st, PublicURL: publicURL, AdminToken: token, App: app, Logger: log})
	if err != nil {
		return nil, err
	}
	mgr.AddAuthenticator(sessions.Authenticator())
	var gh *deploymgr.GitHub
	if app != nil {
		mgr.SetAccess(sessions.Access())
		if gh, err = mgr.EnableGitHub(deploymgr.GitHubConfig{App: app, Store: st}); err != nil {
			return nil, err
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), router.Collector(rt), wasm.Collector(wasmRT))
	api := mgr.Handler()
	mux := http.NewServeMux()
	mux.Handle(router.Prefix, rt)
	mux.Handle("/api/", api)
	mux.Handle("/healthz", api)
	mux.Handle("/metrics", auth.RequireMetricsToken(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), cfg.MetricsToken, token))
	mux.Handle(auth.LoginPath, sessions.Handler())
	mux.Handle("/auth/", sessions.Handler())
	if gh != nil {
		mux.Handle(github.WebhookPath, gh.Handler())
	}
	dash, err := webui.New(webui.Config{
		API: api, Sessions: sessions, PublicURL: publicURL,
		OneClick: true, TokenFile: filepath.Join(cfg.DataDir, "admin.token"), Logger: log,
	})
	if err != nil {
		return nil, err
	}
	mux.Handle("/", dash.Handler())
	handler := rt.Hosts(mux)

	runCtx, stop := context.WithCancel(context.Background())
	n := &Node{
		URL: url, Token: token, Store: st, Router: rt, Manager: mgr, Worker: wk,
		GitHub: gh, LoginURL: sessions.LoginURL(),
		log:  log,
		stop: stop,
		errc: make(chan error, 4),
		// Through FastServer, without event loops: every request head
		// passes the router's parser before net/http frames it.
		srv: &router.FastServer{Router: rt, Loops: -1, Fallback: &http.Server{Handler: handler,
			ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}},
	}
	runs := []func(context.Context) error{wk.Run, rt.Run, mgr.Run}
	if gh != nil {
		runs = append(runs, gh.Run)
	}
	for _, run := range runs {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := run(runCtx); err != nil {
				n.errc <- err
			}
		}()
	}
	go func() {
		if err := n.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.errc <- fmt.Errorf("serve: %w", err)
		}
	}()
	return n, nil
}

// Wait blocks until ctx is done or a role fails, and returns the failure.
func (n *Node) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-n.errc:
		return err
	}
}

// Close stops serving, lets requests in flight finish (up to 15s), stops
// every role and closes the store.
func (n *Node) Close() error {
	n.closed.Do(func() {
		n.log.Info("shutting down")
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = n.srv.Shutdown(ctx)
		n.stop()
		n.wg.Wait()
		n.Store.Close()
	})
	return nil
}

// AdminToken returns VELO_ADMIN_TOKEN's value when set, else the token in
// <dataDir>/admin.token, creating it (0600) on first start.
func AdminToken(dataDir string) (string, error) {
	if t := os.Getenv("VELO_ADMIN_TOKEN"); t != "" {
		return t, nil
	}
	path := filepath.Join(dataDir, "admin.token")
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	t := "velo_" + base64.RawURLEncoding.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin token: %w", err)
	}
	return t, nil
}
