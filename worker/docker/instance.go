package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
)

// labelInstance tells apart the containers of one Instance, so that Close
// can sweep any it lost track of.
const labelInstance = "run.velo.instance"

// State is the state of one container of an instance.
type State string

// Container states.
const (
	Starting State = "starting" // being created or started, not ready yet
	Running  State = "running"
	Pausing  State = "pausing"
	Paused   State = "paused"
	Waking   State = "waking"
	Stopping State = "stopping"
	Stopped  State = "stopped"
)

// ctr is one container of an instance. Its fields are guarded by Instance.mu.
type ctr struct {
	n        int
	name     string
	id       string // empty until created
	state    State
	gen      int // bumped at every start: events of an older run are ignored
	exited   chan struct{}
	addr     string
	proxy    *httputil.ReverseProxy
	conns    *http.Transport // this run's connections (newTransport); nil when stopped
	inflight int
	waiting  int
	shells   int // shells open in it (see Shell): it is not idle
	lastUsed time.Time
	started  time.Time // when it last became ready
	busy     *op       // the transition in progress, if any
}

// dropConns forgets the proxy of c's last run and closes its idle
// connections: the published port they go to is gone.
func (c *ctr) dropConns() {
	if c.conns != nil {
		c.conns.CloseIdleConnections()
	}
	c.proxy, c.conns = nil, nil
}

// op is a container transition (start, wake, pause, stop) that requests can
// wait for: many requests arriving during a cold start wait for one start.
type op struct {
	done  chan struct{}
	err   error
	start bool
}

// Instance serves one deployment from up to scale.max containers.
type Instance struct {
	rt         *Runtime
	id         string
	component  string
	deployment int64
	digest     string
	image      string
	manifest   manifest.Manifest
	secrets    map[string]string // joined to the manifest's [env]
	restart    int               // worker.Spec.Restart, in container names
	port       int
	timeout    time.Duration
	min, max   int
	logs       worker.LogSink
	log        *slog.Logger

	ctx      context.Context // background work; cancelled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup // background goroutines; Add only under mu while !closed
	stopIdle chan struct{}

	mu       sync.Mutex
	ctrs     []*ctr
	next     int
	closed   bool
	inflight int
	drained  chan struct{} // closed once closed and no request is in flight
	shells   map[*execProcess]struct{}
	stats    Stats
	// A crash streak: containers crashing soon after their start. While
	// held, no container is started and requests are refused at once.
	crashes  int
	holdTill time.Time
}

var _ worker.Instance = (*Instance)(nil)

// Prepare builds the image of spec (unless built already for its digest),
// starts max(scale.min, 1) containers and waits until they answer HTTP. With
// scale.min 0 the one container proves the image runs and stays warm until
// it idles out.
func (r *Runtime) Prepare(ctx context.Context, spec worker.Spec) (worker.Instance, error) {
	return r.prepare(ctx, spec)
}

func (r *Runtime) prepare(ctx context.Context, spec worker.Spec) (*Instance, error) {
	blog := spec.BuildLog
	if blog == nil {
		blog = io.Discard
	}
	if spec.Digest == "" {
		return nil, errors.New("artifact digest is empty")
	}
	tag, err := r.ensureImage(ctx, spec.Component, spec.Digest, spec.Dir, blog)
	if err != nil {
		return nil, err
	}
	i := r.newInstance(spec, tag)
	n := max(i.min, 1)
	fmt.Fprintf(blog, "starting %d container(s)\n", n)
	i.mu.Lock()
	ops := make([]*op, n)
	for k := range ops {
		ops[k] = i.createLocked()
	}
	i.mu.Unlock()
	var errs []error
	for _, o := range ops {
		select {
		case <-o.done:
			errs = append(errs, o.err)
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if cerr := i.Close(cctx); cerr != nil {
			r.log.Warn("close failed instance", "component", spec.Component, "err", cerr)
		}
		fmt.Fprintln(blog, err)
		return nil, err
	}
	fmt.Fprintf(blog, "ready: %d container(s) answer on port %d\n", n, i.port)
	go i.idleLoop()
	return i, nil
}

func (r *Runtime) newInstance(spec worker.Spec, tag string) *Instance {
	m := spec.Manifest
	if m.Port <= 0 {
		m.Port = manifest.DefaultPort
	}
	if m.Timeout <= 0 {
		m.Timeout = manifest.DefaultTimeout
	}
	if m.Memory <= 0 {
		m.Memory = manifest.DefaultMemory
	}
	lo := max(m.Scale.Min, 0)
	hi := max(m.Scale.Max, lo, 1)
	var b [6]byte
	rand.Read(b[:])
	ctx, cancel := context.WithCancel(context.Background())
	logs := spec.Logs
	if logs == nil {
		logs = discardSink{}
	}
	r.acquireImage(tag)
	return &Instance{
		rt:         r,
		id:         hex.EncodeToString(b[:]),
		component:  spec.Component,
		deployment: spec.Deployment,
		digest:     spec.Digest,
		image:      tag,
		manifest:   m,
		secrets:    spec.Secrets,
		restart:    spec.Restart,
		port:       m.Port,
		timeout:    m.Timeout,
		min:        lo,
		max:        hi,
		logs:       logs,
		log:        r.log.With("component", spec.Component, "deployment", spec.Deployment),
		ctx:        ctx,
		cancel:     cancel,
		stopIdle:   make(chan struct{}),
		drained:    make(chan struct{}),
		shells:     map[*execProcess]struct{}{},
	}
}

type discardSink struct{}

func (discardSink) Log(string, time.Time, string) {}

// event writes one of Velo's own lines about the component to its logs.
func (i *Instance) event(format string, args ...any) {
	i.logs.Log(worker.System, time.Now(), fmt.Sprintf(format, args...))
}

var errClosed = errors.New("deployment is shutting down")

// Serve proxies r to a ready container, waking or starting one first if
// none is running. The component sees the path below mount.
func (i *Instance) Serve(w http.ResponseWriter, r *http.Request, mount string) {
	c, proxy, err := i.acquire(r.Context())
	if err != nil {
		var held *crashLoopError
		switch {
		case errors.Is(err, errClosed):
			http.Error(w, "deployment is shutting down", http.StatusServiceUnavailable)
		case errors.As(err, &held):
			w.Header().Set("Retry-After", strconv.Itoa(int(held.wait/time.Second)+1))
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case r.Context().Err() != nil:
			// The client went away while it waited for a start.
		default:
			http.Error(w, "component failed to start", http.StatusBadGateway)
		}
		return
	}
	defer i.release(c)

	ctx, cancel := context.WithTimeout(r.Context(), i.timeout)
	defer cancel()
	out := r.WithContext(ctx)
	u := *r.URL
	u.Path = strings.TrimPrefix(u.Path, mount)
	if u.RawPath != "" {
		u.RawPath = strings.TrimPrefix(u.RawPath, mount)
	}
	if !strings.HasPrefix(u.Path, "/") {
		u.Path = "/" + u.Path
		if u.RawPath != "" {
			u.RawPath = "/" + u.RawPath
		}
	}
	out.URL = &u
	proxy.ServeHTTP(w, out)
}

// crashLoopError refuses a request while a crashing component is held.
type crashLoopError struct{ wait time.Duration }

func (e *crashLoopError) Error() string {
	return fmt.Sprintf("component keeps crashing right after it starts (see its logs); next start in %s",
		e.wait.Round(time.Second))
}

// acquire returns a running container for one request, counting it in
// flight. The wait for a start is bounded by ReadyTimeout, not by the
// component's request timeout.
func (i *Instance) acquire(ctx context.Context) (*ctr, *httputil.ReverseProxy, error) {
	for {
		i.mu.Lock()
		if i.closed {
			i.mu.Unlock()
			return nil, nil, errClosed
		}
		if c := i.pickLocked(); c != nil {
			if c.inflight >= i.rt.cfg.ScaleUpInFlight {
				i.scaleUpLocked()
			}
			c.inflight++
			i.inflight++
			c.lastUsed = time.Now()
			p := c.proxy
			i.mu.Unlock()
			return c, p, nil
		}
		if wait := time.Until(i.holdTill); wait > 0 {
			i.mu.Unlock()
			return nil, nil, &crashLoopError{wait: wait}
		}
		c, o := i.nextOpLocked()
		c.waiting++
		if c.waiting > i.rt.cfg.ScaleUpInFlight && o.start {
			i.scaleUpLocked()
		}
		i.mu.Unlock()

		select {
		case <-o.done:
		case <-ctx.Done():
		}
		i.mu.Lock()
		c.waiting--
		i.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if o.err != nil && o.start {
			i.mu.Lock()
			closed := i.closed
			i.mu.Unlock()
			if closed {
				return nil, nil, errClosed
			}
			return nil, nil, o.err
		}
	}
}

func (i *Instance) release(c *ctr) {
	i.mu.Lock()
	c.inflight--
	c.lastUsed = time.Now()
	i.inflight--
	if i.closed && i.inflight == 0 {
		close(i.drained)
	}
	i.mu.Unlock()
}

// pickLocked returns the running container with the fewest requests in
// flight; ties go to the lowest number, so extra containers idle out.
func (i *Instance) pickLocked() *ctr {
	var best *ctr
	for _, c := range i.ctrs {
		if c.state == Running && (best == nil || c.inflight < best.inflight) {
			best = c
		}
	}
	return best
}

// nextOpLocked finds or begins the transition a request without a running
// container waits for: a start or wake under way, else waking a paused
// container, starting a stopped one, or creating a new one.
func (i *Instance) nextOpLocked() (*ctr, *op) {
	for _, c := range i.ctrs {
		if c.busy != nil && (c.state == Starting || c.state == Waking) {
			return c, c.busy
		}
	}
	for _, c := range i.ctrs {
		if c.state == Paused {
			return c, i.wakeLocked(c)
		}
	}
	for _, c := range i.ctrs {
		if c.state == Stopped {
			return c, i.startLocked(c)
		}
	}
	for _, c := range i.ctrs {
		if c.busy != nil {
			return c, c.busy // pausing or stopping: wait, then wake or start it
		}
	}
	o := i.createLocked()
	return i.ctrs[len(i.ctrs)-1], o
}

// scaleUpLocked brings one more container up, unless one is already on its
// way or scale.max is reached.
func (i *Instance) scaleUpLocked() {
	live := 0
	for _, c := range i.ctrs {
		switch c.state {
		case Starting, Waking:
			return
		case Running:
			if c.inflight < i.rt.cfg.ScaleUpInFlight {
				return // one still has room
			}
			live++
		}
	}
	for _, c := range i.ctrs {
		if c.state == Paused {
			i.wakeLocked(c)
			return
		}
	}
	for _, c := range i.ctrs {
		if c.state == Stopped {
			i.startLocked(c)
			return
		}
	}
	if len(i.ctrs) < i.max {
		i.log.Info("scaling up", "containers", len(i.ctrs)+1)
		i.createLocked()
	}
}

// createLocked adds a new container and begins starting it.
func (i *Instance) createLocked() *op {
	i.next++
	// The owner keeps apart the containers of workers sharing an engine.
	name := fmt.Sprintf("velo-%s-%s-%d-%d", repoName(i.rt.cfg.Owner), repoName(i.component), i.deployment, i.next)
	if i.restart > 0 {
		// Prepared again for changed secrets while the previous instance
		// still serves: its containers keep their names.
		name = fmt.Sprintf("velo-%s-%s-%d-r%d-%d", repoName(i.rt.cfg.Owner), repoName(i.component), i.deployment, i.restart, i.next)
	}
	c := &ctr{n: i.next, name: name, lastUsed: time.Now()}
	i.ctrs = append(i.ctrs, c)
	return i.startLocked(c)
}

// begin runs fn as c's transition to state via, ending in state to on
// success; on failure fail decides what becomes of the container.
func (i *Instance) begin(c *ctr, via State, start bool, fn func() error, done func(err error)) *op {
	o := &op{done: make(chan struct{}), start: start}
	c.busy = o
	c.state = via
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		err := fn()
		i.mu.Lock()
		o.err = err
		c.busy = nil
		done(err)
		i.mu.Unlock()
		close(o.done)
	}()
	return o
}

func (i *Instance) startLocked(c *ctr) *op {
	restart := c.id != ""
	return i.begin(c, Starting, true, func() error { return i.start(c) }, func(err error) {
		if err != nil {
			if i.ctx.Err() == nil {
				i.event("container %s failed to start: %v", c.name, err)
			}
			i.dropLocked(c)
			return
		}
		c.state = Running
		c.lastUsed = time.Now()
		c.started = c.lastUsed
		i.stats.Starts++
		if restart {
			i.event("container %s started again", c.name)
		} else {
			i.event("container %s started", c.name)
		}
	})
}

func (i *Instance) wakeLocked(c *ctr) *op {
	id := c.id
	return i.begin(c, Waking, false, func() error {
		return i.rt.cli.ContainerUnpause(i.ctx, id)
	}, func(err error) {
		if err != nil {
			i.event("container %s failed to wake: %v", c.name, err)
			i.dropLocked(c)
			return
		}
		c.state = Running
		c.lastUsed = time.Now()
		i.stats.Wakes++
		i.event("container %s woke", c.name)
	})
}

func (i *Instance) pauseLocked(c *ctr, why string) *op {
	id := c.id
	return i.begin(c, Pausing, false, func() error {
		return i.rt.cli.ContainerPause(i.ctx, id)
	}, func(err error) {
		if err != nil {
			// Leave it running; the exit watcher handles a dead one.
			c.state = Running
			c.lastUsed = time.Now()
			if i.ctx.Err() == nil {
				i.log.Warn("pause container", "container", c.name, "err", err)
			}
			return
		}
		c.state = Paused
		i.stats.Pauses++
		i.event("container %s paused (%s)", c.name, why)
	})
}

func (i *Instance) stopLocked(c *ctr, why string) *op {
	id, paused := c.id, c.state == Paused
	return i.begin(c, Stopping, false, func() error {
		if paused {
			// A frozen process cannot act on SIGTERM.
			if err := i.rt.cli.ContainerUnpause(i.ctx, id); err != nil {
				return err
			}
		}
		t := stopTimeout
		return i.rt.cli.ContainerStop(i.ctx, id, container.StopOptions{Timeout: &t})
	}, func(err error) {
		if err != nil {
			if i.ctx.Err() == nil {
				i.event("container %s failed to stop: %v", c.name, err)
			}
			i.dropLocked(c)
			return
		}
		c.state = Stopped
		c.dropConns()
		i.stats.Stops++
		i.event("container %s stopped (%s)", c.name, why)
	})
}

// dropLocked forgets c and removes its container in the background.
func (i *Instance) dropLocked(c *ctr) {
	for k, x := range i.ctrs {
		if x == c {
			i.ctrs = append(i.ctrs[:k], i.ctrs[k+1:]...)
			break
		}
	}
	c.state = Stopped
	c.dropConns()
	if c.id == "" || i.closed {
		return // Close sweeps what is left
	}
	id := c.id
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		// Not cancelled by Close (which waits for it): an engine whose
		// removal request is cut off may leave the container half removed.
		ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
		defer cancel()
		if err := i.rt.remove(ctx, id); err != nil {
			i.log.Warn("remove container", "container", c.name, "err", err)
		}
	}()
}

// exited is told that run gen of c ended with code. Unless Velo stopped it,
// that is a crash: the container is removed and replaced.
func (i *Instance) exited(c *ctr, gen int, code int64) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.exited != nil {
		close(c.exited)
		c.exited = nil
	}
	if i.closed {
		return
	}
	switch c.state {
	case Starting, Stopping, Stopped:
		return // a failed start is reported by the starter; a stop is ours
	}
	if c.busy != nil {
		return // a pause or wake in flight fails and deals with it
	}
	i.stats.Crashes++
	i.dropLocked(c)
	if time.Since(c.started) < crashWindow {
		i.crashes++
	} else {
		i.crashes = 1
	}
	if i.crashes == 1 {
		i.createLocked()
		next := i.ctrs[len(i.ctrs)-1]
		i.event("container %s crashed (exit code %d); replaced by %s", c.name, code, next.name)
		return
	}
	// Crashing again soon after its start: hold before the next start,
	// longer each time, instead of restarting it as fast as it dies.
	hold := min(i.rt.cfg.CrashBackoff<<min(i.crashes-2, 16), crashBackoffMax)
	i.holdTill = time.Now().Add(hold)
	i.event("container %s crashed (exit code %d), %d times in a row soon after starting; next start in %s",
		c.name, code, i.crashes, hold)
	i.wg.Add(1)
	go func() {
		defer i.wg.Done()
		t := time.NewTimer(hold)
		defer t.Stop()
		select {
		case <-t.C:
		case <-i.ctx.Done():
			return
		}
		i.mu.Lock()
		defer i.mu.Unlock()
		if !i.closed && !time.Now().Before(i.holdTill) && len(i.ctrs) < max(i.min, 1) {
			i.createLocked() // a request may have started one already
		}
	}()
}

// idleLoop pauses and stops idle containers until Close.
func (i *Instance) idleLoop() {
	cfg := i.rt.cfg
	tick := min(cfg.IdlePause, cfg.IdleStop) / 4
	tick = max(min(tick, time.Second), 10*time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-i.stopIdle:
			return
		case now := <-t.C:
			i.reap(now)
		}
	}
}

// reap pauses containers idle for IdlePause and stops those idle for
// IdleStop, keeping the scale.min most recently used ones running.
func (i *Instance) reap(now time.Time) {
	cfg := i.rt.cfg
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return
	}
	var running []*ctr
	for _, c := range i.ctrs {
		switch {
		case c.state == Running:
			running = append(running, c)
		case c.state == Paused && c.busy == nil && now.Sub(c.lastUsed) >= cfg.IdleStop:
			i.stopLocked(c, "idle")
		}
	}
	sort.Slice(running, func(a, b int) bool { return running[a].lastUsed.After(running[b].lastUsed) })
	for k, c := range running {
		if k < i.min || c.inflight > 0 || c.waiting > 0 || c.shells > 0 {
			continue
		}
		idle := now.Sub(c.lastUsed)
		switch {
		case idle >= cfg.IdleStop:
			i.stopLocked(c, "idle")
		case idle >= cfg.IdlePause:
			i.pauseLocked(c, "idle")
		}
	}
}

// Pause pauses every running container that has no request in flight, as
// an idle timer would; the next request wakes one. Tests and benchmarks
// use it to force the paused state.
func (i *Instance) Pause(ctx context.Context) error {
	return i.force(ctx, func(c *ctr) *op {
		if c.state == Running && c.inflight == 0 && c.shells == 0 {
			return i.pauseLocked(c, "requested")
		}
		return nil
	})
}

// Stop stops every running or paused container that has no request in
// flight; the next request starts one again.
func (i *Instance) Stop(ctx context.Context) error {
	return i.force(ctx, func(c *ctr) *op {
		if (c.state == Running || c.state == Paused) && c.inflight == 0 && c.shells == 0 {
			return i.stopLocked(c, "requested")
		}
		return nil
	})
}

// force waits for the transitions under way, then applies act to every
// container and waits for the transitions it began.
func (i *Instance) force(ctx context.Context, act func(*ctr) *op) error {
	for {
		i.mu.Lock()
		if i.closed {
			i.mu.Unlock()
			return errClosed
		}
		var busy *op
		for _, c := range i.ctrs {
			if c.busy != nil {
				busy = c.busy
				break
			}
		}
		if busy == nil {
			var ops []*op
			for _, c := range i.ctrs {
				if o := act(c); o != nil {
					ops = append(ops, o)
				}
			}
			i.mu.Unlock()
			var errs []error
			for _, o := range ops {
				select {
				case <-o.done:
					errs = append(errs, o.err)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return errors.Join(errs...)
		}
		i.mu.Unlock()
		select {
		case <-busy.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats is a snapshot of an instance's containers and lifetime counters.
type Stats struct {
	Containers []ContainerStats
	InFlight   int
	// Totals since Prepare.
	Starts, Wakes, Pauses, Stops, Crashes int
}

// ContainerStats describes one container.
type ContainerStats struct {
	Name     string
	ID       string
	State    State
	Addr     string // loopback address of its published port while it runs
	InFlight int
}

// Count returns how many containers are in state s.
func (s Stats) Count(st State) int {
	n := 0
	for _, c := range s.Containers {
		if c.State == st {
			n++
		}
	}
	return n
}

// Stats returns a snapshot of the instance.
func (i *Instance) Stats() Stats {
	i.mu.Lock()
	defer i.mu.Unlock()
	s := i.stats
	s.InFlight = i.inflight
	for _, c := range i.ctrs {
		s.Containers = append(s.Containers, ContainerStats{Name: c.name, ID: c.id, State: c.state, Addr: c.addr, InFlight: c.inflight})
	}
	return s
}

// Close stops accepting requests, cuts its shells off, lets requests in
// flight finish until ctx is done, then removes every container of the
// instance. The image is kept:
// Runtime.RemoveImage removes it once no instance uses it.
func (i *Instance) Close(ctx context.Context) error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	if i.inflight == 0 {
		close(i.drained)
	}
	i.mu.Unlock()
	close(i.stopIdle)
	i.cutShells(fmt.Sprintf("deployment %d is stopping (replaced, removed, or the worker stops)", i.deployment))

	var errs []error
	select {
	case <-i.drained:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("wait for requests in flight: %w", ctx.Err()))
	}
	i.cancel()
	i.wg.Wait()

	// Removal must happen even past ctx: containers must not outlive us.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
	defer cancel()
	list, err := i.rt.cli.ContainerList(rctx, container.ListOptions{
		All: true,
		Filters: filters.NewArgs(
			filters.Arg("label", LabelOwner+"="+i.rt.cfg.Owner),
			filters.Arg("label", labelInstance+"="+i.id),
		),
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("list containers: %w", err))
	}
	for _, c := range list {
		if err := i.rt.remove(rctx, c.ID); err != nil {
			errs = append(errs, err)
		}
	}
	i.mu.Lock()
	for _, c := range i.ctrs {
		c.dropConns()
	}
	i.ctrs = nil
	i.mu.Unlock()
	i.rt.releaseImage(i.image)
	i.event("deployment %d stopped; %d container(s) removed", i.deployment, len(list))
	return errors.Join(errs...)
}
