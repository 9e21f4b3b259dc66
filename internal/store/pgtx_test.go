package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/velo-run/velo/internal/pgtest"
)

// sendTracer records what a pool sends: each query sent on its own and
// each batch (one round trip each), by their SQL.
type sendTracer struct {
	mu    sync.Mutex
	sends []string
}

func (s *sendTracer) add(sql string) {
	s.mu.Lock()
	s.sends = append(s.sends, strings.Join(strings.Fields(sql), " "))
	s.mu.Unlock()
}

func (s *sendTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	s.add(d.SQL)
	return ctx
}

func (s *sendTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (s *sendTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchStartData) context.Context {
	var qs []string
	for _, q := range d.Batch.QueuedQueries {
		qs = append(qs, q.SQL)
	}
	s.add("batch[" + strings.Join(qs, "; ") + "]")
	return ctx
}

func (s *sendTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (s *sendTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (s *sendTracer) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sends
	s.sends = nil
	return out
}

// TestPipelinedBegin runs store transactions on Postgres and checks what
// they send: BEGIN goes with the first statement (one round trip, not
// two), a transaction without statements sends nothing, and failures
// behave as pgx's own transactions: a failed first or later statement
// commits nothing, and every connection goes back to the pool.
func TestPipelinedBegin(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	tr := &sendTracer{}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	e := &pgEngine{pgQuerier: pgQuerier{pool}, pool: pool}
	if _, err := e.exec(ctx, `CREATE TABLE IF NOT EXISTS pipelined_test (n int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	defer e.exec(ctx, `DROP TABLE pipelined_test`)
	count := func() int {
		var n int
		if err := e.queryRow(ctx, `SELECT count(*) FROM pipelined_test`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	run := func(fn func(q txn) error) error {
		q, err := e.beginPipelined(ctx)
		if err != nil {
			return err
		}
		if err := fn(q); err != nil {
			if rerr := q.rollback(ctx); rerr != nil && !errors.Is(rerr, pgx.ErrTxClosed) {
				t.Errorf("rollback: %v", rerr)
			}
			return err
		}
		return q.commit(ctx)
	}
	idle := func(when string) {
		t.Helper()
		if n := pool.Stat().AcquiredConns(); n != 0 {
			t.Errorf("%s: %d connections still taken from the pool", when, n)
		}
	}
	tr.take()

	// Two statements: BEGIN rides with the first, then the second and
	// COMMIT: three round trips.
	err = run(func(q txn) error {
		var n int
		if err := q.queryRow(ctx, `INSERT INTO pipelined_test (n) VALUES (1) RETURNING n`).Scan(&n); err != nil || n != 1 {
			return errors.Join(err, errors.New("RETURNING did not answer 1"))
		}
		_, err := q.exec(ctx, `INSERT INTO pipelined_test (n) VALUES (2)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"batch[begin; INSERT INTO pipelined_test (n) VALUES (1) RETURNING n]", "INSERT INTO pipelined_test (n) VALUES (2)", "commit"}
	if got := tr.take(); strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Errorf("a transaction of two statements sent\n%q\nwant\n%q", got, want)
	}
	if n := count(); n != 2 {
		t.Errorf("%d rows committed, want 2", n)
	}
	idle("after a commit")

	// Rows read from the first statement, through query.
	err = run(func(q txn) error {
		rs, err := q.query(ctx, `SELECT n FROM pipelined_test ORDER BY n`)
		if err != nil {
			return err
		}
		defer rs.Close()
		var got []int
		for rs.Next() {
			var n int
			if err := rs.Scan(&n); err != nil {
				return err
			}
			got = append(got, n)
		}
		if err := rs.Err(); err != nil {
			return err
		}
		if len(got) != 2 || got[0] != 1 || got[1] != 2 {
			t.Errorf("first statement's rows %v, want [1 2]", got)
		}
		_, err = q.exec(ctx, `INSERT INTO pipelined_test (n) VALUES (3)`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	idle("after rows")

	// No statement: nothing sent, no connection taken.
	tr.take()
	if err := run(func(txn) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := tr.take(); len(got) != 0 {
		t.Errorf("an empty transaction sent %q", got)
	}

	// A failing first statement: its error, nothing kept, the
	// connection back.
	err = run(func(q txn) error {
		_, err := q.exec(ctx, `INSERT INTO pipelined_test (n) VALUES (1)`)
		return err
	})
	if !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate first insert: %v, want ErrConflict", err)
	}
	idle("after a failed first statement")

	// A failing later statement that the caller ignores: COMMIT reports
	// the rollback and nothing of the transaction is kept.
	q, err := e.beginPipelined(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.exec(ctx, `INSERT INTO pipelined_test (n) VALUES (10)`); err != nil {
		t.Fatal(err)
	}
	if _, err := q.exec(ctx, `INSERT INTO pipelined_test (n) VALUES (1)`); err == nil {
		t.Fatal("duplicate insert succeeded")
	}
	if err := q.commit(ctx); !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Errorf("commit after a failed statement: %v, want pgx.ErrTxCommitRollback", err)
	}
	if n := count(); n != 3 {
		t.Errorf("%d rows, want the 3 committed before", n)
	}
	idle("after a commit that rolled back")

	// A rolled back transaction keeps nothing.
	err = run(func(q txn) error {
		if _, err := q.exec(ctx, `INSERT INTO pipelined_test (n) VALUES (20)`); err != nil {
			return err
		}
		return errors.New("changed my mind")
	})
	if err == nil || count() != 3 {
		t.Errorf("rolled back transaction: err %v, %d rows, want 3", err, count())
	}
	idle("after a rollback")
}
