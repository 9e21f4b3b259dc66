package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Engine names returned by Store.Engine.
const (
	EnginePostgres = "postgres"
	EngineSQLite   = "sqlite"
)

// Store is Velo's state in Postgres or SQLite. Open one with Open; it is safe
// for concurrent use.
type Store struct {
	db  engine
	hub *hub
}

// querier runs statements; both engines' pools and transactions are one.
type querier interface {
	// exec runs a statement and returns the number of rows it affected.
	exec(ctx context.Context, sql string, args ...any) (int64, error)
	// query runs a statement returning rows; the caller closes them.
	query(ctx context.Context, sql string, args ...any) (rows, error)
	// queryRow runs a statement returning at most one row; Scan reports
	// ErrNotFound when there is none.
	queryRow(ctx context.Context, sql string, args ...any) row
}

// rows is a result set; its errors are already mapped by mapErr.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// row is a single-row result.
type row interface {
	Scan(dest ...any) error
}

// collect reads every row of rs with scan and closes rs; err is the
// query's, returned as it is, so that a listing reads
//
//	rs, err := s.db.query(ctx, `SELECT ...`)
//	out, err := collect(rs, err, scanWorker)
//
// instead of writing the loop again.
func collect[T any](rs rows, err error, scan func(row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []T
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rs.Err()
}

// scanString reads a row of one text column.
func scanString(r row) (string, error) {
	var v string
	err := r.Scan(&v)
	return v, err
}

// txn is an open transaction.
type txn interface {
	querier
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
}

// engine is a connection pool of one database kind.
type engine interface {
	querier
	name() string
	begin(ctx context.Context) (txn, error)
	// migrationLock runs fn while holding a lock that keeps other
	// processes from migrating the same database at the same time.
	migrationLock(ctx context.Context, fn func() error) error
	// notify sends payload to the listeners of channel, in every process.
	notify(ctx context.Context, channel, payload string) error
	// listen makes sure notifications on channel reach the Store's hub.
	listen(ctx context.Context, channel string) error
	close()
}

// Open connects to the database at url and brings its schema up to date.
// postgres:// and postgresql:// URLs open Postgres; sqlite:///abs/path.db or
// a plain file path opens (and creates) an SQLite database file.
func Open(ctx context.Context, url string) (*Store, error) {
	h := newHub()
	var (
		db  engine
		err error
	)
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		db, err = openPostgres(ctx, url, h)
	case strings.HasPrefix(url, "sqlite://"):
		db, err = openSQLite(ctx, strings.TrimPrefix(url, "sqlite://"), h)
	case strings.Contains(url, "://"):
		return nil, fmt.Errorf("open store: unsupported database url scheme in %q", redact(url))
	case url == "":
		return nil, errors.New("open store: empty database url")
	default:
		db, err = openSQLite(ctx, url, h)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	s := &Store{db: db, hub: h}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the connections and ends every Listen.
func (s *Store) Close() {
	s.db.close()
	s.hub.closeAll()
}

// Engine returns "postgres" or "sqlite".
func (s *Store) Engine() string { return s.db.name() }

// tx runs fn in a transaction, committing when it returns nil and rolling
// back otherwise.
func (s *Store) tx(ctx context.Context, fn func(q querier) error) (err error) {
	return s.txWith(ctx, s.db.begin, fn)
}

// txWith is tx with the transaction begun by begin.
func (s *Store) txWith(ctx context.Context, begin func(context.Context) (txn, error), fn func(q querier) error) (err error) {
	t, err := begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", mapErr(err))
	}
	defer func() {
		if err != nil {
			// The rollback error adds nothing to err; a failed
			// rollback leaves the connection to be discarded.
			_ = t.rollback(context.WithoutCancel(ctx))
		}
	}()
	if err = fn(t); err != nil {
		return err
	}
	if err = t.commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", mapErr(err))
	}
	return nil
}

// mapErr turns driver errors that callers must tell apart into ErrNotFound
// (no row; a reference to a missing row) and ErrConflict (duplicate key).
// affected is the error of an UPDATE or DELETE that had to touch a row:
// ErrNotFound when it touched none.
func affected(n int64, err error) error {
	if err == nil && n == 0 {
		return ErrNotFound
	}
	return err
}

// It is the only place that knows the drivers' error types.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) || errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return fmt.Errorf("%w: %s", ErrConflict, pe.ConstraintName)
		case "23503": // foreign_key_violation
			return fmt.Errorf("%w: %s", ErrNotFound, pe.ConstraintName)
		}
		return err
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fmt.Errorf("%w: %s", ErrConflict, se.Error())
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%w: %s", ErrNotFound, se.Error())
		}
	}
	return err
}

// micros stores a time as unix microseconds; the zero time is 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros is the inverse of micros, in UTC.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// now is the current time at the precision the store keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// cleanText makes s storable in a TEXT column of either engine: Postgres
// rejects NUL bytes and invalid UTF-8, which process output may contain.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	return s
}

// redact hides a password in a database URL for error messages.
func redact(url string) string {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return url
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return url
	}
	return scheme + "://…@" + rest[at+1:]
}
