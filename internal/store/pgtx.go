package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// pipelinedTx is a Postgres transaction whose BEGIN travels with its first
// statement. pgx's Pool.Begin waits a round trip for BEGIN's answer before
// the first statement can be sent, and round trips are what a transaction
// on a busy machine pays most for: each one waits for the backend and then
// this process to be scheduled (on the bench machine BEGIN was a quarter
// of the time an async call's enqueue spent committing). Here the first
// statement is sent in a pgx batch that begins the transaction
// (pgx.Batch.BeginTx, pgx's own way to save that round trip); from then on
// the transaction is pgx's own (*pgxpool.Tx), which holds the connection
// until Commit or Rollback. A transaction that runs no statement takes no
// connection and sends nothing.
//
// It is a pgx.Tx, so River's driver (riverpgxv5.UnwrapExecutor) runs its
// inserts in it beside the store's own statements. Not safe for concurrent
// use, as no pgx.Tx is.
type pipelinedTx struct {
	pool   *pgxpool.Pool
	tx     pgx.Tx // nil until the first statement
	closed bool   // committed or rolled back before any statement
}

var _ pgx.Tx = (*pipelinedTx)(nil)

// lazyBeginTimeout bounds the BEGIN of a method that has no context of its
// own (LargeObjects) and comes before any statement.
const lazyBeginTimeout = 10 * time.Second

// first sends the transaction's first statement together with its BEGIN
// and returns the batch, BEGIN's answer read.
func (t *pipelinedTx) first(ctx context.Context, sql string, args []any) (pgx.BatchResults, error) {
	var b pgx.Batch
	b.BeginTx(pgx.TxOptions{})
	b.Queue(sql, args...)
	br := t.pool.SendBatch(ctx, &b)
	t.tx = br.Tx()
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

// begun returns the transaction, begun alone (one round trip) for the
// methods that cannot carry a statement with their BEGIN.
func (t *pipelinedTx) begun(ctx context.Context) (pgx.Tx, error) {
	switch {
	case t.tx != nil:
		return t.tx, nil
	case t.closed:
		return nil, pgx.ErrTxClosed
	}
	tx, err := t.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	t.tx = tx
	return tx, nil
}

func (t *pipelinedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	switch {
	case t.tx != nil:
		return t.tx.Exec(ctx, sql, args...)
	case t.closed:
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	br, err := t.first(ctx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (t *pipelinedTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	switch {
	case t.tx != nil:
		return t.tx.Query(ctx, sql, args...)
	case t.closed:
		return nil, pgx.ErrTxClosed
	}
	br, err := t.first(ctx, sql, args)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

func (t *pipelinedTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.tx != nil {
		return t.tx.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return firstRow{rows, err}
}

func (t *pipelinedTx) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := t.begun(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Begin(ctx)
}

func (t *pipelinedTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	tx, err := t.begun(ctx)
	if err != nil {
		return 0, err
	}
	return tx.CopyFrom(ctx, table, columns, src)
}

func (t *pipelinedTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	tx, err := t.begun(ctx)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return tx.SendBatch(ctx, b)
}

func (t *pipelinedTx) LargeObjects() pgx.LargeObjects {
	ctx, cancel := context.WithTimeout(context.Background(), lazyBeginTimeout)
	defer cancel()
	tx, err := t.begun(ctx)
	if err != nil {
		return pgx.LargeObjects{} // its methods fail: no transaction
	}
	return tx.LargeObjects()
}

func (t *pipelinedTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	tx, err := t.begun(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Prepare(ctx, name, sql)
}

// Conn is the transaction's connection; nil before its first statement,
// when it has none.
func (t *pipelinedTx) Conn() *pgx.Conn {
	if t.tx == nil {
		return nil
	}
	return t.tx.Conn()
}

func (t *pipelinedTx) Commit(ctx context.Context) error {
	if t.tx == nil {
		if t.closed {
			return pgx.ErrTxClosed
		}
		t.closed = true
		return nil
	}
	return t.tx.Commit(ctx)
}

func (t *pipelinedTx) Rollback(ctx context.Context) error {
	if t.tx == nil {
		if t.closed {
			return pgx.ErrTxClosed
		}
		t.closed = true
		return nil
	}
	return t.tx.Rollback(ctx)
}

// batchRows are the rows of a transaction's first statement: once they
// are done with, the batch that carried it is closed too (the transaction
// may not be used before), and its error is theirs.
type batchRows struct {
	pgx.Rows
	br  pgx.BatchResults
	err error
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.closeBatch()
	return false
}

func (r *batchRows) Close() {
	r.Rows.Close()
	r.closeBatch()
}

func (r *batchRows) closeBatch() {
	if r.br == nil {
		return
	}
	if err := r.br.Close(); err != nil && r.err == nil {
		r.err = err
	}
	r.br = nil
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// firstRow is QueryRow's answer made of Query's, as pgx makes its own.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r firstRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
