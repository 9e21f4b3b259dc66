package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
)

// DefaultWorkerTimeout is how long a worker may stay silent before it
// loses its placements (deploymgr) and leaves the route table (router).
const DefaultWorkerTimeout = 10 * time.Second

// shutdownTimeout bounds how long requests in flight may take to finish
// when a role stops.
const shutdownTimeout = 15 * time.Second

// Cluster is what every separate role needs: where it listens and the
// Postgres database the cluster shares.
type Cluster struct {
	// Addr is the address to listen on, host:port (VELO_ADDR, --addr).
	Addr string
	// DatabaseURL is the cluster's Postgres (VELO_DATABASE_URL).
	DatabaseURL string
	// AdminToken is the bootstrap API token (VELO_ADMIN_TOKEN): deploymgr
	// and webui sign the admin in with it, and every role's /metrics
	// takes it.
	AdminToken string
	// MetricsToken is the bearer token /metrics wants besides the admin
	// token (VELO_METRICS_TOKEN); /metrics is off without either.
	MetricsToken string
	// SecretsKey is the secrets keyring (VELO_SECRETS_KEY's value); empty
	// means none (secrets cannot be set or delivered).
	SecretsKey string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Listener, when set, is served instead of listening on Addr: a
	// socket systemd holds across restarts (socket activation), so that a
	// restarted role's clients queue instead of being refused.
	Listener net.Listener
}

func (c Cluster) validate(role string) error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("%s: --addr %q: want host:port, like 127.0.0.1:8080", role, c.Addr)
	}
	if c.DatabaseURL == "" {
		return fmt.Errorf("%s: VELO_DATABASE_URL is not set: give the Postgres URL, like postgres://velo:secret@db:5432/velo", role)
	}
	if !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return fmt.Errorf("%s: VELO_DATABASE_URL must be a postgres:// URL: separate roles share state through Postgres (use velo up for the embedded store)", role)
	}
	return nil
}

func (c Cluster) logger(role string) *slog.Logger {
	if c.Logger == nil {
		return slog.Default().With("role", role)
	}
	return c.Logger.With("role", role)
}

// Role is one role of a cluster, built and ready to Run: its store, its
// HTTP handler (with /healthz and /metrics) and the loops that keep its
// state current.
type Role struct {
	name    string
	addr    string
	ln      net.Listener // Cluster.Listener, or nil to listen on addr
	log     *slog.Logger
	store   *store.Store
	keys    *secrets.Keyring // nil without Cluster.SecretsKey
	reg     *prometheus.Registry
	mux     *http.ServeMux
	handler http.Handler // default mux
	// fast, when set, serves the listener through the router's fast
	// path, with the handler as its fallback.
	fast *router.Router
	// routes, when set, has its first route table loaded before the
	// listener serves (see firstRoutes).
	routes *router.Router
	// tls, when set, serves HTTPS too, with certificates for the names
	// serves accepts; the plain listener then redirects.
	tls    *TLS
	serves func(string) bool
	loops  []func(context.Context) error
}

// openRole opens the role's store and gives it /healthz and /metrics.
func openRole(ctx context.Context, name string, c Cluster) (*Role, error) {
	if err := c.validate(name); err != nil {
		return nil, err
	}
	keys, err := secrets.Load(c.SecretsKey, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	st, err := store.Open(ctx, c.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r := &Role{name: name, addr: c.Addr, ln: c.Listener, log: c.logger(name), store: st, keys: keys, reg: newRegistry(), mux: http.NewServeMux()}
	r.handler = r.mux
	r.mux.HandleFunc("GET /healthz", r.healthz)
	r.mux.Handle("GET /metrics", metrics(r.reg, c.MetricsToken, c.AdminToken))
	return r, nil
}

// metrics serves reg to a bearer of one of tokens: /metrics names every
// component.
func metrics(reg *prometheus.Registry, tokens ...string) http.Handler {
	return auth.RequireMetricsToken(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), tokens...)
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// healthz answers ok while the process serves. A role keeps working from
// memory while Postgres is away (the router serves its last table), so the
// store's state is reported, not made a failure.
func (r *Role) healthz(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if _, err := r.store.Workers(ctx); err != nil {
		fmt.Fprintln(w, "ok (store unreachable)")
		return
	}
	fmt.Fprintln(w, "ok")
}

// fail closes what the role opened; for constructors that give up.
func (r *Role) fail(err error) (*Role, error) {
	r.store.Close()
	return nil, err
}

// Store is the role's store, open until Run returns.
func (r *Role) Store() *store.Store { return r.store }

// Run listens on the role's address and runs its loops until ctx is done
// or one fails; then it stops the server (letting requests in flight
// finish, up to 15s), stops the loops, closes the store and returns the
// failure, if any. A Role runs once.
func (r *Role) Run(ctx context.Context) error {
	defer r.store.Close()
	ln := r.ln
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", r.addr); err != nil {
			return fmt.Errorf("listen on %s: %w", r.addr, err)
		}
	}
	srv := &http.Server{
		Handler:           r.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	var s server = srv
	switch {
	case r.tls != nil:
		tlsLn, m, err := r.tls.listen(r.store, r.keys, ln, r.serves, r.log)
		if err != nil {
			ln.Close()
			return err
		}
		s = newWithTLS(r.handler, tlsLn, m, r.fast, r.log)
		r.log.Info("serving https", "addr", tlsLn.Addr().String())
	case r.fast != nil:
		s = &router.FastServer{Router: r.fast, Fallback: srv}
	}
	var ready func()
	if r.routes != nil {
		ready = firstRoutes(r.routes, r.log)
	}
	p := start(ln, s, r.loops, ready)
	r.log.Info("listening", "addr", ln.Addr().String())
	var failed error
	select {
	case <-ctx.Done():
	case failed = <-p.errc:
	}
	r.log.Info("shutting down")
	p.stop()
	return failed
}

// server is an *http.Server or the router's FastServer.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// process is a server and loops, running: what a Role and `velo up` run.
type process struct {
	srv    server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error // a loop's or the server's failure
}

// firstRoutes returns what loads rt's first route table, so that nothing
// is served before it: a call arriving in the first milliseconds would be
// answered 404 for a component that exists. After 10s of failed reads it
// serves anyway (the router's Run keeps trying).
func firstRoutes(rt *router.Router, log *slog.Logger) func() {
	return func() {
		if err := rt.Load(context.Background(), 10*time.Second); err != nil {
			log.Warn("serving before the route table is loaded", "err", err)
		}
	}
}

// start runs each loop in its own goroutine and, once ready (if given)
// has returned, serves ln with srv, until stop.
func start(ln net.Listener, srv server, loops []func(context.Context) error, ready func()) *process {
	ctx, cancel := context.WithCancel(context.Background())
	p := &process{srv: srv, cancel: cancel, errc: make(chan error, len(loops)+1)}
	for _, loop := range loops {
		p.wg.Go(func() {
			if err := loop(ctx); err != nil {
				p.errc <- err
			}
		})
	}
	if ready != nil {
		ready()
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.errc <- fmt.Errorf("serve: %w", err)
		}
	}()
	return p
}

// stop shuts the server down (requests in flight get up to 15s), then
// stops the loops and waits for them.
func (p *process) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
	p.cancel()
	p.wg.Wait()
}
