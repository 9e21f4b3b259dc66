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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/certs"
	"github.com/velo-run/velo/internal/events"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
	"github.com/velo-run/velo/webui"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/wasm"
)

// Config configures an all-in-one node: `velo up`, and the whole Velo
// tests start in-process.
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
	// AdminToken is the API token (VELO_ADMIN_TOKEN); empty means the one
	// in <DataDir>/admin.token, created on first start.
	AdminToken string
	// MetricsToken is the bearer token /metrics wants besides the admin
	// token (VELO_METRICS_TOKEN); /metrics names every component.
	MetricsToken string
	// SecretsKey is the secrets keyring (VELO_SECRETS_KEY's value); empty
	// means the key file <DataDir>/secrets.key, created on first start.
	SecretsKey string
	// Docker makes the docker runtime (node.Docker for the local engine);
	// nil or an error disables docker components with that error as the
	// reason.
	Docker DockerFunc
	// TrustedProxies are the load balancers in front whose forwarding
	// headers the router keeps (VELO_TRUSTED_PROXIES;
	// router.Config.TrustedProxies).
	TrustedProxies []netip.Prefix
	// WorkerLimits bound the calls the node's worker serves at once
	// (VELO_WORKER_MAX_INFLIGHT, VELO_WORKER_MEMORY).
	WorkerLimits worker.Limits
	// KeepDeployments is how many of each component's newest deployments
	// keep their artifact for rollback (VELO_KEEP_DEPLOYMENTS; 0:
	// deploymgr's default).
	KeepDeployments int
	// KeepRecords is how many of each component's newest deployments
	// keep their record (VELO_KEEP_DEPLOYMENT_RECORDS; 0: deploymgr's
	// default, 10 × KeepDeployments).
	KeepRecords int
	// Grace is how long a replaced deployment stays placed (0: deploymgr's
	// default); tests shorten it.
	Grace time.Duration
	// NoHits turns hit recording off (benchmarks).
	NoHits bool
	// GitHub, when set, connects the GitHub App: the webhook at
	// /webhooks/github, GitHub sign-in and POST /api/v1/components.
	GitHub *github.Config
	// TLS turns HTTPS on: the dashboard at Domain, components at
	// NAME.<Domain> and their custom domains, with certificates from ACME
	// or files; Addr then answers ACME challenges and redirects.
	TLS    TLS
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
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if c.TLS.HTTPS == HTTPSACME && c.Domain == "" {
		return errors.New("--https needs --domain (VELO_DOMAIN): certificates are obtained for the dashboard at the domain and for NAME.<domain>")
	}
	return nil
}

// Node is a running all-in-one Velo.
type Node struct {
	URL string // where it listens, http://host:port
	// HTTPSAddr is where it serves TLS (host:port), empty without TLS.
	HTTPSAddr string
	Token     string // the admin API token
	Store     *store.Store
	Router    *router.Router
	Manager   *deploymgr.Manager
	Worker    *worker.Worker
	Events    *events.Engine
	// GitHub is the GitHub App integration, nil when not configured.
	GitHub *deploymgr.GitHub
	// LoginURL signs the admin in to the dashboard in one click.
	LoginURL string

	log    *slog.Logger
	proc   *process
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
	keys, err := secrets.Load(cfg.SecretsKey, cfg.DataDir)
	if err != nil {
		return nil, err
	}
	var (
		tlsLn net.Listener
		tlsM  *certs.Manager
		rt    *router.Router
	)
	if cfg.TLS.Enabled() {
		serves := func(host string) bool { return host == cfg.Domain || rt.Serves(host) }
		if tlsLn, tlsM, err = cfg.TLS.listen(st, keys, ln, serves, log); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				tlsLn.Close()
				tlsM.Close()
			}
		}()
	}
	publicURL := cfg.PublicURL
	switch {
	case publicURL != "":
	case tlsLn != nil && cfg.Domain != "":
		publicURL = "https://" + cfg.Domain
		if p := port(tlsLn); p != 443 {
			publicURL += ":" + strconv.Itoa(p)
		}
	default:
		publicURL = url
	}
	rts, wasmRT, unavailable, err := runtimes(ctx, cfg.DataDir, "local", nil, cfg.Docker, log)
	if err != nil {
		return nil, fmt.Errorf("wasm runtime: %w", err)
	}
	wk, err := worker.New(worker.Config{Name: "local", DataDir: cfg.DataDir, Logger: log, Unavailable: unavailable, Limits: cfg.WorkerLimits, Secrets: keys}, st, rts...)
	if err != nil {
		return nil, err
	}
	// The event engine runs queued calls through the router, which
	// queues them through the engine.
	ev, err := events.New(events.Config{Store: st, Secrets: keys, Logger: log,
		Caller: events.CallerFunc(func(ctx context.Context, w http.ResponseWriter, c *router.Call, id int64, attempt int) error {
			return rt.Invoke(ctx, w, c, id, attempt)
		}),
		Schedules: func() []router.Scheduled { return rt.Schedules() },
		Paused:    func(component string) bool { return rt.Paused(component) }})
	if err != nil {
		return nil, err
	}
	rt = router.New(router.Config{
		Domain:         cfg.Domain,
		NoHits:         cfg.NoHits,
		TrustedProxies: cfg.TrustedProxies,
		Async:          ev,
		Logger:         log,
		Backend:        func(store.Worker) router.Backend { return router.InProcess(wk) },
	}, st)
	app, err := githubApp(cfg.GitHub)
	if err != nil {
		return nil, err
	}
	c, err := newControl(st, deploymgr.Config{
		PublicURL:       publicURL,
		Domain:          cfg.Domain,
		AdminToken:      token,
		Secrets:         keys,
		KeepDeployments: cfg.KeepDeployments,
		KeepRecords:     cfg.KeepRecords,
		Grace:           cfg.Grace,
		RoutesChanged: func(ctx context.Context, component string) error {
			return rt.RefreshComponents(ctx, component)
		},
		Events: ev,
		Shells: localShells{wk},
		Logger: log,
	}, publicURL, app)
	if err != nil {
		return nil, err
	}
	// Components with [access] dashboard = true admit the dashboard's
	// signed-in users; a browser without a session is sent to sign in.
	rt.SetSessions(c.sessions, publicURL+"/")
	mgr := c.mgr
	var gh *deploymgr.GitHub
	if app != nil {
		if gh, err = mgr.EnableGitHub(deploymgr.GitHubConfig{App: app, Store: st}); err != nil {
			return nil, err
		}
	}

	reg := newRegistry()
	reg.MustRegister(router.Collector(rt), wasm.Collector(wasmRT), events.Collector(ev))
	mux := http.NewServeMux()
	mux.Handle(router.Prefix, rt)
	mux.HandleFunc(router.EventsPrefix, rt.ServeEvents)
	c.handle(mux)
	mux.Handle("/healthz", c.api)
	mux.Handle("/metrics", metrics(reg, cfg.MetricsToken, token))
	if gh != nil {
		mux.Handle(github.WebhookPath, gh.Handler())
	}
	dash, err := webui.New(webui.Config{
		API: c.api, Sessions: c.sessions, PublicURL: publicURL,
		OneClick: true, TokenFile: filepath.Join(cfg.DataDir, "admin.token"), Logger: log,
	})
	if err != nil {
		return nil, err
	}
	mux.Handle("/", dash.Handler())
	handler := rt.Hosts(mux)

	runs := []func(context.Context) error{wk.Run, rt.Run, mgr.Run, ev.Run,
		func(ctx context.Context) error { return wasmRT.RunStats(ctx, st, 0) }}
	if gh != nil {
		runs = append(runs, gh.Run)
	}
	// Through FastServer, without event loops: component calls are served
	// on its in-process path (a goroutine per connection, the worker
	// called directly, the answer written in one piece), and every other
	// request head passes the router's parser before net/http frames it.
	var srv server = &router.FastServer{Router: rt, Loops: -1, InProcess: true, Fallback: &http.Server{Handler: handler,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
	httpsAddr := ""
	if tlsLn != nil {
		srv = newWithTLS(handler, tlsLn, tlsM, rt, log)
		httpsAddr = tlsLn.Addr().String()
	}
	return &Node{
		URL: url, HTTPSAddr: httpsAddr, Token: token, Store: st, Router: rt, Manager: mgr, Worker: wk, Events: ev,
		GitHub: gh, LoginURL: c.sessions.LoginURL(),
		log:  log,
		proc: start(ln, srv, runs, firstRoutes(rt, log)),
	}, nil
}

// Wait blocks until ctx is done or a role fails, and returns the failure.
func (n *Node) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-n.proc.errc:
		return err
	}
}

// Close stops serving, lets requests in flight finish (up to 15s), stops
// every role and closes the store.
func (n *Node) Close() error {
	n.closed.Do(func() {
		n.log.Info("shutting down")
		n.proc.stop()
		n.Store.Close()
	})
	return nil
}

// AdminToken returns the token in <dataDir>/admin.token, creating it
// (0600) on first start.
func AdminToken(dataDir string) (string, error) {
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
