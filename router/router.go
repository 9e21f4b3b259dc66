package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/velo-run/velo/internal/apidoc"
	"github.com/velo-run/velo/internal/headlen"
	"github.com/velo-run/velo/internal/hist"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// Backend hands requests to one worker.
type Backend interface {
	// Serve forwards the request for deployment d mounted at mount. It
	// returns false, having written nothing, when the request never
	// reached a worker able to serve it, so that it may be retried on
	// another.
	Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool
	// Endpoint is the worker's HTTP/1.1 endpoint, which FastServer
	// speaks to itself, or nil when every call must go through Serve
	// (a worker in this process).
	Endpoint() *Endpoint
}

// InProcess makes a Backend of a worker in this process, whose Serve is
// Backend.Serve: every call goes through it.
func InProcess(w interface {
	Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool
}) Backend {
	return inProcess{w.Serve}
}

type inProcess struct {
	serve func(w http.ResponseWriter, r *http.Request, d int64, mount string) bool
}

func (b inProcess) Serve(w http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	return b.serve(w, r, d, mount)
}

func (inProcess) Endpoint() *Endpoint { return nil }

// Store is what the router needs from the store.
type Store interface {
	Routes(ctx context.Context) ([]store.Route, error)
	AddHits(ctx context.Context, batch []store.Hits) error
	Listen(ctx context.Context, channel store.Channel) (<-chan store.Note, error)
}

// Config configures a Router.
type Config struct {
	// Domain, when set, also routes NAME.<Domain> to component NAME.
	Domain string
	// Backend returns how to reach a worker. Called when the route table
	// changes, never per request; the result is cached per worker name
	// and address.
	Backend func(store.Worker) Backend
	// Flush is how often hit counts are written (default 1s).
	Flush time.Duration
	// Resync is how often the whole table is reloaded even without a
	// notification (default 10s).
	Resync time.Duration
	// NoHits turns off hit recording (for measuring its cost).
	NoHits bool
	// WorkerTimeout, when set, leaves out of the table the workers whose
	// last heartbeat is older: a worker that died without refusing
	// connections stops getting traffic at the next refresh.
	WorkerTimeout time.Duration
	// TrustedProxies are the peers (load balancers in front of Velo)
	// whose X-Forwarded-For and X-Forwarded-Proto are kept; from any
	// other peer they are replaced (VELO_TRUSTED_PROXIES).
	TrustedProxies []netip.Prefix
	// MaxClients bounds the rate-limit buckets of one component
	// (default DefaultMaxClients).
	MaxClients int
	// ShareLimits makes routers share what they admitted through the
	// store, so that rate limits hold across routers (velo router; a
	// lone router does not need it).
	ShareLimits bool
	// JWKSClient fetches the keys JWTs are checked with (default: a
	// client with a 5s timeout).
	JWKSClient *http.Client
	// Async, when set, queues the calls made with Prefer: respond-async
	// and the inbound events (ServeEvents); without it those are served
	// as plain calls (and events are 404).
	Async Async
	// Report makes the router report to the store, every second and after
	// each refresh, the route version of the table it serves (velo
	// router): the deploymgr calls a deployment live only once every
	// router reporting serves it. Addr (where it listens) goes with the
	// report, to name a lagging router in the deploymgr's output.
	Report bool
	Addr   string
	// Sessions, when set, recognizes the dashboard's sessions for the
	// components with [access] dashboard = true; without it those take
	// only their API keys (and JWTs).
	Sessions Sessions
	// SignInURL is where a browser without a session is sent for such a
	// component (without it: 401).
	SignInURL string
	Logger    *slog.Logger
}

// reportStore is what a reporting router needs besides Store.
type reportStore interface {
	RouteVersion(ctx context.Context) (int64, error)
	ReportRouter(ctx context.Context, r store.RouterState) error
	DeleteRouter(ctx context.Context, id string) error
}

// Prefix is the path prefix component calls are served under.
const Prefix = "/fn/"

// Router is an http.Handler for component calls.
type Router struct {
	cfg   Config
	store Store
	table atomic.Pointer[table]

	// refreshing serializes Refresh from the store read to the swap, so
	// that a read which started earlier never replaces a newer table.
	refreshing sync.Mutex
	// asked numbers the Refresh calls; covered is the highest number
	// whose call had begun before the last finished store read began
	// (guarded by refreshing). A call already covered has nothing left to
	// read: see Refresh.
	asked    atomic.Uint64
	covered  uint64
	mu       sync.Mutex // guards backends, counters, totals and pending
	backends map[string]cachedBackend
	counters map[countKey]*counters
	totals   map[string]*totals
	pending  map[hitKey]*store.Hits // hits not yet written (store down)
	// unrouted counts calls for names that are no component: they have
	// no statistics of their own (a name per call would grow without
	// bound), so /metrics counts them together.
	unrouted atomic.Int64
	sw       sync.Pool
	// reports is the store reports go to (nil unless Config.Report);
	// started is when this router began; versions what it serves.
	reports  reportStore
	started  time.Time
	versions versions
	jwks     map[string]*jwks // guarded by mu
	// validators by deployment (nil: none usable); guarded by mu.
	validators map[int64]*apidoc.Validator
	sessions   sessionCache // dashboard sessions seen (session.go)
	// parsed caches the settings of the live deployments' manifests;
	// freshest is the freshest heartbeat the refreshes saw (both guarded
	// by refreshing).
	parsed   map[int64]*settings
	freshest time.Time
	sync     limitSync // used by Run's loop only
	// contact is what this router saw of the store (see silenceCutoff).
	contact contact
}

// contact is what a router saw of its store: the last time it was
// reached before it went away, and when it was reached again. Every read
// and write of the router's own loop (refreshes, reports, hit flushes)
// counts, so the router notices an outage within a second or so.
type contact struct {
	mu   sync.Mutex
	ok   time.Time // last success
	down bool      // the last try failed
	lost time.Time // ok when the store went away
	back time.Time // first success after that
}

// saw records a try of the store at now; errors of a cancelled ctx do
// not count.
func (c *contact) saw(ctx context.Context, err error, now time.Time) {
	if err != nil && ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err != nil && !c.down:
		c.down, c.lost = true, c.ok
	case err == nil:
		if c.down {
			c.down, c.back = false, now
		}
		c.ok = now
	}
}

// cutoff is silenceCutoff for what c saw.
func (c *contact) cutoff(now time.Time, timeout time.Duration) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return silenceCutoff(c.lost, c.back, now, timeout)
}

type cachedBackend struct {
	addr string
	b    Backend
}

type table struct {
	routes map[string]*route
	keys   map[[32]byte]apiKey // API keys by the sha256 of their secret
	// hosts maps each custom domain (velo.toml domains) to its
	// component: those a component holds in the store and its live
	// manifest lists.
	hosts map[string]string
}

type route struct {
	name      string
	paused    bool
	depID     int64
	depHeader []string
	targets   []target
	// warming are the workers still preparing the deployment. When no
	// target is ready, a call goes to them and waits there, up to wait
	// (the component's timeout), instead of failing: right after a
	// worker restarts, every placement on it is being prepared again.
	warming []target
	wait    time.Duration
	timeout time.Duration   // the component's, from its manifest
	events  manifest.Events // [events], with defaults
	sched   []manifest.Schedule
	fast    bool   // every target has an Endpoint: FastServer takes it
	local   bool   // every target is in this process: FastServer.InProcess takes it
	gate    *gate  // access and rate limit; nil: neither
	repo    string // the component's repository, for dashboard access
	// validator checks calls against the OpenAPI document (validate =
	// true); nil: not checked.
	validator *apidoc.Validator
	next      atomic.Uint64
	stats     *counters // of this deployment
	totals    *totals   // of the component
	// canary, when set, is the route of the deployment that takes weight
	// percent of the calls (see pick); split counts the calls.
	canary *route
	weight uint64
	split  atomic.Uint64
}

// pick is the route that serves the next call: the canary for weight of
// every 100 calls, spread evenly (call n goes to the canary when n·weight
// mod 100 < weight, which holds for exactly weight of any 100 calls in a
// row), else the live one. No lock, no store: one atomic add.
func (rt *route) pick() *route {
	if rt.canary == nil {
		return rt
	}
	if n := rt.split.Add(1) % 100; n*rt.weight%100 < rt.weight {
		return rt.canary
	}
	return rt
}

type target struct {
	worker []string // X-Velo-Worker value
	b      Backend
	ep     *Endpoint // b.Endpoint()
}

// counters accumulate one deployment's traffic between flushes.
type counters struct {
	hits, errors atomic.Int64
	latency      hist.Recorder
	// inTable says the current table uses them; unused counts the
	// flushes since it stopped (both under r.mu). They go once drained
	// and unused for two flushes: calls that still held an older table
	// have been counted by then.
	inTable bool
	unused  int
}

// totals count a component's calls since start, for /metrics.
type totals struct{ hits, errors atomic.Int64 }

// countKey names the counters of a component's deployment (0: calls no
// deployment answered, as for a component not deployed yet).
type countKey struct {
	component  string
	deployment int64
}

type hitKey struct {
	component  string
	deployment int64
	minute     int64
}

// New returns a router with an empty table; call Refresh or Run to load it.
func New(cfg Config, st Store) *Router {
	if cfg.Flush <= 0 {
		cfg.Flush = time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Router{
		cfg:        cfg,
		store:      st,
		backends:   map[string]cachedBackend{},
		counters:   map[countKey]*counters{},
		totals:     map[string]*totals{},
		pending:    map[hitKey]*store.Hits{},
		jwks:       map[string]*jwks{},
		validators: map[int64]*apidoc.Validator{},
		sync:       limitSync{id: routerID(), seen: map[int64]time.Time{}},
	}
	r.sw.New = func() any { return new(statusWriter) }
	if rs, ok := st.(reportStore); ok && cfg.Report {
		r.reports, r.started = rs, time.Now()
	}
	r.table.Store(&table{routes: map[string]*route{}, keys: map[[32]byte]apiKey{}})
	return r
}

// Run keeps the table current and flushes hits until ctx is done, then
// flushes once more.
func (r *Router) Run(ctx context.Context) error {
	changes, err := r.store.Listen(ctx, store.ChannelRoutes)
	if err != nil {
		return fmt.Errorf("listen for route changes: %w", err)
	}
	var ended <-chan store.Note // sign-outs, for the sessions remembered
	if r.cfg.Sessions != nil {
		if ended, err = r.store.Listen(ctx, store.ChannelSessions); err != nil {
			return fmt.Errorf("listen for sign-outs: %w", err)
		}
	}
	if err := r.Refresh(ctx); err != nil {
		r.cfg.Logger.Warn("load routes failed", "err", err)
	}
	resync := time.NewTicker(r.cfg.Resync)
	defer resync.Stop()
	flush := time.NewTicker(r.cfg.Flush)
	defer flush.Stop()
	ls, share := r.store.(limitStore)
	share = share && r.cfg.ShareLimits
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := r.FlushHits(fctx); err != nil {
				r.cfg.Logger.Warn("final hit flush failed", "err", err)
			}
			if r.reports != nil {
				// Gone: the deploymgr need not wait for it.
				if err := r.reports.DeleteRouter(fctx, r.sync.id); err != nil && !errors.Is(err, store.ErrNotFound) {
					r.cfg.Logger.Warn("unregister router failed", "err", err)
				}
			}
			return nil
		case n, ok := <-changes:
			if !ok {
				changes = nil // the store closed: the resync goes on
				continue
			}
			// Coalesce a burst of notifications into one reload: of the
			// components they name, or of everything after a note that
			// names none (or too many to read one by one).
			names, noted := collect(n, changes)
			if err := r.RefreshComponents(ctx, names...); err != nil {
				if ctx.Err() == nil {
					r.cfg.Logger.Warn("reload routes failed", "components", names, "err", err)
				}
			} else if r.reports != nil {
				// Read after their notes came: those changes are served.
				r.versions.noted(noted)
				r.report(ctx)
			}
		case n, ok := <-ended:
			if !ok {
				ended = nil
				continue
			}
			r.sessionEnded(n)
		case <-resync.C:
			if err := r.Refresh(ctx); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn("resync routes failed", "err", err)
			}
		case <-flush.C:
			r.report(ctx)
			if err := r.FlushHits(ctx); err != nil && ctx.Err() == nil {
				r.cfg.Logger.Warn("flush hits failed; kept for the next try", "err", err)
			}
			if share {
				if err := r.syncLimits(ctx, ls); err != nil && ctx.Err() == nil {
					r.cfg.Logger.Warn("share rate limits failed", "err", err)
				}
			}
		}
	}
}

// Load reads the first route table, retrying a failed read until within
// has passed. Servers call it before they accept: until the table is
// loaded, a call for a component that exists would be answered 404. On
// failure the caller serves anyway (Run keeps trying) rather than not at
// all.
func (r *Router) Load(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	retry := time.NewTicker(100 * time.Millisecond)
	defer retry.Stop()
	for {
		err := r.Refresh(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("load the first route table: %w", err)
		case <-retry.C:
		}
	}
}

// maxIncremental is the most components a burst of notes may name for
// them to be read one by one; above, the whole table is read.
const maxIncremental = 32

// collect returns the components that first and the notes already queued
// behind it name, or nil (read everything) when one of them is a resync
// or they name more than maxIncremental. The queued notes are consumed
// either way.
func collect(first store.Note, c <-chan store.Note) ([]string, []int64) {
	var names []string
	var versions []int64
	if v := first.Version(); v > 0 {
		versions = append(versions, v)
	}
	all := first.Resync() || first.Component() == ""
	if !all {
		names = append(names, first.Component())
	}
	for {
		select {
		case n, ok := <-c:
			if !ok {
				c = nil // closed: what came is all there is
				continue
			}
			if v := n.Version(); v > 0 {
				versions = append(versions, v)
			}
			if all = all || n.Resync() || n.Component() == ""; !all && !slices.Contains(names, n.Component()) {
				names = append(names, n.Component())
				all = len(names) > maxIncremental
			}
		default:
			if all {
				return nil, versions
			}
			return names, versions
		}
	}
}

// Refresh reloads the route table from the store and swaps it in.
//
// Calls that pile up while one reads are coalesced: a call returns without
// reading once a read that began after the call did has finished, since
// that read saw every change made before the call. So a burst of changes
// costs two reads, not one per change, and no change is missed.
func (r *Router) Refresh(ctx context.Context) error {
	err := r.refresh(ctx)
	if err == nil {
		r.report(ctx)
	}
	return err
}

func (r *Router) refresh(ctx context.Context) error {
	n := r.asked.Add(1)
	r.refreshing.Lock()
	defer r.refreshing.Unlock()
	if r.covered >= n {
		return nil
	}
	upto := r.asked.Load() // every call up to here began before this read
	var version int64
	if r.reports != nil {
		// Read before the routes: they hold every change up to it.
		v, err := r.reports.RouteVersion(ctx)
		if err != nil {
			return fmt.Errorf("read route version: %w", err)
		}
		version = v
	}
	routes, err := r.store.Routes(ctx)
	if err != nil {
		r.contact.saw(ctx, err, time.Now())
		return fmt.Errorf("read routes: %w", err)
	}
	keys, err := r.apiKeys(ctx, "")
	r.contact.saw(ctx, err, time.Now()) // before the cutoff below uses it
	if err != nil {
		return err
	}
	// Gates first: jwksFor takes r.mu.
	old := r.table.Load()
	parsed := make(map[int64]*settings, len(routes))
	preps := make([]prepared, len(routes))
	validators := map[int64]*apidoc.Validator{}
	for i, rt := range routes {
		s := r.settingsFor(rt.Deployment, rt.Manifest)
		parsed[rt.Deployment] = s
		preps[i] = r.prepareRoute(ctx, rt, s, old.routes[rt.Component])
		if s.gate.Validate && rt.Deployment != 0 {
			validators[rt.Deployment] = preps[i].validator // nil: unusable, not read again
		}
		if preps[i].canaryValidate {
			validators[rt.Canary.Deployment] = preps[i].canaryValidator
		}
	}
	r.parsed = parsed // what is no longer live goes
	r.mu.Lock()
	defer r.mu.Unlock()
	t := &table{routes: make(map[string]*route, len(routes)), keys: keys, hosts: map[string]string{}}
	usedBackends := map[string]bool{}
	r.freshest = freshestBeat(routes...)
	cutoff := r.cutoff(r.freshest)
	for _, c := range r.counters {
		c.inTable = false // until countersOf below
	}
	for i, rt := range routes {
		nr := r.buildRoute(rt, preps[i], cutoff, usedBackends, old.routes[rt.Component])
		for _, d := range preps[i].s.domains {
			if slices.Contains(rt.Domains, d) {
				t.hosts[d] = rt.Component
			}
		}
		t.routes[rt.Component] = nr
	}
	for name := range r.backends {
		if !usedBackends[name] {
			delete(r.backends, name)
		}
	}
	r.pruneLocked(t)
	for d := range r.validators {
		if _, ok := validators[d]; !ok {
			delete(r.validators, d) // no longer live
		}
	}
	r.table.Store(t)
	r.covered = upto
	if r.reports != nil {
		r.versions.upTo(version)
	}
	return nil
}

// RefreshComponents reads the routes of the named components again and
// swaps in a table with only their entries (routes, custom domains, API
// keys) rebuilt: what a note naming a component asks for, at the cost of
// that component rather than of the whole table. A component gone from
// the store leaves the table. With no name, or a store that cannot read
// one component, it is Refresh. Refresh stays the whole truth: at start,
// on a resync note and every Config.Resync, it heals whatever a missed
// note left stale.
func (r *Router) RefreshComponents(ctx context.Context, names ...string) error {
	cs, ok := r.store.(componentStore)
	if len(names) == 0 || !ok {
		return r.Refresh(ctx)
	}
	n := r.asked.Add(1)
	r.refreshing.Lock()
	defer r.refreshing.Unlock()
	if r.covered >= n {
		return nil // a whole read that began after this call has done it
	}
	type fresh struct {
		name  string
		rt    store.Route
		found bool
		keys  map[[32]byte]apiKey
		prep  prepared
	}
	old := r.table.Load()
	fs := make([]fresh, 0, len(names))
	for _, name := range names {
		if slices.ContainsFunc(fs, func(f fresh) bool { return f.name == name }) {
			continue
		}
		rt, found, err := cs.RoutesOf(ctx, name)
		r.contact.saw(ctx, err, time.Now()) // before the cutoff below uses it
		if err != nil {
			return fmt.Errorf("read routes of %s: %w", name, err)
		}
		f := fresh{name: name, rt: rt, found: found}
		if found {
			if f.keys, err = r.apiKeys(ctx, name); err != nil {
				return err
			}
			s := r.settingsFor(rt.Deployment, rt.Manifest)
			f.prep = r.prepareRoute(ctx, rt, s, old.routes[name])
		}
		fs = append(fs, f)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t := &table{routes: maps.Clone(old.routes), keys: old.keys, hosts: old.hosts}
	changed := func(c string) bool { return slices.ContainsFunc(fs, func(f fresh) bool { return f.name == c }) }
	// Keys and hosts are small: copied without the components' entries.
	t.keys = make(map[[32]byte]apiKey, len(old.keys))
	for h, k := range old.keys {
		if !changed(k.component) {
			t.keys[h] = k
		}
	}
	t.hosts = make(map[string]string, len(old.hosts))
	for d, c := range old.hosts {
		if !changed(c) {
			t.hosts[d] = c
		}
	}
	for _, f := range fs {
		if b := freshestBeat(f.rt); f.found && b.After(r.freshest) {
			r.freshest = b
		}
	}
	cutoff := r.cutoff(r.freshest)
	used := map[string]bool{} // backends are only added here; Refresh drops the unused
	for _, f := range fs {
		prev := old.routes[f.name]
		if prev != nil {
			// Until countersOf below takes them again; flushed and
			// dropped otherwise, as Refresh does.
			prev.stats.inTable = false
			if prev.canary != nil {
				prev.canary.stats.inTable = false
			}
		}
		if !f.found {
			delete(t.routes, f.name)
			delete(r.totals, f.name) // deleted: its /metrics series goes
		} else {
			nr := r.buildRoute(f.rt, f.prep, cutoff, used, prev)
			t.routes[f.name] = nr
			for h, k := range f.keys {
				t.keys[h] = k
			}
			for _, d := range f.prep.s.domains {
				if slices.Contains(f.rt.Domains, d) {
					t.hosts[d] = f.name
				}
			}
		}
		if prev != nil && (!f.found || prev.depID != f.rt.Deployment) {
			delete(r.validators, prev.depID) // no longer live
			delete(r.parsed, prev.depID)
		}
		if prev != nil && prev.canary != nil && (!f.found || prev.canary.depID != f.rt.Deployment &&
			(f.rt.Canary == nil || f.rt.Canary.Deployment != prev.canary.depID)) {
			delete(r.validators, prev.canary.depID) // no longer a canary
		}
	}
	r.table.Store(t)
	return nil
}

// pruneLocked forgets the per-component state of components no longer in
// t, a whole table: their /metrics totals and the JWKS checkers no route
// uses any more. They would otherwise grow with every component (and
// every JWKS address) ever served. r.mu must be held.
func (r *Router) pruneLocked(t *table) {
	for name := range r.totals {
		if t.routes[name] == nil {
			delete(r.totals, name)
		}
	}
	used := make(map[*jwks]bool, len(r.jwks))
	for _, rt := range t.routes {
		if rt.gate != nil && rt.gate.jwt != nil {
			used[rt.gate.jwt] = true
		}
	}
	for k, j := range r.jwks {
		if !used[j] {
			delete(r.jwks, k)
		}
	}
}

// report tells the store that this router is alive and which route
// version it serves (Config.Report); a failed write is retried by the
// next heartbeat.
func (r *Router) report(ctx context.Context) {
	if r.reports == nil {
		return
	}
	err := r.reports.ReportRouter(ctx, store.RouterState{ID: r.sync.id, Addr: r.cfg.Addr, StartedAt: r.started, Applied: r.versions.get()})
	r.contact.saw(ctx, err, time.Now())
	if err != nil && ctx.Err() == nil {
		r.cfg.Logger.Debug("report route version failed", "err", err)
	}
}

// versions is the route version a router serves: every change counted up
// to applied is in its table. A whole read serves everything up to the
// version read before it (upTo); a read of some components serves the
// changes whose notes came before it (noted), and applied moves up once
// the versions below are all served (notes may come out of order).
type versions struct {
	mu      sync.Mutex
	applied int64
	ahead   map[int64]bool // served, above applied
}

// maxAhead bounds the versions held above a gap; past it they are let go
// and the next whole read (at most Config.Resync later) catches up.
const maxAhead = 4096

func (v *versions) get() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.applied
}

func (v *versions) upTo(version int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if version > v.applied {
		v.applied = version
	}
	v.advance()
}

func (v *versions) noted(vs []int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, n := range vs {
		if n > v.applied {
			if v.ahead == nil {
				v.ahead = map[int64]bool{}
			}
			v.ahead[n] = true
		}
	}
	v.advance()
	if len(v.ahead) > maxAhead {
		v.ahead = nil
	}
}

func (v *versions) advance() {
	for v.ahead[v.applied+1] {
		delete(v.ahead, v.applied+1)
		v.applied++
	}
	for n := range v.ahead {
		if n <= v.applied {
			delete(v.ahead, n)
		}
	}
}

// componentStore reads one component's routes (the store's RoutesOf).
type componentStore interface {
	RoutesOf(ctx context.Context, component string) (store.Route, bool, error)
}

// settings is what the router reads of a deployment's manifest. A
// deployment's manifest never changes, so it is parsed once per
// deployment (Router.parsed), not at every refresh.
type settings struct {
	gate    gateManifest
	timeout time.Duration
	events  manifest.Events
	sched   []manifest.Schedule
	domains []string
}

// settingsFor returns the settings of deployment d, parsed from raw when
// not yet cached; r.refreshing must be held.
func (r *Router) settingsFor(d int64, raw []byte) *settings {
	if s := r.parsed[d]; s != nil && d != 0 {
		return s
	}
	s := &settings{gate: gateOf(raw), domains: domainsOf(raw)}
	s.timeout, s.events, s.sched = settingsOf(raw)
	if d != 0 {
		if r.parsed == nil {
			r.parsed = map[int64]*settings{}
		}
		r.parsed[d] = s
	}
	return s
}

// prepared is what a route needs that is built outside r.mu (jwksFor and
// validatorFor take it).
type prepared struct {
	s         *settings
	gate      *gate
	validator *apidoc.Validator
	// canaryValidate says the canary's manifest has validate = true: its
	// share is checked against its own document (canaryValidator; nil:
	// unusable), as it will be once promoted.
	canaryValidate  bool
	canaryValidator *apidoc.Validator
}

func (r *Router) prepareRoute(ctx context.Context, rt store.Route, s *settings, prev *route) prepared {
	p := prepared{s: s}
	var prevGate *gate
	if prev != nil {
		prevGate = prev.gate
	}
	p.gate = r.newGate(rt.Component, s.gate, prevGate)
	if s.gate.Validate && rt.Deployment != 0 {
		p.validator = r.validatorFor(ctx, rt.Component, rt.Deployment)
	}
	if c := rt.Canary; c != nil && gateOf(c.Manifest).Validate {
		p.canaryValidate = true
		p.canaryValidator = r.validatorFor(ctx, rt.Component, c.Deployment)
	}
	return p
}

// buildRoute makes the route of rt, keeping prev's round-robin position;
// r.mu must be held.
func (r *Router) buildRoute(rt store.Route, p prepared, cutoff time.Time, usedBackends map[string]bool, prev *route) *route {
	tot := r.totals[rt.Component]
	if tot == nil {
		tot = new(totals)
		r.totals[rt.Component] = tot
	}
	nr := &route{
		name:      rt.Component,
		paused:    rt.Paused,
		depID:     rt.Deployment,
		depHeader: []string{strconv.FormatInt(rt.Deployment, 10)},
		stats:     r.countersOf(rt.Component, rt.Deployment),
		totals:    tot,
		gate:      p.gate,
		validator: p.validator,
		repo:      rt.Repo,
	}
	nr.timeout, nr.events, nr.sched = p.s.timeout, p.s.events, p.s.sched
	for _, w := range rt.Workers {
		if w.SeenAt.Before(cutoff) {
			continue
		}
		nr.targets = append(nr.targets, r.target(w, usedBackends))
	}
	if len(nr.targets) == 0 {
		for _, w := range rt.Preparing {
			if w.SeenAt.Before(cutoff) {
				continue
			}
			nr.warming = append(nr.warming, r.target(w, usedBackends))
		}
		if len(nr.warming) > 0 {
			nr.wait = nr.timeout
		}
	}
	takes := !nr.paused && nr.depID != 0 && len(nr.targets) > 0 &&
		(nr.gate == nil || nr.gate.jwt == nil && !nr.gate.dashboard) && !p.s.gate.Validate && !p.canaryValidate // JWTs and validation may block: net/http
	nr.fast = takes && !slices.ContainsFunc(nr.targets, func(t target) bool { return t.ep == nil })
	nr.local = takes && !slices.ContainsFunc(nr.targets, func(t target) bool { return t.ep != nil })
	if prev != nil {
		nr.next.Store(prev.next.Load())
	}
	if c := rt.Canary; c != nil && len(nr.targets) > 0 {
		nr.addCanary(r, c, cutoff, usedBackends, prev, p.canaryValidator)
	}
	return nr
}

// countersOf returns the counters of a component's deployment, made when
// new, and marks them used; r.mu must be held.
func (r *Router) countersOf(component string, deployment int64) *counters {
	k := countKey{component, deployment}
	c := r.counters[k]
	if c == nil {
		c = new(counters)
		r.counters[k] = c
	}
	c.inTable, c.unused = true, 0
	return c
}

// addCanary gives the live route rt its canary c, when c has a worker up,
// keeping the previous table's round-robin and split positions; r.mu must
// be held. A canary whose workers are all gone is left out: its share
// goes to the live deployment rather than failing.
func (rt *route) addCanary(r *Router, c *store.Canary, cutoff time.Time, used map[string]bool, prev *route, v *apidoc.Validator) {
	cr := &route{
		name:      rt.name,
		depID:     c.Deployment,
		depHeader: []string{strconv.FormatInt(c.Deployment, 10)},
		stats:     r.countersOf(rt.name, c.Deployment),
		totals:    rt.totals,
		gate:      rt.gate, // the component's access and limits, shared
		repo:      rt.repo,
		validator: v, // its own document's (validate = true in its manifest)
	}
	for _, w := range c.Workers {
		if !w.SeenAt.Before(cutoff) {
			cr.targets = append(cr.targets, r.target(w, used))
		}
	}
	if len(cr.targets) == 0 {
		return
	}
	cr.fast = !slices.ContainsFunc(cr.targets, func(t target) bool { return t.ep == nil })
	rt.fast = rt.fast && cr.fast // FastServer takes both or neither
	cr.local = !slices.ContainsFunc(cr.targets, func(t target) bool { return t.ep != nil })
	rt.local = rt.local && cr.local
	if prev != nil {
		rt.split.Store(prev.split.Load())
		if prev.canary != nil {
			cr.next.Store(prev.canary.next.Load())
		}
	}
	rt.canary, rt.weight = cr, uint64(min(max(c.Weight, 0), 100))
}

// heartbeatCutoff is the heartbeat older than which a worker counts as
// dead: timeout before the freshest heartbeat in the table, not before
// now. While the store is down no worker can write one, so once it is
// back every heartbeat is as old as the outage; judged by the clock alone,
// every healthy worker would look dead until its next beat. A worker that
// really died falls behind the others' beats; when none beats at all,
// nothing is left out (a dead worker then refuses or times out calls, and
// the router tries the next).
func heartbeatCutoff(freshest, now time.Time, timeout time.Duration) time.Time {
	if freshest.After(now) {
		freshest = now
	}
	return freshest.Add(-timeout)
}

// cutoff is heartbeatCutoff now for the freshest heartbeat seen, or the
// zero time (nobody left out) without Config.WorkerTimeout.
func (r *Router) cutoff(freshest time.Time) time.Time {
	if r.cfg.WorkerTimeout <= 0 {
		return time.Time{}
	}
	now := time.Now()
	c := heartbeatCutoff(freshest, now, r.cfg.WorkerTimeout)
	if g, ok := r.contact.cutoff(now, r.cfg.WorkerTimeout); ok && g.Before(c) {
		c = g
	}
	return c
}

// silenceCutoff is, for a WorkerTimeout after the store came back (back)
// from an outage that began after lost, the heartbeat older than which a
// worker counts as dead when only its silence while the store could be
// reached counts: before lost and since back. Judged by the freshest
// heartbeat alone, a worker that had not beaten yet when another had
// would look dead, its beat being as old as the outage. ok is false
// outside that time.
func silenceCutoff(lost, back, now time.Time, timeout time.Duration) (time.Time, bool) {
	since := now.Sub(back)
	if lost.IsZero() || back.IsZero() || since >= timeout {
		return time.Time{}, false
	}
	return lost.Add(-(timeout - max(since, 0))), true
}

// freshestBeat is the freshest heartbeat of the workers of routes.
func freshestBeat(routes ...store.Route) time.Time {
	var freshest time.Time
	for _, rt := range routes {
		for _, ws := range [][]store.Worker{rt.Workers, rt.Preparing} {
			for _, w := range ws {
				if w.SeenAt.After(freshest) {
					freshest = w.SeenAt
				}
			}
		}
	}
	return freshest
}

// target returns how to reach worker w, from the cache when its address
// is unchanged; r.mu must be held.
func (r *Router) target(w store.Worker, used map[string]bool) target {
	used[w.Name] = true
	cb, ok := r.backends[w.Name]
	if !ok || cb.addr != w.Addr {
		cb = cachedBackend{addr: w.Addr, b: r.cfg.Backend(w)}
		r.backends[w.Name] = cb
	}
	return target{worker: []string{w.Name}, b: cb.b, ep: cb.b.Endpoint()}
}

// settingsOf reads the per-request timeout, [events] (with defaults) and
// schedules of a deployment's manifest; the defaults when it cannot be
// read.
func settingsOf(raw []byte) (time.Duration, manifest.Events, []manifest.Schedule) {
	var m struct {
		Timeout   time.Duration       `json:"timeout"`
		Events    manifest.Events     `json:"events"`
		Schedules []manifest.Schedule `json:"schedules"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		m.Timeout, m.Events, m.Schedules = 0, manifest.Events{}, nil
	}
	if m.Timeout <= 0 {
		m.Timeout = manifest.DefaultTimeout
	}
	return m.Timeout, m.Events.WithDefaults(), m.Schedules
}

// domainsOf is the custom domains a deployment's manifest lists.
func domainsOf(raw []byte) []string {
	var m struct {
		Domains []string `json:"domains"`
	}
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m.Domains
}

// ServeHTTP routes one component call.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	name, mount, ok := r.component(req)
	if !ok {
		plain(w, http.StatusNotFound, "not found: component calls are served under "+Prefix+"NAME/")
		return
	}
	start := time.Now()
	t := r.table.Load()
	rt := t.routes[name]
	async := r.cfg.Async != nil && prefersAsync(req.Header)
	switch {
	case rt == nil:
		r.unrouted.Add(1)
		plain(w, http.StatusNotFound, fmt.Sprintf("no component named %q", name))
		return
	case async:
		// Queued whatever the component's state, once admitted: a paused
		// one holds its queue, one without a healthy instance gets it
		// when it has one.
	case rt.paused:
		plain(w, http.StatusServiceUnavailable, fmt.Sprintf("component %q is paused", name))
		r.count(rt, http.StatusServiceUnavailable, start)
		return
	case rt.depID == 0 || len(rt.targets) == 0 && len(rt.warming) == 0:
		plain(w, http.StatusServiceUnavailable, fmt.Sprintf("component %q has no healthy instance", name))
		r.count(rt, http.StatusServiceUnavailable, start)
		return
	}
	rt = rt.pick() // the canary's share goes to it
	var session string
	if rt.gate != nil && rt.gate.dashboard && r.cfg.Sessions != nil {
		session = r.cfg.Sessions.SessionSecret(req) // before prepare strips Velo's cookies
	}
	r.prepare(req)
	if !r.admitHTTP(w, req, rt, t, session, start) || !r.validateCall(w, req, rt, mount, start) {
		return
	}
	if async {
		r.enqueue(w, req, rt, SourceAsync)
		return
	}
	r.forward(w, req, rt, mount, start)
}

// forward sends a prepared call to one of rt's workers, round-robin,
// trying the next when one could not take it, and counts the answer.
func (r *Router) forward(w http.ResponseWriter, req *http.Request, rt *route, mount string, start time.Time) {
	name := rt.name
	var head *headlen.Writer
	if req.Method == http.MethodHead {
		// The Content-Length the GET would have, as the fast paths give.
		head = headlen.New(w)
		w = head
	}
	sw := r.sw.Get().(*statusWriter)
	sw.ResponseWriter, sw.status, sw.sandbox = w, 0, mount != ""
	h := w.Header()
	h["X-Velo-Deployment"] = rt.depHeader
	targets := rt.targets
	if len(targets) == 0 {
		// Only workers preparing it: the call waits there for the
		// preparation, up to the component's timeout.
		targets = rt.warming
		ctx, cancel := context.WithTimeout(req.Context(), rt.wait)
		defer cancel()
		req = req.WithContext(ctx)
	}
	n := uint64(len(targets))
	first := rt.next.Add(1)
	served := false
	for i := uint64(0); i < n && !served; i++ {
		t := targets[(first+i)%n]
		h["X-Velo-Worker"] = t.worker
		served = t.b.Serve(sw, req, rt.depID, mount)
	}
	if !served {
		delete(h, "X-Velo-Worker")
		plain(sw, http.StatusServiceUnavailable, fmt.Sprintf("component %q has no healthy instance", name))
	}
	if head != nil {
		head.Finish()
	}
	status := sw.status
	sw.ResponseWriter = nil
	r.sw.Put(sw)
	r.count(rt, status, start)
}

// count records a call's answer in its component's counters: every
// answer, the router's own 503s included.
func (r *Router) count(rt *route, status int, start time.Time) {
	if r.cfg.NoHits {
		return
	}
	c, t := rt.stats, rt.totals
	c.hits.Add(1)
	t.hits.Add(1)
	if status >= 500 {
		c.errors.Add(1)
		t.errors.Add(1)
	}
	c.latency.Record(time.Since(start))
}

// component finds the component a request is for and the prefix it is
// mounted under.
func (r *Router) component(req *http.Request) (name, mount string, ok bool) {
	if sub, ok := r.hostComponent(req); ok {
		return sub, "", true
	}
	rest, found := strings.CutPrefix(req.URL.Path, Prefix)
	if !found {
		return "", "", false
	}
	name, _, _ = strings.Cut(rest, "/")
	if name == "" {
		return "", "", false
	}
	return name, req.URL.Path[:len(Prefix)+len(name)], true
}

// hostComponent finds the component of a request for NAME.<domain> or
// for one of a component's custom domains.
func (r *Router) hostComponent(req *http.Request) (string, bool) {
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	if name, ok := r.table.Load().hosts[host]; ok {
		return name, true
	}
	if r.cfg.Domain == "" {
		return "", false
	}
	sub, found := strings.CutSuffix(host, "."+r.cfg.Domain)
	return sub, found && sub != "" && !strings.Contains(sub, ".")
}

// Serves reports whether host is one the router answers for a component:
// NAME.<domain> for a component NAME in the route table, or a custom
// domain of a live component. It decides which names get certificates.
func (r *Router) Serves(host string) bool {
	host = strings.ToLower(host)
	t := r.table.Load()
	if _, ok := t.hosts[host]; ok {
		return true
	}
	if r.cfg.Domain == "" {
		return false
	}
	sub, found := strings.CutSuffix(host, "."+r.cfg.Domain)
	return found && !strings.Contains(sub, ".") && t.routes[sub] != nil
}

// Hosts returns a handler that serves requests for NAME.<domain> and for
// components' custom domains with the router and passes every other
// request to next.
func (r *Router) Hosts(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if _, ok := r.hostComponent(req); ok {
			r.ServeHTTP(w, req)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// FlushHits writes the hits counted since the last flush. On failure they
// are kept and written with the next flush, so none are lost while the
// store is away.
func (r *Router) FlushHits(ctx context.Context) error {
	minute := time.Now().UTC().Truncate(time.Minute)
	r.mu.Lock()
	for k, c := range r.counters {
		hits, errs := c.hits.Swap(0), c.errors.Swap(0)
		lat := c.latency.Drain()
		if !c.inTable {
			c.unused++
		}
		if hits == 0 && errs == 0 && lat == nil {
			if c.unused > 2 {
				delete(r.counters, k) // a replaced deployment's
			}
			continue
		}
		r.addPending(store.Hits{Component: k.component, Deployment: k.deployment, Minute: minute, Hits: hits, Errors: errs, Latency: lat})
	}
	batch := make([]store.Hits, 0, len(r.pending))
	for _, p := range r.pending {
		batch = append(batch, *p)
	}
	clear(r.pending)
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := r.store.AddHits(ctx, batch)
	r.contact.saw(ctx, err, time.Now())
	if err != nil {
		r.mu.Lock()
		for _, b := range batch {
			r.addPending(b)
		}
		r.mu.Unlock()
		return fmt.Errorf("write %d hit buckets: %w", len(batch), err)
	}
	return nil
}

// addPending merges h into the hits not yet written; r.mu must be held.
func (r *Router) addPending(h store.Hits) {
	k := hitKey{h.Component, h.Deployment, h.Minute.Unix()}
	p := r.pending[k]
	if p == nil {
		r.pending[k] = &h
		return
	}
	p.Hits += h.Hits
	p.Errors += h.Errors
	p.Latency = hist.Merge(p.Latency, h.Latency)
}

// Totals returns the requests and server errors routed per component since
// start, for /metrics.
func (r *Router) Totals() map[string][2]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][2]int64, len(r.totals))
	for name, t := range r.totals {
		out[name] = [2]int64{t.hits.Load(), t.errors.Load()}
	}
	return out
}

// Lookup reports the live deployment of a component in the current table;
// for tests and benchmarks of the route table.
func (r *Router) Lookup(name string) (deployment int64, ok bool) {
	rt := r.table.Load().routes[name]
	if rt == nil {
		return 0, false
	}
	return rt.depID, true
}

func plain(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(msg + "\n"))
}

// SandboxPolicy is the Content-Security-Policy added to component
// responses served under /fn/NAME/. Those share their origin with
// everything else on the host (the dashboard, other components), so a
// component's page runs as an opaque origin: its scripts run, but it
// cannot read the dashboard, other components or their cookies. A
// component that needs an origin of its own is served on NAME.<domain>
// (VELO_DOMAIN), where no sandbox is added.
const SandboxPolicy = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

// statusWriter remembers the status a backend wrote and adds the sandbox
// policy to a path-mounted component's response head.
type statusWriter struct {
	http.ResponseWriter
	status  int
	sandbox bool
}

// begin is called once, before the response head goes out.
func (s *statusWriter) begin(code int) {
	s.status = code
	h := s.ResponseWriter.Header()
	stripVeloSetCookies(h)
	if s.sandbox {
		h.Add("Content-Security-Policy", SandboxPolicy)
	}
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.begin(code)
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.begin(http.StatusOK)
	}
	return s.ResponseWriter.Write(p)
}

// Flush lets streaming responses through.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		if s.status == 0 {
			s.begin(http.StatusOK)
		}
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// prepare makes a client's request one for a component, once whichever
// worker serves it: the router's own headers and Velo's cookies out, the
// forwarding headers in, and RemoteAddr the client's (see forwarded).
func (r *Router) prepare(req *http.Request) {
	h := req.Header
	for k := range h {
		if len(k) > 7 && strings.EqualFold(k[:7], "X-Velo-") {
			delete(h, k)
		}
	}
	stripVeloCookies(h)
	ap, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		delete(h, "X-Forwarded-For")
		delete(h, "X-Forwarded-Proto")
		return
	}
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	peer := ap.Addr().Unmap()
	xff, xfp, client := r.forwarded(peer, strings.Join(h["X-Forwarded-For"], ", "), h.Get("X-Forwarded-Proto"), scheme)
	h["X-Forwarded-For"] = []string{xff}
	h["X-Forwarded-Proto"] = []string{xfp}
	if client != peer {
		req.RemoteAddr = netip.AddrPortFrom(client, 0).String()
	}
}

// forwarded returns the X-Forwarded-For and X-Forwarded-Proto to send a
// component and the client's address, for a request from peer that came
// with xff and xfp (empty when absent) over scheme. From a trusted proxy
// both are kept, the peer appended to xff, and the client is the last
// address in it before the trusted ones; from anyone else both are
// replaced, and the client is the peer.
func (r *Router) forwarded(peer netip.Addr, xff, xfp, scheme string) (string, string, netip.Addr) {
	p := peer.String()
	if !r.trusted(peer) {
		return p, scheme, peer
	}
	client := peer
	if xff != "" {
		for rest := xff; rest != ""; {
			i := strings.LastIndexByte(rest, ',')
			a, err := netip.ParseAddr(strings.TrimSpace(rest[i+1:]))
			if err != nil {
				break
			}
			if client = a.Unmap(); !r.trusted(client) {
				break
			}
			rest = rest[:max(i, 0)]
		}
		p = xff + ", " + p
	}
	if xfp != "http" && xfp != "https" {
		xfp = scheme
	}
	return p, xfp, client
}

func (r *Router) trusted(a netip.Addr) bool {
	return slices.ContainsFunc(r.cfg.TrustedProxies, func(p netip.Prefix) bool { return p.Contains(a) })
}

// peer is a client connection's address, the scheme it speaks ("http"
// or "https") and, unless it is a trusted proxy, the forwarding header
// lines of every request on it, made once.
type peer struct {
	addr   netip.Addr
	scheme string
	fwd    []byte
}

func (r *Router) peerOf(c net.Conn, scheme string) peer {
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	p := peer{addr: ap.Addr().Unmap(), scheme: scheme}
	if !r.trusted(p.addr) {
		p.fwd = r.forwardLines(p.addr, "", "", scheme)
	}
	return p
}

// forwardLines are the header lines the fast path sends a worker for a
// request from peer over scheme (see forwarded), each ending in CRLF.
func (r *Router) forwardLines(peer netip.Addr, xff, xfp, scheme string) []byte {
	xff, xfp, client := r.forwarded(peer, xff, xfp, scheme)
	b := append([]byte("X-Forwarded-For: "), xff...)
	b = append(append(b, "\r\nX-Forwarded-Proto: "...), xfp...)
	b = append(append(b, "\r\n"+HeaderRemoteAddr+": "...), client.String()...)
	return append(b, "\r\n"...)
}

// ParseTrustedProxies parses VELO_TRUSTED_PROXIES: CIDRs or addresses,
// separated by commas or spaces.
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("trusted proxy %q: not a CIDR or an address", f)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
