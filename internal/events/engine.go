package events

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivertype"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
)

// Caller runs a queued call through the normal call path; *router.Router
// is one. See router.Router.Invoke for its errors.
type Caller interface {
	Invoke(ctx context.Context, w http.ResponseWriter, c *router.Call, id int64, attempt int) error
}

// Config configures an Engine.
type Config struct {
	Store *store.Store
	// Caller runs the calls. Without one the engine only queues and reads
	// (deploymgr's API); with one it is an executor.
	Caller Caller
	// Secrets opens the signing keys of inbound events ([events] secret).
	Secrets *secrets.Keyring
	// Schedules lists the live schedules (router.Router.Schedules); an
	// executor queues their ticks. Nil: no schedules.
	Schedules func() []router.Scheduled
	// Paused reports whether a component is paused (router.Router.Paused):
	// an executor then holds its calls before they take a slot, without
	// a write each time. Nil: Caller's router.ErrPaused tells.
	Paused func(component string) bool
	// Poll is how often an executor looks for queues it does not work yet
	// and for calls whose process died (default 1s).
	Poll time.Duration
	// Grace is how long past its component's timeout a call may stay
	// running before it counts as lost with its process and is retried
	// (default 3s).
	Grace  time.Duration
	Logger *slog.Logger
}

// Engine queues calls and, with a Caller, runs them. Safe for concurrent
// use.
type Engine struct {
	cfg    Config
	st     *store.Store
	client client
	exec   riverdriver.Executor
	log    *slog.Logger

	// inserts and attempts commit what concurrent requests and workers
	// write together (batch.go).
	inserts  *groupCommit[*router.Call, enqueued]
	attempts *groupCommit[store.Attempt, error]

	// slots keeps [events] concurrency across the executors sharing a
	// Postgres (slots.go); nil on SQLite and without a Caller.
	slots *slots

	// queuedDepth counts the calls waiting in a queue (the store's
	// QueuedDepth; a test's stand-in).
	queuedDepth func(ctx context.Context, queue string) (int64, error)

	mu     sync.Mutex
	queues map[string]*worked      // queues this process works (has a River producer for)
	idle   time.Duration           // queueIdle (tests: less)
	depth  map[string]*depthSample // recent queue depths, for max_queued
}

// enqueued is what a batched insert answers each call.
type enqueued struct {
	id  int64
	dup bool // an earlier call with its Idempotency-Key made invocation id
}

// Batch bounds (batch.go). maxBatch keeps a transaction short (a
// request waits for the whole batch it is in). insertSlots and
// attemptSlots are the batches committing at once: a call that arrives
// while every slot commits waits for one of those commits before its own
// begins (on the loaded bench machine that wait's p99 was about three
// times as long with two slots as with six, one noisy run each; River's
// own Insert commits every job on its own, as many at once as the pool
// has connections). Intake gets more slots than the executor's attempt
// records: where both wait for Postgres, more of the commits in flight
// are those a client waits on for its 202.
const (
	maxBatch     = 128
	insertSlots  = 4
	attemptSlots = 2
	batchBacklog = 8192
	batchTimeout = 10 * time.Second
)

// maxDepthSamples bounds the queue depths checkDepth keeps.
const maxDepthSamples = 1024

type depthSample struct {
	n       int64
	at      time.Time
	reading bool // readDepth is under way
}

// depthFresh is how long a queue's depth is used before it is read from
// the store again; depthTimeout bounds that read.
const (
	depthFresh   = 250 * time.Millisecond
	depthTimeout = 5 * time.Second
)

// client is River's client, whatever its driver's transaction type.
type client interface {
	Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	JobGet(ctx context.Context, id int64) (*rivertype.JobRow, error)
	JobUpdate(ctx context.Context, id int64, params *river.JobUpdateParams) (*rivertype.JobRow, error)
	JobList(ctx context.Context, params *river.JobListParams) (*river.JobListResult, error)
	JobRetry(ctx context.Context, id int64) (*rivertype.JobRow, error)
	JobDelete(ctx context.Context, id int64) (*rivertype.JobRow, error)
	Queues() *river.QueueBundle
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// callArgs is the River job of a queued call.
type callArgs struct {
	router.Call
	// Schedule and Tick are set on a schedule's tick (see schedule.go):
	// River keeps one job per schedule and tick.
	Schedule string `json:"schedule,omitempty" river:"unique"`
	Tick     int64  `json:"tick,omitempty" river:"unique"` // unix microseconds
}

// Kind names the job kind in River's table.
func (callArgs) Kind() string { return "velo_call" }

// callArgsJSON is how River stores callArgs: the call as one JSON string,
// beside the schedule and tick that Velo's queries and River's uniqueness
// read. River indexes its args column with GIN, one entry per key and per
// value, rewritten with each of a job's three versions (queued, running,
// done); the call's fields (every header among them) are never searched,
// and as one string they cost one entry instead of thirty or so (on the
// bench machine a row with the fields spread out took 4–8× as long to
// insert and update as one with them in a string).
type callArgsJSON struct {
	Call     string `json:"call"`
	Schedule string `json:"schedule,omitempty"`
	Tick     int64  `json:"tick,omitempty"`
}

// MarshalJSON encodes a as callArgsJSON.
func (a callArgs) MarshalJSON() ([]byte, error) {
	call, err := json.Marshal(a.Call)
	if err != nil {
		return nil, err
	}
	return json.Marshal(callArgsJSON{Call: string(call), Schedule: a.Schedule, Tick: a.Tick})
}

// UnmarshalJSON decodes callArgsJSON, or the call's fields at the top
// level, as Velo stored them before callArgsJSON (jobs queued before an
// upgrade still run).
func (a *callArgs) UnmarshalJSON(b []byte) error {
	var w struct {
		Call     *string `json:"call"`
		Schedule string  `json:"schedule"`
		Tick     int64   `json:"tick"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if w.Call == nil {
		type flat callArgs // without these methods
		return json.Unmarshal(b, (*flat)(a))
	}
	*a = callArgs{Schedule: w.Schedule, Tick: w.Tick}
	return json.Unmarshal([]byte(*w.Call), &a.Call)
}

// controlQueue is the queue every executor works besides the components'
// (River wants one at start).
const controlQueue = "velo"

// idempotencyWindow is how long an Idempotency-Key dedupes.
const idempotencyWindow = 24 * time.Hour

// maxAnswer bounds the answer body kept per attempt.
const maxAnswer = 1 << 20

// New makes an engine on cfg.Store's database.
func New(cfg Config) (*Engine, error) {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Engine{cfg: cfg, st: cfg.Store, log: cfg.Logger, queuedDepth: cfg.Store.QueuedDepth, queues: map[string]*worked{}, depth: map[string]*depthSample{}}
	e.idle = queueIdle
	workers := river.NewWorkers()
	if err := river.AddWorkerSafely(workers, &callWorker{e: e}); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	rc := &river.Config{
		Workers: workers,
		Logger:  slog.New(slogLevel{cfg.Logger.Handler(), slog.LevelWarn}),
		// A call runs at most its component's timeout (callWorker.Timeout);
		// these are the backstops River checks its config against.
		JobTimeout:           manifest.MaxTimeout + time.Minute,
		RescueStuckJobsAfter: manifest.MaxTimeout + 2*time.Minute,
		MaxAttempts:          manifest.EventMaxAttempts,
		FetchCooldown:        2 * time.Millisecond,
		FetchPollInterval:    time.Second,
		SoftStopTimeout:      5 * time.Second,
		// Other River clients may share the database (their own kinds).
		FetchOnlyKnownKinds: true,
	}
	if cfg.Caller != nil {
		rc.Queues = map[string]river.QueueConfig{controlQueue: {MaxWorkers: 1}}
	}
	var (
		err    error
		insert func(context.Context, []*router.Call) ([]enqueued, error)
		slots  = [2]int{insertSlots, attemptSlots}
	)
	switch {
	case cfg.Store.PostgresPool() != nil:
		d := riverpgxv5.New(cfg.Store.PostgresPool())
		var c *river.Client[pgx.Tx]
		c, err = river.NewClient(d, rc)
		e.client, e.exec = c, d.GetExecutor()
		insert = insertCalls(c, cfg.Store)
		if cfg.Caller != nil {
			e.slots = newSlots(cfg.Store, cfg.Logger)
		}
	case cfg.Store.SQLiteDB() != nil:
		// No LISTEN on SQLite: inserts in this process wake its queues at
		// once, others are found by polling.
		rc.FetchPollInterval = 100 * time.Millisecond
		d := riversqlite.New(cfg.Store.SQLiteDB())
		var c *river.Client[*sql.Tx]
		c, err = river.NewClient(d, rc)
		e.client, e.exec = c, d.GetExecutor()
		insert = insertCalls(c, cfg.Store)
		slots = [2]int{1, 1} // one connection: a second batch could only wait for it
	default:
		err = errors.New("unknown store engine")
	}
	if err != nil {
		return nil, fmt.Errorf("events: river client: %w", err)
	}
	e.inserts = &groupCommit[*router.Call, enqueued]{flush: insert, max: maxBatch, slots: slots[0], bound: batchBacklog, timeout: batchTimeout}
	e.attempts = &groupCommit[store.Attempt, error]{flush: e.st.AddAttempts, max: maxBatch, slots: slots[1], bound: batchBacklog, timeout: batchTimeout}
	return e, nil
}

// insertCalls returns the flush of Engine.inserts: calls inserted with
// River's InsertManyTx in one transaction with their idempotency keys.
// A call whose key another call holds already (committed, or earlier in
// the same batch) is deleted again in the transaction and answered with
// the holder's invocation.
func insertCalls[TTx any](c *river.Client[TTx], st *store.Store) func(context.Context, []*router.Call) ([]enqueued, error) {
	return func(ctx context.Context, calls []*router.Call) ([]enqueued, error) {
		params := make([]river.InsertManyParams, len(calls))
		var keyed []int
		for i, call := range calls {
			params[i] = river.InsertManyParams{Args: callArgs{Call: *call},
				InsertOpts: &river.InsertOpts{Queue: store.EventQueue(call.Component), MaxAttempts: call.Events.MaxAttempts}}
			if call.Key != "" {
				keyed = append(keyed, i)
			}
		}
		// Keys in one order in every batch: two batches in flight wait
		// for each other's keys without deadlocking.
		slices.SortFunc(keyed, func(a, b int) int {
			return cmp.Or(strings.Compare(calls[a].Component, calls[b].Component), strings.Compare(calls[a].Key, calls[b].Key))
		})
		out := make([]enqueued, len(calls))
		err := st.InEventTx(ctx, func(tx store.EventTx) error {
			rtx, ok := tx.Raw.(TTx)
			if !ok {
				return fmt.Errorf("queue calls: the store's transaction is a %T", tx.Raw)
			}
			res, err := c.InsertManyTx(ctx, rtx, params)
			if err != nil {
				return fmt.Errorf("queue %d calls: %w", len(calls), err)
			}
			for i, r := range res {
				out[i] = enqueued{id: r.Job.ID}
			}
			since := time.Now().Add(-idempotencyWindow)
			for _, i := range keyed {
				winner, won, err := tx.PutIdempotencyKey(ctx, calls[i].Component, calls[i].Key, out[i].id, since)
				if err != nil {
					return err
				}
				if won {
					continue
				}
				if _, err := c.JobDeleteTx(ctx, rtx, out[i].id); err != nil {
					return fmt.Errorf("drop a duplicate queued call: %w", err)
				}
				out[i] = enqueued{id: winner, dup: true}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// Run works the queues until ctx is done (an executor), or, without a
// Caller, returns at once.
func (e *Engine) Run(ctx context.Context) error {
	if e.cfg.Caller == nil {
		return nil
	}
	var slotsDone chan struct{}
	if e.slots != nil {
		// Leases first: River's first calls wait for them.
		slotsDone = make(chan struct{})
		sctx, cancel := context.WithCancel(ctx)
		defer func() { cancel(); <-slotsDone }()
		go func() { defer close(slotsDone); e.slots.run(sctx) }()
	}
	if err := e.client.Start(ctx); err != nil {
		return fmt.Errorf("events: start river: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := e.client.Stop(sctx); err != nil {
			e.log.Warn("stop the event engine", "err", err)
		}
		if e.slots != nil {
			// No call runs any more: the slots go to the others now,
			// not when the leases expire.
			e.slots.drop(sctx)
		}
	}()
	if e.cfg.Schedules != nil {
		done := make(chan struct{})
		defer func() { <-done }()
		go func() { defer close(done); e.runSchedules(ctx) }()
	}
	retireDone := make(chan struct{})
	rctx, stopRetire := context.WithCancel(ctx)
	defer func() { stopRetire(); <-retireDone }()
	go func() { defer close(retireDone); e.retireLoop(rctx) }()
	tick := time.NewTicker(e.cfg.Poll)
	defer tick.Stop()
	lastPrune := time.Time{}
	for {
		if err := e.discoverQueues(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("look for event queues", "err", err)
		}
		if err := e.rescue(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("rescue lost calls", "err", err)
		}
		if time.Since(lastPrune) > time.Hour {
			lastPrune = time.Now()
			if err := e.st.PruneEvents(ctx, time.Now().Add(-8*24*time.Hour)); err != nil && ctx.Err() == nil {
				e.log.Warn("prune event records", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Enqueue stores c as a River job in its component's queue (router.Async).
func (e *Engine) Enqueue(ctx context.Context, c *router.Call) (int64, bool, error) {
	if c.Source == router.SourceEvent && c.Events.Verify != "" {
		if err := e.verify(ctx, c); err != nil {
			return 0, false, err
		}
	}
	if c.Key != "" {
		id, err := e.st.IdempotentInvocation(ctx, c.Component, c.Key, time.Now().Add(-idempotencyWindow))
		if err == nil {
			return id, true, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return 0, false, err
		}
	}
	queue := store.EventQueue(c.Component)
	if err := e.checkDepth(ctx, queue, c.Events.MaxQueued); err != nil {
		return 0, false, err
	}
	// Group commit (batch.go): this returns once the call's row has
	// committed, with the requests that came at the same time.
	r, err := e.inserts.Submit(ctx, c)
	if err != nil {
		return 0, false, fmt.Errorf("queue call for %s: %w", c.Component, err)
	}
	if !r.dup {
		e.noteInsert(queue, c.Events.Concurrency)
	}
	return r.id, r.dup, nil
}

// checkDepth refuses a call when queue holds max calls waiting. The depth
// is read from the store at most every depthFresh and counted up locally
// in between, so the bound is close, not exact, across processes. A stale
// depth is read again in the background (readDepth) while the calls go on
// with the one they have: a call that found it stale waited for a count
// query before its 202 — at the bench's open-loop rate about one call in
// a hundred, and on the loaded bench machine checkDepth's own p99 was
// 5–18 ms. Only the first call of a queue, and a call the stale depth
// would refuse, wait for the store's count.
func (e *Engine) checkDepth(ctx context.Context, queue string, max int) error {
	if max <= 0 {
		return nil
	}
	e.mu.Lock()
	s := e.depth[queue]
	stale := s == nil || time.Since(s.at) >= depthFresh
	switch {
	case s != nil && s.n < int64(max):
		if stale && !s.reading {
			s.reading = true
			go e.readDepth(queue)
		}
		e.mu.Unlock()
		return nil
	case s != nil && !stale:
		e.mu.Unlock()
		return router.ErrQueueFull
	}
	e.mu.Unlock()
	n, err := e.queuedDepth(ctx, queue)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if s = e.depth[queue]; s == nil {
		if len(e.depth) >= maxDepthSamples {
			// Samples only save store reads: emptied when full, the
			// cache does not grow with every component ever called
			// (deleted ones included).
			clear(e.depth)
		}
		s = &depthSample{}
		e.depth[queue] = s
	}
	s.n, s.at = n, time.Now()
	if n >= int64(max) {
		return router.ErrQueueFull
	}
	return nil
}

// readDepth reads queue's depth from the store into its sample. When the
// read fails the sample stays stale, and the next call tries again.
func (e *Engine) readDepth(queue string) {
	ctx, cancel := context.WithTimeout(context.Background(), depthTimeout)
	defer cancel()
	n, err := e.queuedDepth(ctx, queue)
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.depth[queue]
	if s == nil {
		return
	}
	s.reading = false
	if err == nil {
		s.n, s.at = n, time.Now()
	}
}

// noteInsert counts an insert into queue and, on an executor, makes sure
// this process works the queue.
func (e *Engine) noteInsert(queue string, concurrency int) {
	e.mu.Lock()
	if s := e.depth[queue]; s != nil {
		s.n++
	}
	e.mu.Unlock()
	e.work(queue, concurrency)
}

// worked is a queue this process works: River runs a producer for it,
// which polls the store about once a second whether or not the queue
// holds a call. So a queue idle for queueIdle (its component deleted, or
// just not called) has its producer removed (retireIdle) and added back
// when a call comes.
type worked struct {
	concurrency int
	last        time.Time // the last call queued, seen pending, started or ended
	running     int       // its calls running in this process
	adding      bool      // River's Add is under way
	removing    bool      // River's Remove is under way
	again       bool      // a call came while removing: add it back after
}

// queueIdle is how long a queue stays worked without a call.
const queueIdle = time.Minute

// work starts a producer for queue on an executor, once, and notes that
// the queue is in use.
func (e *Engine) work(queue string, concurrency int) {
	if e.cfg.Caller == nil {
		return
	}
	if concurrency <= 0 {
		concurrency = manifest.EventConcurrency
	}
	e.mu.Lock()
	if w := e.queues[queue]; w != nil {
		w.last = time.Now()
		if w.removing {
			// retireIdle adds it back once River's Remove returns (Add
			// now would find the old producer still there).
			w.again, w.concurrency = true, concurrency
		}
		e.mu.Unlock()
		return
	}
	w := &worked{concurrency: concurrency, last: time.Now(), adding: true}
	e.queues[queue] = w
	e.mu.Unlock()
	e.addQueue(queue, w)
}

// addQueue starts w's producer; w.adding is set.
func (e *Engine) addQueue(queue string, w *worked) {
	err := e.client.Queues().Add(queue, river.QueueConfig{MaxWorkers: w.concurrency})
	e.mu.Lock()
	defer e.mu.Unlock()
	w.adding = false
	if err != nil {
		if e.queues[queue] == w {
			delete(e.queues, queue) // the next call, or discoverQueues, tries again
		}
		e.log.Warn("work event queue", "queue", queue, "err", err)
	}
}

// retireLoop removes the producers of idle queues until ctx is done.
func (e *Engine) retireLoop(ctx context.Context) {
	t := time.NewTicker(max(e.idle/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.retireIdle(ctx)
	}
}

// retireIdle removes the producers of the queues without a call for
// e.idle. A call queued meanwhile is not left without one: River's Remove
// waits for the calls its producer took; a call committed before Remove
// returned and not taken is found by the count after it; one whose work
// came while removing marked the queue wanted again; one after finds the
// queue gone and adds it. In each case the queue is worked again at once.
func (e *Engine) retireIdle(ctx context.Context) {
	now := time.Now()
	var idle []string
	e.mu.Lock()
	for q, w := range e.queues {
		if !w.adding && !w.removing && w.running == 0 && now.Sub(w.last) >= e.idle {
			w.removing = true
			idle = append(idle, q)
		}
	}
	e.mu.Unlock()
	for _, q := range idle {
		err := e.client.Queues().Remove(ctx, q)
		waiting := int64(0)
		if err == nil {
			var derr error
			if waiting, derr = e.st.QueuedDepth(ctx, q); derr != nil {
				waiting = 1 // not known to be empty: worked again
			}
		}
		e.mu.Lock()
		w := e.queues[q]
		w.removing = false
		switch {
		case err != nil:
			// Still worked (River removes a queue only once its producer
			// stopped; a shutdown's ctx stops this one anyway).
			w.again = false
			e.mu.Unlock()
			if ctx.Err() == nil {
				e.log.Warn("stop working an idle event queue", "queue", q, "err", err)
			}
			continue
		case w.again || waiting > 0:
			w.again, w.adding = false, true
			e.mu.Unlock()
			e.addQueue(q, w)
			continue
		}
		delete(e.queues, q)
		e.mu.Unlock()
	}
}

// callStarted and callEnded keep a queue's running count (a queue with a
// call running is not idle).
func (e *Engine) callStarted(queue string) {
	e.mu.Lock()
	if w := e.queues[queue]; w != nil {
		w.running++
		w.last = time.Now()
	}
	e.mu.Unlock()
}

func (e *Engine) callEnded(queue string) {
	e.mu.Lock()
	if w := e.queues[queue]; w != nil && w.running > 0 {
		w.running--
		w.last = time.Now()
	}
	e.mu.Unlock()
}

// discoverQueues starts working the queues other processes filled.
func (e *Engine) discoverQueues(ctx context.Context) error {
	qs, err := e.st.PendingEventQueues(ctx)
	if err != nil {
		return err
	}
	for _, q := range qs {
		e.mu.Lock()
		w := e.queues[q]
		if w != nil {
			w.last = time.Now() // calls wait in it: not idle
		}
		e.mu.Unlock()
		if w != nil || q == controlQueue {
			continue
		}
		concurrency := 0
		if res, err := e.client.JobList(ctx, river.NewJobListParams().Queues(q).First(1)); err == nil && len(res.Jobs) > 0 {
			var a callArgs
			if json.Unmarshal(res.Jobs[0].EncodedArgs, &a) == nil {
				concurrency = a.Events.Concurrency
			}
		}
		e.work(q, concurrency)
	}
	return nil
}

// rescue retries the calls still running well past their component's
// timeout: their process died mid-call (River's own rescuer would wait an
// hour). A rescued call is retried at once, or dead when it was its last
// attempt.
func (e *Engine) rescue(ctx context.Context) error {
	now := time.Now()
	stuck, err := e.exec.JobGetStuck(ctx, &riverdriver.JobGetStuckParams{Max: 200, StuckHorizon: now.Add(-e.cfg.Grace)})
	if err != nil {
		return err
	}
	p := &riverdriver.JobRescueManyParams{StuckHorizon: now.Add(-e.cfg.Grace)}
	for _, j := range stuck {
		if j.Kind != (callArgs{}).Kind() || j.AttemptedAt == nil {
			continue
		}
		var a callArgs
		if err := json.Unmarshal(j.EncodedArgs, &a); err != nil {
			continue
		}
		if j.AttemptedAt.Add(e.maxWait() + a.Timeout + e.cfg.Grace).After(now) {
			continue
		}
		msg := "the call was cut off: the process running it stopped before it answered"
		errJSON, _ := json.Marshal(rivertype.AttemptError{At: now.UTC(), Attempt: j.Attempt, Error: msg})
		p.ID = append(p.ID, j.ID)
		p.Error = append(p.Error, errJSON)
		if j.Attempt >= j.MaxAttempts {
			t := now.UTC()
			p.State = append(p.State, string(rivertype.JobStateDiscarded))
			p.FinalizedAt = append(p.FinalizedAt, &t)
			p.ScheduledAt = append(p.ScheduledAt, j.ScheduledAt)
		} else {
			// Available at once, not retryable: retryable jobs wait for
			// the leader's scheduler, and the leader may be the process
			// that died (its lease outlives it).
			p.State = append(p.State, string(rivertype.JobStateAvailable))
			p.FinalizedAt = append(p.FinalizedAt, nil)
			p.ScheduledAt = append(p.ScheduledAt, now.UTC())
		}
		if err := e.st.AddAttempt(ctx, store.Attempt{Invocation: j.ID, Attempt: j.Attempt, Component: a.Component,
			StartedAt: j.AttemptedAt.UTC(), Duration: now.Sub(*j.AttemptedAt), Error: msg}); err != nil && !errors.Is(err, store.ErrNotFound) {
			e.log.Warn("record a rescued attempt", "id", j.ID, "err", err)
		}
	}
	if len(p.ID) == 0 {
		return nil
	}
	if _, err := e.exec.JobRescueMany(ctx, p); err != nil {
		return err
	}
	e.log.Info("retried calls whose process stopped mid-call", "count", len(p.ID))
	return nil
}

// maxWait is how long a call may wait for a slot before it runs.
func (e *Engine) maxWait() time.Duration {
	if e.slots != nil {
		return slotWait
	}
	return 0
}

// ErrBadSignature is Enqueue's error for an inbound event whose signature
// ([events] verify) is missing or wrong.
var ErrBadSignature = router.ErrBadSignature

// verify checks an inbound event's HMAC-SHA256 signature.
func (e *Engine) verify(ctx context.Context, c *router.Call) error {
	if e.cfg.Secrets == nil {
		return fmt.Errorf("verify events of %s: no secrets keyring configured", c.Component)
	}
	list, err := e.st.Secrets(ctx, c.Component)
	if err != nil {
		return err
	}
	var key string
	found := false
	for _, s := range list {
		if s.Name == c.Events.Secret {
			if key, err = e.cfg.Secrets.Open(s.Component, s.Name, s.KeyID, s.Sealed); err != nil {
				return fmt.Errorf("verify events of %s: %w", c.Component, err)
			}
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: the signing key secret %s is not set", ErrBadSignature, c.Events.Secret)
	}
	got, ok := strings.CutPrefix(c.Header.Get(c.Events.Header), c.Events.Prefix)
	sig, err := hex.DecodeString(strings.TrimSpace(got))
	if !ok || err != nil || len(sig) != sha256.Size {
		return fmt.Errorf("%w: no valid %s header", ErrBadSignature, c.Events.Header)
	}
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write(c.Body)
	if !hmac.Equal(mac.Sum(nil), sig) {
		return fmt.Errorf("%w: %s does not match the body", ErrBadSignature, c.Events.Header)
	}
	return nil
}

// slogLevel drops River's records below a level (River logs every queue
// start at info).
type slogLevel struct {
	slog.Handler
	min slog.Level
}

func (h slogLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h slogLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return slogLevel{h.Handler.WithAttrs(as), h.min}
}

func (h slogLevel) WithGroup(name string) slog.Handler {
	return slogLevel{h.Handler.WithGroup(name), h.min}
}

// callWorker runs queued calls: River's worker of callArgs.
type callWorker struct {
	river.WorkerDefaults[callArgs]
	e *Engine
}

// Timeout lets a call wait for a slot, then run its component's timeout
// and a little more, for the worker's own 504 to come back.
func (w *callWorker) Timeout(j *river.Job[callArgs]) time.Duration {
	return w.e.maxWait() + j.Args.Timeout + time.Second
}

// NextRetry waits [events] backoff before the first retry and doubles the
// wait for each next one, capped, with ±20 % jitter so that retries of
// many calls failed together spread out.
func (w *callWorker) NextRetry(j *river.Job[callArgs]) time.Time {
	return time.Now().Add(backoff(j.Args.Events.Backoff, j.Attempt))
}

// backoff is the wait after attempt (1, 2, …) failed.
func backoff(base time.Duration, attempt int) time.Duration {
	if base <= 0 {
		base = manifest.EventBackoff
	}
	d := base
	for i := 1; i < attempt && d < manifest.EventMaxBackoff; i++ {
		d *= 2
	}
	d = min(d, manifest.EventMaxBackoff)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Work runs one attempt of a call and records what it answered. A 5xx,
// a timeout or no answer fails the attempt (River retries it or, at the
// last, makes it dead); a paused component holds it.
func (w *callWorker) Work(ctx context.Context, j *river.Job[callArgs]) error {
	c := &j.Args.Call
	w.e.callStarted(j.Queue)
	defer w.e.callEnded(j.Queue)
	// A call held (waiting for a slot, or its component paused) shows
	// queued, not running, until it is called: see heldAttempt.
	held := heldAttempt(j.JobRow) == j.Attempt
	hold := func() {
		if !held {
			held = w.e.markHeld(ctx, j.ID, j.Attempt) == nil
		}
	}
	if p := w.e.cfg.Paused; p != nil && p(c.Component) {
		hold()
		return river.JobSnooze(time.Second)
	}
	if s := w.e.slots; s != nil {
		limit := c.Events.Concurrency
		if limit <= 0 {
			limit = manifest.EventConcurrency
		}
		release, waited, ok := s.acquire(ctx, j.Queue, limit, hold)
		if !ok {
			// The cluster runs as many of the component's calls as it
			// may: back to the queue, no attempt spent.
			return river.JobSnooze(snoozeJitter())
		}
		defer release()
		if waited {
			// Its component may have been deleted (its queue with it)
			// and made again meanwhile: a dropped call must not run on
			// the new one.
			if _, err := w.e.client.JobGet(ctx, j.ID); errors.Is(err, rivertype.ErrNotFound) {
				return river.JobCancel(fmt.Errorf("the call of %s was dropped while it waited for a slot", c.Component))
			}
		}
	}
	if held {
		if err := w.e.markHeld(ctx, j.ID, 0); errors.Is(err, rivertype.ErrNotFound) {
			return river.JobCancel(fmt.Errorf("the call of %s was dropped while it was held", c.Component))
		}
		held = false
	}
	rec := newRecorder()
	start := time.Now()
	err := w.e.cfg.Caller.Invoke(ctx, rec, c, j.ID, j.Attempt)
	switch {
	case errors.Is(err, router.ErrPaused):
		hold()
		return river.JobSnooze(time.Second)
	case errors.Is(err, router.ErrNoComponent):
		return river.JobCancel(err)
	}
	a := store.Attempt{Invocation: j.ID, Attempt: j.Attempt, Component: c.Component, StartedAt: start.UTC(),
		Duration: time.Since(start), Status: rec.status, Body: rec.body.Bytes()}
	if h, jerr := json.Marshal(rec.header); jerr == nil {
		a.Headers = h
	}
	switch {
	case err != nil:
		a.Error = err.Error()
	case rec.status == 0:
		a.Error = "no answer"
	case rec.status >= 500:
		a.Error = fmt.Sprintf("HTTP %d: %s", rec.status, firstLine(rec.body.Bytes()))
	}
	if ctx.Err() != nil && a.Error == "" && rec.status == 0 {
		a.Error = "cut off at the component's timeout"
	}
	// Batched with the attempts other workers finish (batch.go); the
	// attempt is recorded before River hears how it went.
	rerr, serr := w.e.attempts.Submit(context.WithoutCancel(ctx), a)
	if serr != nil {
		rerr = serr
	}
	if rerr != nil {
		if errors.Is(rerr, store.ErrNotFound) {
			return river.JobCancel(fmt.Errorf("component %s is gone", c.Component))
		}
		w.e.log.Warn("record an attempt", "component", c.Component, "id", j.ID, "err", rerr)
	}
	if a.Error != "" {
		return errors.New(a.Error)
	}
	return nil
}

// heldMark is the River output of a job while it is held: the attempt it
// waits to make (0: none).
type heldMark struct {
	Held int `json:"held"`
}

// markHeld records that job id's attempt is held (0: it is being called).
func (e *Engine) markHeld(ctx context.Context, id int64, attempt int) error {
	_, err := e.client.JobUpdate(ctx, id, &river.JobUpdateParams{Output: heldMark{Held: attempt}})
	if err != nil && !errors.Is(err, rivertype.ErrNotFound) && ctx.Err() == nil {
		e.log.Warn("mark a held call", "id", id, "err", err)
	}
	return err
}

// heldAttempt is the attempt job j waits to make, as markHeld wrote it;
// 0 when it is not held.
func heldAttempt(j *rivertype.JobRow) int {
	if j == nil || len(j.Metadata) == 0 {
		return 0
	}
	var m struct {
		Output heldMark `json:"output"`
	}
	if json.Unmarshal(j.Metadata, &m) != nil {
		return 0
	}
	return m.Output.Held
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.ToValidUTF8(s, "?")
}

// recorder is the ResponseWriter of a queued call: it keeps the status,
// the header and the first maxAnswer bytes of the body.
type recorder struct {
	header http.Header
	status int
	body   limitedBuffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(p)
}

func (r *recorder) Flush() {}

// limitedBuffer keeps the first maxAnswer bytes written and drops the rest.
type limitedBuffer struct {
	b         []byte
	Truncated bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxAnswer - len(l.b); room < len(p) {
		l.b = append(l.b, p[:max(room, 0)]...)
		l.Truncated = true
		return len(p), nil
	}
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *limitedBuffer) Bytes() []byte { return l.b }

var _ io.Writer = (*limitedBuffer)(nil)
var _ router.Async = (*Engine)(nil)

// CallerFunc is a Caller made of a function (to wire an engine and the
// router that uses it, each needing the other).
type CallerFunc func(ctx context.Context, w http.ResponseWriter, c *router.Call, id int64, attempt int) error

// Invoke calls f.
func (f CallerFunc) Invoke(ctx context.Context, w http.ResponseWriter, c *router.Call, id int64, attempt int) error {
	return f(ctx, w, c, id, attempt)
}
