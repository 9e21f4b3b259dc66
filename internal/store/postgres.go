package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLockKey is the pg_advisory_lock key held while migrating
// ("velo" in ASCII).
const migrationLockKey = 0x76656c6f

// listenAppName marks the dedicated LISTEN connection in pg_stat_activity.
const listenAppName = "velo-listen"

// defaultMaxConns is the pool's size when the URL does not set one
// (pool_max_conns). pgxpool's own default, 4 on a 2-core machine, starves
// the event engine: River's notifier holds one connection, its fetches,
// completer and Velo's batched inserts and attempt records share the rest,
// and every wait for a connection is added to a 202. Connections are
// opened only as they are needed.
const defaultMaxConns = 16

// pgEngine is a Postgres database behind a pgxpool.
type pgEngine struct {
	pgQuerier
	pool *pgxpool.Pool
	ln   *pgListener
}

func openPostgres(ctx context.Context, url string, h *hub) (*pgEngine, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres config: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 { // no connect_timeout in url
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres connect: %w", err)
	}
	lcfg := cfg.ConnConfig.Copy()
	lcfg.RuntimeParams["application_name"] = listenAppName
	return &pgEngine{
		pgQuerier: pgQuerier{pool},
		pool:      pool,
		ln:        newPGListener(lcfg, h),
	}, nil
}

// connectTimeout bounds each new connection (dial, TLS, startup and
// authentication) unless the url sets connect_timeout: a Postgres that
// hangs rather than refusing would otherwise hold Open (and every role
// starting) until it answers, and a pool connection made for a call with
// no deadline of its own.
const connectTimeout = 10 * time.Second

func (e *pgEngine) name() string { return EnginePostgres }

func (e *pgEngine) begin(ctx context.Context) (txn, error) {
	t, err := e.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return pgTx{pgQuerier{t}, t}, nil
}

// beginPipelined starts a transaction whose BEGIN goes with its first
// statement (pgtx.go): the event engine's enqueues.
func (e *pgEngine) beginPipelined(context.Context) (txn, error) {
	t := &pipelinedTx{pool: e.pool}
	return pgTx{pgQuerier{t}, t}, nil
}

// migrationLock holds a session advisory lock on a connection of its own,
// closed afterwards, so the lock cannot outlive the migration on a pooled
// connection even if unlocking fails.
func (e *pgEngine) migrationLock(ctx context.Context, fn func() error) error {
	conn, err := pgx.ConnectConfig(ctx, e.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("migration lock connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(migrationLockKey)); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	return fn()
}

func (e *pgEngine) notify(ctx context.Context, channel, payload string) error {
	_, err := e.pool.Exec(ctx, "SELECT pg_notify($1, $2)", channel, payload)
	return mapErr(err)
}

func (e *pgEngine) listen(ctx context.Context, channel string) error {
	return e.ln.ensure(ctx, channel)
}

func (e *pgEngine) close() {
	e.ln.stop()
	e.pool.Close()
}

// pgxDB is what *pgxpool.Pool and pgx.Tx have in common.
type pgxDB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// pgQuerier adapts pgx to querier.
type pgQuerier struct{ d pgxDB }

func (q pgQuerier) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := q.d.Exec(ctx, sql, args...)
	if err != nil {
		return 0, mapErr(err)
	}
	return tag.RowsAffected(), nil
}

func (q pgQuerier) query(ctx context.Context, sql string, args ...any) (rows, error) {
	r, err := q.d.Query(ctx, sql, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	return pgRows{r}, nil
}

func (q pgQuerier) queryRow(ctx context.Context, sql string, args ...any) row {
	return pgRow{q.d.QueryRow(ctx, sql, args...)}
}

type pgRows struct{ r pgx.Rows }

func (r pgRows) Next() bool             { return r.r.Next() }
func (r pgRows) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }
func (r pgRows) Err() error             { return mapErr(r.r.Err()) }
func (r pgRows) Close()                 { r.r.Close() }

type pgRow struct{ r pgx.Row }

func (r pgRow) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }

type pgTx struct {
	pgQuerier
	t pgx.Tx
}

func (t pgTx) commit(ctx context.Context) error   { return t.t.Commit(ctx) }
func (t pgTx) rollback(ctx context.Context) error { return t.t.Rollback(ctx) }

// pgListener is the one connection per Store that LISTENs on every channel
// someone listens to and feeds the notifications into the hub. It
// reconnects with backoff when the connection drops; after any gap it sends
// "" on every channel so listeners resync.
type pgListener struct {
	cfg *pgx.ConnConfig
	hub *hub

	start  sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	want    map[string]bool // channels to LISTEN on every connection
	active  map[string]bool // channels LISTENed on the current connection
	down    bool            // the last connection attempt failed or broke
	missed  bool            // notifications may have been lost since the last connection
	waiters []chan struct{} // ensure calls waiting for the next sync
	wake    context.CancelFunc
}

func newPGListener(cfg *pgx.ConnConfig, h *hub) *pgListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &pgListener{
		cfg: cfg, hub: h, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		want: make(map[string]bool), active: make(map[string]bool),
	}
}

// ensure returns once channel is LISTENed on the live connection, or at
// once when the connection is down (the reconnect will then resync).
func (l *pgListener) ensure(ctx context.Context, channel string) error {
	l.start.Do(func() { go l.run() })
	l.mu.Lock()
	if l.active[channel] {
		l.mu.Unlock()
		return nil
	}
	l.want[channel] = true
	if l.down {
		l.missed = true
		l.mu.Unlock()
		return nil
	}
	w := make(chan struct{})
	l.waiters = append(l.waiters, w)
	if l.wake != nil {
		l.wake()
	}
	l.mu.Unlock()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return errors.New("store closed")
	}
}

// stop ends the listener and waits for it.
func (l *pgListener) stop() {
	l.cancel()
	l.start.Do(func() { close(l.done) }) // never started: nothing to wait for
	<-l.done
}

// listenTimeout bounds the listener's connect and each LISTEN: a Postgres
// that hangs rather than refusing would otherwise hold the listener (and
// every Listen call waiting for it) until it answers. Waiting for the next
// notification has no deadline: a quiet Postgres is no fault.
const listenTimeout = 10 * time.Second

func (l *pgListener) run() {
	defer close(l.done)
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for l.ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(l.ctx, listenTimeout)
		conn, err := pgx.ConnectConfig(cctx, l.cfg)
		cancel()
		if err == nil {
			began := time.Now()
			err = l.serve(conn)
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(closeCtx)
			cancel()
			if time.Since(began) > maxBackoff {
				backoff = minBackoff
			}
		}
		if l.ctx.Err() != nil {
			return
		}
		l.setDown()
		select {
		case <-time.After(backoff):
		case <-l.ctx.Done():
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// setDown records a broken connection and releases everyone waiting: they
// will get "" when the connection is back.
func (l *pgListener) setDown() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down, l.missed = true, true
	clear(l.active)
	if l.wake != nil {
		l.wake()
		l.wake = nil
	}
	for _, w := range l.waiters {
		close(w)
	}
	l.waiters = nil
}

// serve LISTENs on the wanted channels and delivers notifications until the
// connection fails or the listener stops.
func (l *pgListener) serve(conn *pgx.Conn) error {
	first := true
	for {
		waitCtx, err := l.sync(conn)
		if err != nil {
			return err
		}
		if first {
			first = false
			l.mu.Lock()
			missed := l.missed
			l.missed = false
			chans := make([]string, 0, len(l.want))
			for c := range l.want {
				chans = append(chans, c)
			}
			l.mu.Unlock()
			if missed {
				for _, c := range chans {
					l.hub.publish(c, "")
				}
			}
		}
		n, err := conn.WaitForNotification(waitCtx)
		if err != nil {
			if l.ctx.Err() != nil || conn.IsClosed() || waitCtx.Err() == nil {
				return err
			}
			continue // woken by ensure: LISTEN on the new channels
		}
		l.hub.publish(n.Channel, n.Payload)
	}
}

// sync LISTENs on every wanted channel not yet active, then releases the
// waiters and returns the context the next wait runs under.
func (l *pgListener) sync(conn *pgx.Conn) (context.Context, error) {
	for {
		l.mu.Lock()
		var pending []string
		for c := range l.want {
			if !l.active[c] {
				pending = append(pending, c)
			}
		}
		if len(pending) == 0 {
			l.down = false
			for _, w := range l.waiters {
				close(w)
			}
			l.waiters = nil
			waitCtx, wake := context.WithCancel(l.ctx)
			if l.wake != nil {
				l.wake()
			}
			l.wake = wake
			l.mu.Unlock()
			return waitCtx, nil
		}
		l.mu.Unlock()
		for _, c := range pending {
			ectx, cancel := context.WithTimeout(l.ctx, listenTimeout)
			_, err := conn.Exec(ectx, "LISTEN "+pgx.Identifier{c}.Sanitize())
			cancel()
			if err != nil {
				return nil, fmt.Errorf("listen %s: %w", c, err)
			}
			l.mu.Lock()
			l.active[c] = true
			l.mu.Unlock()
		}
	}
}
