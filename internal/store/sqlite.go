package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"modernc.org/sqlite"
)

// sqliteEngine is an SQLite database file behind database/sql.
//
// It keeps a single connection: SQLite allows one writer at a time anyway,
// and one connection makes every transaction immediately exclusive inside
// the process, so concurrent goroutines queue in database/sql instead of
// failing with SQLITE_BUSY. busy_timeout covers other processes (velo
// migrate) opening the same file; WAL lets their readers run alongside.
//
// A SELECT outside a transaction runs on one of readConns more connections
// instead (read-only ones): WAL lets readers run alongside the writer and
// each other, each reading the database as of its last commit, so reads no
// longer wait in line behind every write and transaction (with deploys
// under way, most goroutines of the process were waiting for the one
// connection, a few milliseconds each). Each connection keeps its prepared
// statements (stmtCacheConnector).
type sqliteEngine struct {
	sqlQuerier
	db   *sql.DB // the writer: writes, transactions, River
	read *sql.DB // readers: SELECTs outside transactions
	hub  *hub
}

// readConns is how many read-only connections serve SELECTs.
const readConns = 4

func openSQLite(ctx context.Context, path string, h *hub) (*sqliteEngine, error) {
	if path == "" {
		return nil, fmt.Errorf("sqlite: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite path %s: %w", path, err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// The WAL file is cut back to this after a checkpoint (SQLite leaves
	// it at its largest otherwise: 4 MiB and more of a small database).
	q.Add("_pragma", "journal_size_limit(1048576)")
	rq := url.Values{"_pragma": append([]string{"query_only(1)"}, q["_pragma"]...)}
	q.Set("_txlock", "immediate")
	conn, err := sqlite.NewConnector(abs + "?" + q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite open %s: %w", abs, err)
	}
	rconn, err := sqlite.NewConnector(abs + "?" + rq.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlite open %s: %w", abs, err)
	}
	db := sql.OpenDB(stmtCacheConnector{Connector: conn, size: stmtCacheSize})
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite open %s: %w", abs, err)
	}
	if err := incrementalVacuum(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite open %s: %w", abs, err)
	}
	read := sql.OpenDB(stmtCacheConnector{Connector: rconn, size: stmtCacheSize})
	read.SetMaxOpenConns(readConns)
	read.SetMaxIdleConns(readConns)
	read.SetConnMaxLifetime(0)
	read.SetConnMaxIdleTime(0)
	if err := read.PingContext(ctx); err != nil {
		read.Close()
		db.Close()
		return nil, fmt.Errorf("sqlite open %s for reading: %w", abs, err)
	}
	return &sqliteEngine{sqlQuerier: sqlQuerier{db}, db: db, read: read, hub: h}, nil
}

// query runs a SELECT on a reader, anything else (a write with RETURNING, a
// PRAGMA) on the writer.
func (e *sqliteEngine) query(ctx context.Context, query string, args ...any) (rows, error) {
	if isSelect(query) {
		return sqlQuerier{e.read}.query(ctx, query, args...)
	}
	return e.sqlQuerier.query(ctx, query, args...)
}

// queryRow is query for at most one row.
func (e *sqliteEngine) queryRow(ctx context.Context, query string, args ...any) row {
	if isSelect(query) {
		return sqlQuerier{e.read}.queryRow(ctx, query, args...)
	}
	return e.sqlQuerier.queryRow(ctx, query, args...)
}

// isSelect reports whether query is a SELECT (a read: the readers are
// query_only, so a write sent there fails rather than runs).
func isSelect(query string) bool {
	q := strings.TrimLeft(query, " \t\r\n")
	return len(q) >= 6 && strings.EqualFold(q[:6], "SELECT")
}

// incrementalVacuum puts the database in incremental auto-vacuum mode, so
// that Store.ReclaimSpace can hand the pages of deleted rows (old
// deployments' artifacts and build logs) back to the file system; without
// it the file only grows. A new file takes the mode at once; an existing
// one needs a VACUUM, once, to switch: it rewrites the file (atomically,
// through the WAL; it needs free disk about the database's size and holds
// the write lock while it runs, which is why it runs here, at open, before
// anything else uses the database).
func incrementalVacuum(ctx context.Context, db *sql.DB) error {
	const incremental = 2
	var mode int
	if err := db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&mode); err != nil {
		return fmt.Errorf("read auto_vacuum: %w", err)
	}
	if mode == incremental {
		return nil
	}
	if _, err := db.ExecContext(ctx, `PRAGMA auto_vacuum = INCREMENTAL`); err != nil {
		return fmt.Errorf("set auto_vacuum: %w", err)
	}
	if _, err := db.ExecContext(ctx, `VACUUM`); err != nil {
		return fmt.Errorf("vacuum to switch to incremental auto_vacuum: %w", err)
	}
	return nil
}

func (e *sqliteEngine) name() string { return EngineSQLite }

func (e *sqliteEngine) begin(ctx context.Context) (txn, error) {
	t, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return sqlTx{sqlQuerier{t}, t}, nil
}

// migrationLock needs no extra lock: each migration runs in an immediate
// transaction, which SQLite already makes exclusive across processes.
func (e *sqliteEngine) migrationLock(ctx context.Context, fn func() error) error {
	return fn()
}

// notify fans out in the process: an SQLite file has one process using it.
func (e *sqliteEngine) notify(ctx context.Context, channel, payload string) error {
	e.hub.publish(channel, payload)
	return nil
}

func (e *sqliteEngine) listen(ctx context.Context, channel string) error { return nil }

func (e *sqliteEngine) close() {
	e.read.Close()
	e.db.Close()
}

// sqlDB is what *sql.DB and *sql.Tx have in common.
type sqlDB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sqlQuerier adapts database/sql to querier.
type sqlQuerier struct{ d sqlDB }

func (q sqlQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.d.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, mapErr(err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, mapErr(err)
	}
	return n, nil
}

func (q sqlQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := q.d.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, mapErr(err)
	}
	return sqlRows{r}, nil
}

func (q sqlQuerier) queryRow(ctx context.Context, query string, args ...any) row {
	return sqlRow{q.d.QueryRowContext(ctx, query, args...)}
}

type sqlRows struct{ r *sql.Rows }

func (r sqlRows) Next() bool             { return r.r.Next() }
func (r sqlRows) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }
func (r sqlRows) Err() error             { return mapErr(r.r.Err()) }
func (r sqlRows) Close()                 { r.r.Close() }

type sqlRow struct{ r *sql.Row }

func (r sqlRow) Scan(dest ...any) error { return mapErr(r.r.Scan(dest...)) }

type sqlTx struct {
	sqlQuerier
	t *sql.Tx
}

func (t sqlTx) commit(ctx context.Context) error   { return t.t.Commit() }
func (t sqlTx) rollback(ctx context.Context) error { return t.t.Rollback() }
