package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
)

// The event engine (internal/events) queues calls with River on this
// store's own database. River owns its tables (river_job, river_queue, …),
// created by its own migrations, which Migrate runs after Velo's; the
// store keeps beside them what River does not: each attempt's answer and
// the idempotency keys.

// PostgresPool is the store's Postgres pool, for River's pgx driver; nil
// on SQLite.
func (s *Store) PostgresPool() *pgxpool.Pool {
	if e, ok := s.db.(*pgEngine); ok {
		return e.pool
	}
	return nil
}

// SQLiteDB is the store's SQLite database, for River's SQLite driver; nil
// on Postgres. It has a single connection (see sqliteEngine), as River's
// SQLite driver recommends.
func (s *Store) SQLiteDB() *sql.DB {
	if e, ok := s.db.(*sqliteEngine); ok {
		return e.db
	}
	return nil
}

// migrateRiver brings River's own schema up to date with rivermigrate.
func (s *Store) migrateRiver(ctx context.Context) error {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &rivermigrate.Config{Logger: quiet}
	var err error
	switch e := s.db.(type) {
	case *pgEngine:
		var m *rivermigrate.Migrator[pgx.Tx]
		if m, err = rivermigrate.New(riverpgxv5.New(e.pool), cfg); err == nil {
			_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
		}
	case *sqliteEngine:
		var m *rivermigrate.Migrator[*sql.Tx]
		if m, err = rivermigrate.New(riversqlite.New(e.db), cfg); err == nil {
			_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
		}
	}
	if err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	return nil
}

// riverQueueName is what River accepts as a queue name.
var riverQueueName = regexp.MustCompile(`^(?:[a-z0-9])+(?:[_|\-]?[a-z0-9]+)*$`)

// EventQueue is the River queue of a component's queued calls: its name
// when River accepts it, else (a name with "--", as previews have) a
// digest of it. Every component has a queue of its own, so that one
// component's backlog never waits behind another's.
func EventQueue(component string) string {
	if riverQueueName.MatchString(component) && len(component) <= 64 {
		return component
	}
	sum := sha256.Sum256([]byte(component))
	return "q" + hex.EncodeToString(sum[:16])
}

// Attempt is what one attempt of a queued call answered.
type Attempt struct {
	Invocation int64 // River job id
	Attempt    int   // 1, 2, …
	Component  string
	StartedAt  time.Time
	Duration   time.Duration
	Status     int    // HTTP status; 0 when none came (crash, cut off)
	Error      string // why the attempt failed, "" when it did not
	Headers    []byte // JSON of the answer's header
	Body       []byte // the answer's body, capped by the engine
}

// AddAttempt records an attempt; recording one again replaces it.
func (s *Store) AddAttempt(ctx context.Context, a Attempt) error {
	_, err := s.db.exec(ctx, `INSERT INTO invocation_attempts
		(invocation, attempt, component, started_at, duration_us, status, error, headers, body)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (invocation, attempt) DO UPDATE SET started_at = excluded.started_at,
			duration_us = excluded.duration_us, status = excluded.status, error = excluded.error,
			headers = excluded.headers, body = excluded.body`,
		a.Invocation, a.Attempt, a.Component, micros(a.StartedAt), a.Duration.Microseconds(),
		a.Status, cleanText(a.Error), cleanText(string(a.Headers)), a.Body)
	if err != nil {
		return fmt.Errorf("add attempt %d of invocation %d: %w", a.Attempt, a.Invocation, err)
	}
	return nil
}

// Attempts returns an invocation's attempts in order.
func (s *Store) Attempts(ctx context.Context, invocation int64) ([]Attempt, error) {
	rs, err := s.db.query(ctx, `SELECT invocation, attempt, component, started_at, duration_us,
		status, error, headers, body FROM invocation_attempts WHERE invocation = $1 ORDER BY attempt`, invocation)
	out, err := collect(rs, err, func(r row) (Attempt, error) {
		var (
			a           Attempt
			start, dur  int64
			headers     string
			attempt, st int64
		)
		err := r.Scan(&a.Invocation, &attempt, &a.Component, &start, &dur, &st, &a.Error, &headers, &a.Body)
		a.Attempt, a.Status = int(attempt), int(st)
		a.StartedAt, a.Duration, a.Headers = fromMicros(start), time.Duration(dur)*time.Microsecond, []byte(headers)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("attempts of invocation %d: %w", invocation, err)
	}
	return out, nil
}

// IdempotentInvocation returns the invocation a component's Idempotency-Key
// made since since; ErrNotFound when none did.
func (s *Store) IdempotentInvocation(ctx context.Context, component, key string, since time.Time) (int64, error) {
	var id int64
	err := s.db.queryRow(ctx, `SELECT invocation FROM idempotency_keys
		WHERE component = $1 AND key = $2 AND created_at >= $3`, component, key, micros(since)).Scan(&id)
	if err != nil {
		return 0, err
	}
	return id, nil
}

// PutIdempotencyKey records that key made invocation, unless a row made
// since since holds the key already: then it returns that row's
// invocation (the one to answer with) and false.
func (s *Store) PutIdempotencyKey(ctx context.Context, component, key string, invocation int64, since time.Time) (int64, bool, error) {
	return putIdempotencyKey(ctx, s.db, component, key, invocation, since)
}

func putIdempotencyKey(ctx context.Context, q querier, component, key string, invocation int64, since time.Time) (int64, bool, error) {
	n, err := q.exec(ctx, `INSERT INTO idempotency_keys (component, key, invocation, created_at)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (component, key) DO UPDATE SET invocation = excluded.invocation, created_at = excluded.created_at
		WHERE idempotency_keys.created_at < $5`,
		component, key, invocation, micros(now()), micros(since))
	if err != nil {
		return 0, false, fmt.Errorf("idempotency key of %s: %w", component, err)
	}
	if n > 0 {
		return invocation, true, nil
	}
	var winner int64
	err = q.queryRow(ctx, `SELECT invocation FROM idempotency_keys
		WHERE component = $1 AND key = $2 AND created_at >= $3`, component, key, micros(since)).Scan(&winner)
	if err != nil {
		return 0, false, fmt.Errorf("idempotency key of %s: %w", component, err)
	}
	return winner, false, nil
}

// EventTx is a transaction of the event engine: River's inserts run in it
// beside the store's own writes, and commit with them or not at all.
type EventTx struct {
	q txn
	// Raw is the driver's transaction, for River: a pgx.Tx on Postgres,
	// a *sql.Tx on SQLite.
	Raw any
}

// PutIdempotencyKey is Store.PutIdempotencyKey in the transaction.
func (t EventTx) PutIdempotencyKey(ctx context.Context, component, key string, invocation int64, since time.Time) (int64, bool, error) {
	return putIdempotencyKey(ctx, t.q, component, key, invocation, since)
}

// InEventTx runs fn in a transaction and commits it when fn returns nil.
// On Postgres its BEGIN goes with its first statement (pgtx.go): a
// request waits for this transaction before its 202.
func (s *Store) InEventTx(ctx context.Context, fn func(tx EventTx) error) error {
	begin := s.db.begin
	if pg, ok := s.db.(*pgEngine); ok {
		begin = pg.beginPipelined
	}
	return s.txWith(ctx, begin, func(q querier) error {
		t := EventTx{q: q.(txn)}
		switch r := q.(type) {
		case pgTx:
			t.Raw = r.t
		case sqlTx:
			t.Raw = r.t
		}
		return fn(t)
	})
}

// AddAttempts records attempts in one statement (the event engine batches
// the attempts its workers finish together: one commit, not one each).
// Recording one again replaces it. When the batch fails (a component gone
// among them) it falls back to one AddAttempt each and returns their
// errors by index; err is set only when nothing could be tried.
func (s *Store) AddAttempts(ctx context.Context, as []Attempt) ([]error, error) {
	errs := make([]error, len(as))
	if len(as) == 0 {
		return errs, nil
	}
	// ON CONFLICT cannot touch one row twice in a statement: the last of
	// each (invocation, attempt) counts.
	last := make(map[[2]int64]int, len(as))
	for i, a := range as {
		last[[2]int64{a.Invocation, int64(a.Attempt)}] = i
	}
	var sb strings.Builder
	sb.WriteString(`INSERT INTO invocation_attempts
		(invocation, attempt, component, started_at, duration_us, status, error, headers, body) VALUES `)
	args := make([]any, 0, 9*len(last))
	for i, a := range as {
		if last[[2]int64{a.Invocation, int64(a.Attempt)}] != i {
			continue
		}
		if len(args) > 0 {
			sb.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&sb, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9)
		args = append(args, a.Invocation, a.Attempt, a.Component, micros(a.StartedAt), a.Duration.Microseconds(),
			a.Status, cleanText(a.Error), cleanText(string(a.Headers)), a.Body)
	}
	sb.WriteString(` ON CONFLICT (invocation, attempt) DO UPDATE SET started_at = excluded.started_at,
			duration_us = excluded.duration_us, status = excluded.status, error = excluded.error,
			headers = excluded.headers, body = excluded.body`)
	if _, err := s.db.exec(ctx, sb.String(), args...); err == nil {
		return errs, nil
	} else if ctx.Err() != nil {
		return nil, fmt.Errorf("add %d attempts: %w", len(as), err)
	}
	for i, a := range as {
		errs[i] = s.AddAttempt(ctx, a)
	}
	return errs, nil
}

// PruneEvents deletes the idempotency keys and attempt records older than
// before (River's own job cleaner removes the jobs).
func (s *Store) PruneEvents(ctx context.Context, before time.Time) error {
	if _, err := s.db.exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < $1`, micros(before)); err != nil {
		return fmt.Errorf("prune idempotency keys: %w", err)
	}
	if _, err := s.db.exec(ctx, `DELETE FROM invocation_attempts WHERE started_at < $1`, micros(before)); err != nil {
		return fmt.Errorf("prune attempts: %w", err)
	}
	return nil
}

// EventCounts are a component's queued calls by state.
type EventCounts struct {
	Queued    int64 // waiting to run: new, failed and waiting for a retry, or held
	Running   int64 // being called (a held call is queued)
	Dead      int64 // out of attempts
	Succeeded int64 // done, until River's job cleaner removes them (24 h)
}

// EventCounts returns the counts of queue's calls (see EventQueue).
func (s *Store) EventCounts(ctx context.Context, queue string) (EventCounts, error) {
	rs, err := s.db.query(ctx, `SELECT state, `+s.heldExpr()+`, count(*) FROM river_job WHERE queue = $1
		GROUP BY 1, 2`, queue)
	if err != nil {
		return EventCounts{}, fmt.Errorf("event counts of %s: %w", queue, err)
	}
	defer rs.Close()
	var c EventCounts
	for rs.Next() {
		var (
			state string
			held  bool
			n     int64
		)
		if err := rs.Scan(&state, &held, &n); err != nil {
			return EventCounts{}, fmt.Errorf("event counts of %s: %w", queue, err)
		}
		c.add(state, held, n)
	}
	return c, rs.Err()
}

// add counts n calls in River state state; held ones (taken by an
// executor, waiting for a slot or their paused component) are queued, as
// the invocation API shows them.
func (c *EventCounts) add(state string, held bool, n int64) {
	switch {
	case state == "running" && !held:
		c.Running += n
	case state == "discarded" || state == "cancelled":
		c.Dead += n
	case state == "completed":
		c.Succeeded += n
	default:
		c.Queued += n
	}
}

// heldExpr is a boolean SQL expression over river_job: the job is running
// but held, its metadata's output marking the attempt it waits to make
// (the events package's markHeld; 0 once it is called).
func (s *Store) heldExpr() string {
	if s.Engine() == EngineSQLite {
		return `(state = 'running' AND attempt > 0 AND COALESCE(json_extract(metadata, '$.output.held'), 0) = attempt)`
	}
	return `(state = 'running' AND attempt > 0 AND COALESCE(metadata->'output'->>'held', '') = CAST(attempt AS TEXT))`
}

// QueuedDepth is how many calls wait in queue, new or to be retried.
func (s *Store) QueuedDepth(ctx context.Context, queue string) (int64, error) {
	var n int64
	err := s.db.queryRow(ctx, `SELECT count(*) FROM river_job WHERE queue = $1
		AND state IN ('available', 'scheduled', 'retryable', 'pending')`, queue).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("queue depth of %s: %w", queue, err)
	}
	return n, nil
}

// PendingEventQueues returns the queues that hold calls waiting to run, so
// that an executor starts working the ones it does not know yet.
func (s *Store) PendingEventQueues(ctx context.Context) ([]string, error) {
	rs, err := s.db.query(ctx, `SELECT DISTINCT queue FROM river_job
		WHERE state IN ('available', 'scheduled', 'retryable') AND kind = 'velo_call'`)
	out, err := collect(rs, err, scanString)
	if err != nil {
		return nil, fmt.Errorf("pending event queues: %w", err)
	}
	return out, nil
}

// LastScheduled returns the newest tick (unix microseconds) a schedule of
// queue's component has queued, with its invocation; ErrNotFound when it
// never ran. key is the schedule's manifest.Schedule.Key.
func (s *Store) LastScheduled(ctx context.Context, queue, key string) (tick, invocation int64, err error) {
	q := `SELECT CAST(args->>'tick' AS BIGINT), id FROM river_job
		WHERE queue = $1 AND kind = 'velo_call' AND args->>'schedule' = $2
		ORDER BY CAST(args->>'tick' AS BIGINT) DESC LIMIT 1`
	if s.Engine() == EngineSQLite {
		q = `SELECT CAST(json_extract(args, '$.tick') AS INTEGER), id FROM river_job
		WHERE queue = $1 AND kind = 'velo_call' AND json_extract(args, '$.schedule') = $2
		ORDER BY CAST(json_extract(args, '$.tick') AS INTEGER) DESC LIMIT 1`
	}
	err = s.db.queryRow(ctx, q, queue, key).Scan(&tick, &invocation)
	if err != nil {
		return 0, 0, err
	}
	return tick, invocation, nil
}

// AllEventCounts returns the counts of every queue that holds calls, by
// queue (for /metrics).
func (s *Store) AllEventCounts(ctx context.Context) (map[string]EventCounts, error) {
	rs, err := s.db.query(ctx, `SELECT queue, state, `+s.heldExpr()+`, count(*) FROM river_job GROUP BY 1, 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("event counts: %w", err)
	}
	defer rs.Close()
	out := map[string]EventCounts{}
	for rs.Next() {
		var (
			queue, state string
			held         bool
			n            int64
		)
		if err := rs.Scan(&queue, &state, &held, &n); err != nil {
			return nil, fmt.Errorf("event counts: %w", err)
		}
		c := out[queue]
		c.add(state, held, n)
		out[queue] = c
	}
	return out, rs.Err()
}
