package store

import (
	"container/list"
	"context"
	"database/sql/driver"
	"fmt"
	"reflect"
)

// stmtCacheSize bounds the prepared statements kept per SQLite connection.
// The store's own statements are a few hundred fixed texts; River builds
// some of its queries (a list of ids, a template) and those texts vary, so
// the cache keeps the most recently used and finalizes the rest.
const stmtCacheSize = 256

// stmtCacheConnector opens connections that keep their prepared statements.
//
// modernc's driver parses every statement given to Exec or Query anew, and
// for the store's short statements the parse costs more than running them
// (18.6 % of the CPU of velo up deploying many components went to
// sqlite3Prepare). database/sql's own Stmt cannot help: with one connection
// (see sqliteEngine), preparing on the DB while a transaction holds that
// connection waits for it forever. A cache inside the driver connection has
// no such problem: database/sql hands a connection to one goroutine at a
// time, so the cache needs no lock, and a transaction's statements use it
// like any others.
type stmtCacheConnector struct {
	driver.Connector
	size int
}

func (c stmtCacheConnector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	raw, ok := dc.(rawConn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("sqlite driver connection %T lacks an interface the statement cache needs", dc)
	}
	return &cachingConn{rawConn: raw, size: c.size, byQuery: map[string]*list.Element{}, lru: list.New()}, nil
}

// rawConn is what modernc's connection implements and database/sql uses;
// cachingConn implements the same set, so database/sql takes the same paths
// with it as without it.
type rawConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// cachedStmt is a statement kept by its text. busy is set while Rows of it
// are open: a second query with the same text meanwhile (a nested loop in a
// transaction) must not reset it under the first, so it gets a statement of
// its own, uncached.
type cachedStmt struct {
	query string
	stmt  cacheableStmt
	busy  bool
}

type cacheableStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

// cachingConn is a driver connection whose ExecContext and QueryContext run
// statements prepared once per text, at most size of them, least recently
// used finalized first. Not safe for concurrent use, as no driver.Conn is.
type cachingConn struct {
	rawConn
	size    int
	byQuery map[string]*list.Element // of *cachedStmt
	lru     *list.List               // front: most recently used
}

// stmt returns the cached statement for query, preparing it if needed, or
// nil when it cannot be cached now (it is busy, or the cache is full of busy
// statements); the caller then runs query uncached.
func (c *cachingConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if el, ok := c.byQuery[query]; ok {
		cs := el.Value.(*cachedStmt)
		if cs.busy {
			return nil, nil
		}
		c.lru.MoveToFront(el)
		return cs, nil
	}
	for c.lru.Len() >= c.size {
		if !c.evict() {
			return nil, nil
		}
	}
	ds, err := c.rawConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	st, ok := ds.(cacheableStmt)
	if !ok {
		ds.Close()
		return nil, nil
	}
	cs := &cachedStmt{query: query, stmt: st}
	c.byQuery[query] = c.lru.PushFront(cs)
	return cs, nil
}

// evict finalizes the least recently used statement that is not busy.
func (c *cachingConn) evict() bool {
	for el := c.lru.Back(); el != nil; el = el.Prev() {
		cs := el.Value.(*cachedStmt)
		if cs.busy {
			continue
		}
		c.lru.Remove(el)
		delete(c.byQuery, cs.query)
		cs.stmt.Close()
		return true
	}
	return false
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.rawConn.ExecContext(ctx, query, args)
	}
	return cs.stmt.ExecContext(ctx, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.rawConn.QueryContext(ctx, query, args)
	}
	r, err := cs.stmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	cs.busy = true
	return &cachedRows{Rows: r, cs: cs}, nil
}

// Close finalizes the cached statements, then closes the connection
// (SQLite keeps a connection with unfinalized statements open).
func (c *cachingConn) Close() error {
	for el := c.lru.Front(); el != nil; el = el.Next() {
		el.Value.(*cachedStmt).stmt.Close()
	}
	c.lru.Init()
	clear(c.byQuery)
	return c.rawConn.Close()
}

// cachedRows frees its statement for the next query when closed.
// database/sql closes every Rows it is given, also after an error or when
// the query's context ends.
type cachedRows struct {
	driver.Rows
	cs *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.cs.busy = false
	return err
}

// The column type methods pass through what the driver's rows implement,
// answering as database/sql does for rows that implement none.

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (precision, scale int64, ok bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

var (
	_ rawConn                               = (*cachingConn)(nil)
	_ driver.RowsColumnTypeScanType         = (*cachedRows)(nil)
	_ driver.RowsColumnTypeDatabaseTypeName = (*cachedRows)(nil)
	_ driver.RowsColumnTypeLength           = (*cachedRows)(nil)
	_ driver.RowsColumnTypeNullable         = (*cachedRows)(nil)
	_ driver.RowsColumnTypePrecisionScale   = (*cachedRows)(nil)
)
