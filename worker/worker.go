package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
)

// Store is what the worker needs from the store.
type Store interface {
	UpsertWorker(ctx context.Context, w store.Worker) error
	Heartbeat(ctx context.Context, name string, at time.Time) error
	ResetPlacements(ctx context.Context, worker string) error
	WorkerPlacements(ctx context.Context, worker string) ([]store.Placement, error)
	Placements(ctx context.Context, deployment int64) ([]store.Placement, error)
	PutPlacement(ctx context.Context, p store.Placement) error
	Deployment(ctx context.Context, id int64) (store.Deployment, error)
	Artifact(ctx context.Context, digest string) ([]byte, error)
	AppendBuildLog(ctx context.Context, id int64, text string) error
	AppendLogs(ctx context.Context, lines []store.LogLine) error
	Secrets(ctx context.Context, component string) ([]store.Secret, error)
	// Component is read for previews: whether NAME--pr-N and NAME come
	// from the same repository (and so share secrets marked for previews).
	Component(ctx context.Context, name string) (store.Component, error)
	Listen(ctx context.Context, channel store.Channel) (<-chan store.Note, error)
	Notify(ctx context.Context, n store.Note) error
}

// storeTimeout bounds each store call of Run's loop (reads of placements,
// reports, notes): a Postgres that hangs, rather than refusing, would
// otherwise hold the loop, and with it the heartbeat, until it answers.
// minHeartbeatTimeout is the least a heartbeat gets (twice the interval
// when that is more).
const (
	storeTimeout        = 15 * time.Second
	minHeartbeatTimeout = 5 * time.Second
)

// Config configures a Worker.
type Config struct {
	// Name is the worker's identity in the cluster.
	Name string
	// Addr is the base URL other roles reach this worker at; "" when it
	// only serves in-process (velo up).
	Addr string
	// DataDir holds unpacked artifacts.
	DataDir string
	// Heartbeat is how often the worker reports it is alive (default 2s).
	Heartbeat time.Duration
	// Resync is how often placements are re-read even without a
	// notification (default 5s).
	Resync time.Duration
	// Parallel bounds concurrent Prepare calls (default 4).
	Parallel int
	// Logger receives the worker's own events.
	Logger *slog.Logger
	// Unavailable names runtimes that could not start, with the reason;
	// a deployment of that kind fails with it.
	Unavailable map[string]error
	// Limits bound the calls served at once (see Limits).
	Limits Limits
	// Secrets opens the components' secrets; nil means this worker has no
	// key, and components with secrets fail here with that reason.
	Secrets *secrets.Keyring
}

func (c Config) withDefaults() (Config, error) {
	if c.Heartbeat <= 0 {
		c.Heartbeat = 2 * time.Second
	}
	if c.Resync <= 0 {
		c.Resync = 5 * time.Second
	}
	if c.Parallel <= 0 {
		c.Parallel = 4
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	var err error
	c.Limits, err = c.Limits.withDefaults()
	return c, err
}

// Worker prepares and serves the deployments placed on it.
type Worker struct {
	cfg      Config
	store    Store
	runtimes map[string]Runtime
	logs     *logBatcher
	adm      *admission

	// serving maps deployment id → instance; replaced whole on change so
	// the request path reads it without a lock.
	serving atomic.Pointer[map[int64]Instance]
	mu      sync.Mutex // guards serving writes and preparing
	// preparing holds deployments whose Prepare is under way, each with
	// a channel closed when it ends: calls for them wait (see instance).
	preparing map[int64]chan struct{}
	// started is closed once Run has read its placements and started
	// preparing them (or has given up): until then a call for any
	// deployment waits, since it may be one of them.
	started     chan struct{}
	startedOnce sync.Once
	// loaded says what each served instance runs, for retiring.
	loaded map[int64]loadedSpec
	// sums fingerprints the secrets each served deployment runs with, and
	// restarts counts how often it was prepared again for them.
	sums     map[int64][32]byte
	restarts map[int64]int
	// secretEvents counts secret changes seen: a prepare that began before
	// the latest one checks its component's secrets again once it is done.
	secretEvents uint64
	reloading    map[string]*reloadState
	// trees counts, per artifact digest, the loads and instances using its
	// unpacked tree; the last to go removes it.
	trees map[string]int
	sem   chan struct{}
	wg    sync.WaitGroup
}

// New returns a worker serving with the given runtimes.
func New(cfg Config, st Store, runtimes ...Runtime) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		return nil, errors.New("worker: name is required")
	}
	if cfg.DataDir == "" {
		return nil, errors.New("worker: data dir is required")
	}
	w := &Worker{
		cfg:       cfg,
		store:     st,
		runtimes:  map[string]Runtime{},
		preparing: map[int64]chan struct{}{},
		started:   make(chan struct{}),
		loaded:    map[int64]loadedSpec{},
		sums:      map[int64][32]byte{},
		restarts:  map[int64]int{},
		reloading: map[string]*reloadState{},
		trees:     map[string]int{},
		sem:       make(chan struct{}, cfg.Parallel),
		adm:       newAdmission(cfg.Limits),
	}
	for _, rt := range runtimes {
		w.runtimes[rt.Name()] = rt
		if m, ok := rt.(IdleMemory); ok {
			w.adm.idle = append(w.adm.idle, m)
		}
	}
	empty := map[int64]Instance{}
	w.serving.Store(&empty)
	w.logs = newLogBatcher(st, cfg.Logger)
	return w, nil
}

// Name is the worker's name.
func (w *Worker) Name() string { return w.cfg.Name }

// Serve hands a request to the instance of deployment d. It returns false,
// having written nothing, when this worker does not serve d (any more, or
// its preparation failed): the caller may try another worker. A call for
// a deployment being prepared here waits for it (see instance).
func (w *Worker) Serve(rw http.ResponseWriter, r *http.Request, d int64, mount string) bool {
	inst, ok := w.instance(r.Context(), d)
	if !ok {
		return false
	}
	inst.Serve(rw, r, mount)
	return true
}

// maxPrepareWait bounds how long a call waits for a preparation when its
// context has no earlier deadline (routers give it the component's
// timeout).
const maxPrepareWait = 15 * time.Minute

// instance returns the instance serving deployment d. When d is being
// prepared here — right after the worker starts, every placement is, and
// the first calls would otherwise fail until the module is prepared again
// from the cache — it waits for that preparation, until ctx is done: a
// preparation that fails, or a deployment not placed here, answers at
// once.
func (w *Worker) instance(ctx context.Context, d int64) (Instance, bool) {
	if inst, ok := (*w.serving.Load())[d]; ok {
		return inst, true
	}
	ctx, cancel := context.WithTimeout(ctx, maxPrepareWait)
	defer cancel()
	select {
	case <-w.started:
	case <-ctx.Done():
		return nil, false
	}
	w.mu.Lock()
	inst, ok := (*w.serving.Load())[d]
	done := w.preparing[d]
	w.mu.Unlock()
	if ok || done == nil {
		return inst, ok
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, false
	}
	inst, ok = (*w.serving.Load())[d]
	return inst, ok
}

// markStarted releases the calls waiting for Run's first look at its
// placements.
func (w *Worker) markStarted() { w.startedOnce.Do(func() { close(w.started) }) }

// Serves reports whether deployment d is ready on this worker.
func (w *Worker) Serves(d int64) bool {
	_, ok := (*w.serving.Load())[d]
	return ok
}

// Run registers the worker and converges on its placements until ctx is
// done; then it closes every instance, waiting up to 10s for requests in
// flight, and returns.
func (w *Worker) Run(ctx context.Context) error {
	defer w.markStarted()
	if f := w.cfg.Limits.HeapFloor; f > 0 {
		done := make(chan struct{})
		floorCtx, stop := context.WithCancel(ctx)
		go func() { defer close(done); holdHeapFloor(floorCtx, f) }()
		defer func() { stop(); <-done }()
	}
	// The start's store calls have storeTimeout each, as the loop's: a
	// worker starting while Postgres hangs fails saying which call the
	// store did not answer, rather than waiting for it.
	now := time.Now()
	if err := startCall(ctx, func(ctx context.Context) error {
		return w.store.UpsertWorker(ctx, store.Worker{Name: w.cfg.Name, Addr: w.cfg.Addr, StartedAt: now, SeenAt: now})
	}); err != nil {
		return fmt.Errorf("register worker %s: %w", w.cfg.Name, err)
	}
	// Nothing is loaded yet: until each placement is prepared again, no
	// router may send it traffic.
	if err := startCall(ctx, func(ctx context.Context) error { return w.store.ResetPlacements(ctx, w.cfg.Name) }); err != nil {
		return fmt.Errorf("reset placements of %s: %w", w.cfg.Name, err)
	}
	w.notify(ctx, store.RoutesChanged())
	sctx, cancel := context.WithTimeout(ctx, storeTimeout)
	w.sweepTrees(sctx)
	cancel()
	events, err := w.store.Listen(ctx, store.ChannelPlacements)
	if err != nil {
		return fmt.Errorf("listen for placements: %w", err)
	}
	secretEvents, err := w.store.Listen(ctx, store.ChannelSecrets)
	if err != nil {
		return fmt.Errorf("listen for secrets: %w", err)
	}
	logsDone := make(chan struct{})
	go func() { defer close(logsDone); w.logs.run(ctx) }()

	heartbeat := time.NewTicker(w.cfg.Heartbeat)
	defer heartbeat.Stop()
	resync := time.NewTicker(w.cfg.Resync)
	defer resync.Stop()
	w.reconcile(ctx)
	w.markStarted()
	for {
		select {
		case <-ctx.Done():
			w.shutdown()
			<-logsDone
			return nil
		case n, ok := <-events:
			if !ok {
				events = nil // the store closed; ctx ends next
				continue
			}
			if ds := drainPlacementNotes(n, events); ds == nil {
				w.reconcile(ctx)
			} else {
				for _, d := range ds {
					w.reconcileOne(ctx, d)
				}
			}
		case <-resync.C:
			w.reconcile(ctx)
		case n, ok := <-secretEvents:
			switch {
			case !ok:
				secretEvents = nil // the store closed; ctx ends next
			case n.Resync():
				w.allSecretsChanged(ctx)
			default:
				w.secretsChanged(ctx, n.Component())
			}
		case t := <-heartbeat.C:
			hctx, cancel := context.WithTimeout(ctx, max(2*w.cfg.Heartbeat, minHeartbeatTimeout))
			err := w.store.Heartbeat(hctx, w.cfg.Name, t)
			cancel()
			if err != nil && ctx.Err() == nil {
				w.cfg.Logger.Warn("heartbeat failed", "worker", w.cfg.Name, "err", err)
			}
		}
	}
}

// startCall runs one store call of Run's start with storeTimeout; an
// answer that did not come in time says so.
func startCall(ctx context.Context, call func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	err := call(cctx)
	if err != nil && ctx.Err() == nil && cctx.Err() != nil {
		return fmt.Errorf("the store did not answer within %s: %w", storeTimeout, err)
	}
	return err
}

// maxNamedNotes is how many placement notes naming a deployment one turn
// of Run reads them one by one; beyond it, or on a note naming none, it
// reads all of this worker's placements at once.
const maxNamedNotes = 32

// drainPlacementNotes returns the deployments named by first and by the
// notes already waiting behind it, or nil (read every placement) when one
// of them names none (a resync, a change of many) or there are more than
// maxNamedNotes.
func drainPlacementNotes(first store.Note, more <-chan store.Note) []int64 {
	if first.Resync() {
		return nil
	}
	ds := []int64{first.Deployment()}
	for {
		select {
		case n, ok := <-more:
			if !ok || n.Resync() || len(ds) == maxNamedNotes {
				return nil
			}
			if !slices.Contains(ds, n.Deployment()) {
				ds = append(ds, n.Deployment())
			}
		default:
			return ds
		}
	}
}

// reconcile starts preparing new placements and closes instances whose
// placement is gone: every placement of this worker, read at start, on a
// resync and every Config.Resync.
func (w *Worker) reconcile(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, storeTimeout)
	placements, err := w.store.WorkerPlacements(rctx, w.cfg.Name)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.cfg.Logger.Warn("read placements failed", "worker", w.cfg.Name, "err", err)
		}
		return
	}
	w.converge(ctx, placements, 0)
}

// reconcileOne is reconcile for deployment d alone, after a note naming
// it: what a deploy costs does not grow with the deployments placed here.
func (w *Worker) reconcileOne(ctx context.Context, d int64) {
	rctx, cancel := context.WithTimeout(ctx, storeTimeout)
	all, err := w.store.Placements(rctx, d)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			w.cfg.Logger.Warn("read placements failed", "worker", w.cfg.Name, "deployment", d, "err", err)
		}
		return
	}
	var mine []store.Placement
	for _, p := range all {
		if p.Worker == w.cfg.Name {
			mine = append(mine, p)
		}
	}
	w.converge(ctx, mine, d)
}

// converge makes what this worker serves follow placements: all of them
// when only is 0, else those of deployment only (placements holds no
// other).
func (w *Worker) converge(ctx context.Context, placements []store.Placement, only int64) {
	want := make(map[int64]store.Placement, len(placements))
	for _, p := range placements {
		want[p.Deployment] = p
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	serving := *w.serving.Load()
	var gone []int64
	if only == 0 {
		for d := range serving {
			if _, ok := want[d]; !ok {
				gone = append(gone, d)
			}
		}
	} else if _, ok := want[only]; !ok {
		if _, ok := serving[only]; ok {
			gone = append(gone, only)
		}
	}
	if len(gone) > 0 {
		next := make(map[int64]Instance, len(serving))
		for d, inst := range serving {
			next[d] = inst
		}
		for _, d := range gone {
			delete(next, d)
		}
		w.serving.Store(&next)
		for _, d := range gone {
			inst, spec := serving[d], w.loaded[d]
			delete(w.loaded, d)
			delete(w.sums, d)
			delete(w.restarts, d)
			retire := !w.usesArtifact(spec)
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				w.close(inst, spec, retire)
			}()
		}
	}
	for d, p := range want {
		if p.State == store.PlacementFailed {
			continue
		}
		if _, ok := serving[d]; ok {
			if p.State != store.PlacementReady {
				// Loaded but the store lost track (e.g. reset): say so again.
				w.report(ctx, d, w.loaded[d].component, nil)
			}
			continue
		}
		if w.preparing[d] != nil {
			continue
		}
		w.preparing[d] = make(chan struct{})
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.prepare(ctx, d)
		}()
	}
}

// loadedSpec is what an instance runs.
type loadedSpec struct {
	runtime, component, digest string
	secrets                    [32]byte // secretSet.sum of its secrets
}

// usesArtifact reports whether a loaded instance runs spec's artifact;
// w.mu must be held.
func (w *Worker) usesArtifact(spec loadedSpec) bool {
	for _, s := range w.loaded {
		if s.runtime == spec.runtime && s.component == spec.component && s.digest == spec.digest {
			return true
		}
	}
	return false
}

// close stops a replaced instance, letting requests in flight finish, and
// retires its artifact when nothing else here uses it.
func (w *Worker) close(inst Instance, spec loadedSpec, retire bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := inst.Close(ctx); err != nil {
		// A request still runs and may read the tree (files): it stays
		// until the next start sweeps it.
		w.cfg.Logger.Warn("close instance failed", "component", spec.component, "err", err)
	} else {
		w.dropTree(spec.digest)
	}
	if retire {
		w.retire(spec)
	}
}

// retire lets the runtime drop what it keeps for spec's artifact.
func (w *Worker) retire(spec loadedSpec) {
	r, ok := w.runtimes[spec.runtime].(Retirer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Retire(ctx, spec.component, spec.digest); err != nil {
		w.cfg.Logger.Warn("retire artifact failed", "component", spec.component, "digest", spec.digest, "err", err)
	}
}

// prepare readies deployment d and reports the outcome in its placement.
func (w *Worker) prepare(ctx context.Context, d int64) {
	select {
	case w.sem <- struct{}{}:
		defer func() { <-w.sem }()
	case <-ctx.Done():
		w.prepared(d)
		return
	}
	w.mu.Lock()
	events := w.secretEvents
	w.mu.Unlock()
	inst, spec, err := w.load(ctx, d, 0, nil)
	if err == nil && ctx.Err() != nil {
		// Shutting down: not registered, so shutdown does not close it again.
		_ = inst.Close(context.Background())
		w.prepared(d)
		return
	}
	w.mu.Lock()
	done := w.preparing[d]
	delete(w.preparing, d)
	if err != nil && spec.runtime != "" && !w.usesArtifact(spec) {
		// A failed Prepare may have left something behind (a built image
		// whose container never got ready): nothing half-made stays.
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.retire(spec)
		}()
	}
	recheck := false
	if err == nil {
		w.loaded[d] = spec
		w.sums[d], w.restarts[d] = spec.secrets, 0
		recheck = w.secretEvents != events
		serving := *w.serving.Load()
		next := make(map[int64]Instance, len(serving)+1)
		for k, v := range serving {
			next[k] = v
		}
		next[d] = inst
		w.serving.Store(&next)
	}
	close(done) // the calls waiting for d go on: served, or refused at once
	w.mu.Unlock()
	if ctx.Err() != nil {
		return
	}
	w.report(ctx, d, spec.component, err)
	if recheck {
		w.secretsChanged(ctx, spec.component) // they changed while it was prepared
	}
}

// prepared ends d's preparation, releasing the calls waiting for it; they
// find its instance in serving if it succeeded.
func (w *Worker) prepared(d int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if done := w.preparing[d]; done != nil {
		close(done)
		delete(w.preparing, d)
	}
}

// report records how preparing deployment d of component went and tells
// the routers, which read that component's routes again (all of them when
// component is "", as when d could not even be read).
func (w *Worker) report(ctx context.Context, d int64, component string, err error) {
	p := store.Placement{Deployment: d, Worker: w.cfg.Name, State: store.PlacementReady}
	if err != nil {
		p.State, p.Error = store.PlacementFailed, err.Error()
		w.cfg.Logger.Warn("prepare failed", "deployment", d, "err", err)
	}
	pctx, cancel := context.WithTimeout(ctx, storeTimeout)
	perr := w.store.PutPlacement(pctx, p)
	cancel()
	if perr != nil {
		w.cfg.Logger.Warn("report placement failed", "deployment", d, "err", perr)
		return
	}
	w.notify(ctx, store.PlacementsChanged(d))
	w.notify(ctx, store.RoutesChangedFor(component))
}

// notify sends n, logging a failure: the listeners' periodic resync
// catches up on a lost note, so it is no reason to stop.
func (w *Worker) notify(ctx context.Context, n store.Note) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	if err := w.store.Notify(ctx, n); err != nil {
		w.cfg.Logger.Warn("notify failed; the next resync catches up", "worker", w.cfg.Name, "note", n, "err", err)
	}
}

// load fetches, unpacks and prepares deployment d with the component's
// secrets (set, or read now when nil). restart is Spec.Restart: above 0
// the deployment is being prepared again for changed secrets, and its
// progress goes nowhere rather than into its build log again.
func (w *Worker) load(ctx context.Context, d int64, restart int, set *secretSet) (inst Instance, spec loadedSpec, err error) {
	dep, err := w.store.Deployment(ctx, d)
	if err != nil {
		return nil, spec, fmt.Errorf("read deployment %d: %w", d, err)
	}
	var m manifest.Manifest
	if err := json.Unmarshal(dep.Manifest, &m); err != nil {
		return nil, spec, fmt.Errorf("deployment %d: bad manifest: %w", d, err)
	}
	spec = loadedSpec{runtime: m.Runtime, component: dep.Component, digest: dep.Digest}
	if set == nil {
		s, err := w.openSecrets(ctx, dep.Component)
		if err != nil {
			return nil, spec, err
		}
		set = &s
	}
	spec.secrets = set.sum
	defer func() {
		// A failure may quote the component's output (a container that
		// exited at start): never a secret value in it.
		if err != nil && set.redact != nil {
			err = errors.New(set.redact.Line(err.Error()))
		}
	}()
	rt, ok := w.runtimes[m.Runtime]
	if !ok {
		if why := w.cfg.Unavailable[m.Runtime]; why != nil {
			return nil, spec, fmt.Errorf("%s runtime unavailable on worker %s: %w", m.Runtime, w.cfg.Name, why)
		}
		return nil, spec, fmt.Errorf("worker %s has no %s runtime", w.cfg.Name, m.Runtime)
	}
	if !validDigest(dep.Digest) {
		return nil, spec, fmt.Errorf("bad artifact digest %q", dep.Digest)
	}
	w.useTree(dep.Digest)
	dir, err := w.unpack(ctx, dep.Digest)
	if err != nil {
		w.dropTree(dep.Digest)
		return nil, spec, err
	}
	var blog io.Writer = io.Discard
	if restart == 0 {
		bl := newBuildLog(w.store, d, w.cfg.Logger)
		defer bl.Close()
		blog = redactWriter{w: bl, r: set.redact}
	}
	fmt.Fprintf(blog, "worker %s: preparing %s deployment %d (artifact %.12s)\n", w.cfg.Name, m.Runtime, d, dep.Digest)
	start := time.Now()
	inst, err = rt.Prepare(ctx, Spec{
		Component:  dep.Component,
		Deployment: d,
		Digest:     dep.Digest,
		Dir:        dir,
		Manifest:   m,
		Secrets:    set.values,
		Restart:    restart,
		BuildLog:   blog,
		Logs:       logSink{b: w.logs, component: dep.Component, deployment: d, redact: set.redact},
	})
	if err != nil {
		fmt.Fprintf(blog, "worker %s: failed: %v\n", w.cfg.Name, err)
		w.dropTree(dep.Digest)
		return nil, spec, err
	}
	lim, err := w.limit(inst, dep.Component, m)
	if err != nil {
		fmt.Fprintf(blog, "worker %s: failed: %v\n", w.cfg.Name, err)
		_ = inst.Close(ctx)
		w.dropTree(dep.Digest)
		return nil, spec, err
	}
	if m.Health != nil {
		// Gated: the deployment goes live only once the check passes
		// here (and on every other worker it is placed on).
		if err := w.checkHealth(ctx, lim, *m.Health, blog); err != nil {
			_ = inst.Close(ctx)
			w.dropTree(dep.Digest)
			return nil, spec, err
		}
	}
	fmt.Fprintf(blog, "worker %s: ready in %s\n", w.cfg.Name, time.Since(start).Round(time.Millisecond))
	return lim, spec, nil
}

// limit wraps inst so that its calls pass through the worker's admission,
// and refuses a deployment one call of which could never be admitted.
func (w *Worker) limit(inst Instance, component string, m manifest.Manifest) (*limited, error) {
	cost := int64(callFootprint)
	if f, ok := inst.(Footprint); ok {
		cost = f.CallMemory()
	}
	if budget := w.cfg.Limits.CallBudget(); cost > budget {
		return nil, fmt.Errorf("one call may take %s (memory %s) but worker %s admits calls within %s: lower memory in %s or raise VELO_WORKER_MEMORY (now %s)",
			mib(cost), manifest.FormatSize(m.Memory), w.cfg.Name, mib(budget), manifest.FileName, manifest.FormatSize(w.cfg.Limits.Memory))
	}
	limit := m.Concurrency
	if limit <= 0 {
		limit = manifest.DefaultConcurrency // stored before the key existed
	}
	return &limited{Instance: inst, adm: w.adm, component: component, cost: cost, limit: limit}, nil
}

// mib writes a byte count in MiB, rounded up, for messages.
func mib(n int64) string { return strconv.FormatInt((n+1<<20-1)>>20, 10) + " MiB" }

// useTree counts one more user of digest's unpacked tree.
func (w *Worker) useTree(digest string) {
	w.mu.Lock()
	w.trees[digest]++
	w.mu.Unlock()
}

// dropTree counts one user of digest's unpacked tree less and removes the
// tree after the last. The tree is first renamed out of the way under the
// lock, so that a load starting meanwhile unpacks it afresh instead of
// finding it half removed.
func (w *Worker) dropTree(digest string) {
	w.mu.Lock()
	w.trees[digest]--
	if w.trees[digest] > 0 {
		w.mu.Unlock()
		return
	}
	delete(w.trees, digest)
	dir := filepath.Join(w.cfg.DataDir, "artifacts", digest)
	gone := filepath.Join(w.cfg.DataDir, "artifacts", ".gone-"+digest+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	err := os.Rename(dir, gone)
	w.mu.Unlock()
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			w.cfg.Logger.Warn("remove unpacked artifact failed", "digest", digest, "err", err)
		}
		return
	}
	if err := os.RemoveAll(gone); err != nil {
		w.cfg.Logger.Warn("remove unpacked artifact failed", "digest", digest, "err", err)
	}
}

// sweepTrees removes, at start, the unpacked trees of artifacts no
// placement of this worker needs (left by retirements cut short, or by
// versions that went away while it was down).
func (w *Worker) sweepTrees(ctx context.Context) {
	root := filepath.Join(w.cfg.DataDir, "artifacts")
	entries, err := os.ReadDir(root)
	if err != nil {
		return // nothing unpacked yet
	}
	placements, err := w.store.WorkerPlacements(ctx, w.cfg.Name)
	if err != nil {
		w.cfg.Logger.Warn("sweep unpacked artifacts: read placements failed", "err", err)
		return
	}
	keep := map[string]bool{}
	for _, p := range placements {
		d, err := w.store.Deployment(ctx, p.Deployment)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			w.cfg.Logger.Warn("sweep unpacked artifacts: read deployment failed", "deployment", p.Deployment, "err", err)
			return
		}
		keep[d.Digest] = true
	}
	removed := 0
	for _, e := range entries {
		if keep[e.Name()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
			w.cfg.Logger.Warn("sweep unpacked artifacts failed", "entry", e.Name(), "err", err)
			continue
		}
		removed++
	}
	if removed > 0 {
		w.cfg.Logger.Info("removed unpacked artifacts no placement needs", "count", removed)
	}
}

// unpack makes sure the artifact with digest is unpacked under the data
// dir and returns its directory. Artifacts are immutable, so an existing
// directory is reused.
func (w *Worker) unpack(ctx context.Context, digest string) (string, error) {
	dir := filepath.Join(w.cfg.DataDir, "artifacts", digest)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	data, err := w.store.Artifact(ctx, digest)
	if err != nil {
		return "", fmt.Errorf("fetch artifact %.12s: %w", digest, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("unpack artifact: %w", err)
	}
	if err := archive.Unpack(bytes.NewReader(data), dir, archive.DefaultLimits()); err != nil {
		if _, statErr := os.Stat(dir); statErr == nil {
			return dir, nil // another prepare of the same artifact won
		}
		return "", fmt.Errorf("unpack artifact %.12s: %w", digest, err)
	}
	return dir, nil
}

func validDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// shutdown closes every instance and waits for the work under way.
func (w *Worker) shutdown() {
	w.mu.Lock()
	serving := *w.serving.Load()
	empty := map[int64]Instance{}
	w.serving.Store(&empty)
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, inst := range serving {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := inst.Close(ctx); err != nil {
				w.cfg.Logger.Warn("close instance failed", "err", err)
			}
		}()
	}
	wg.Wait()
	w.wg.Wait()
	for _, rt := range w.runtimes {
		if err := rt.Close(ctx); err != nil {
			w.cfg.Logger.Warn("close runtime failed", "runtime", rt.Name(), "err", err)
		}
	}
}
