package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

// openSQLiteDB opens the SQLite engine on a fresh file, closed when t ends.
func openSQLiteDB(t *testing.T) *sql.DB {
	t.Helper()
	e, err := openSQLite(context.Background(), filepath.Join(t.TempDir(), "velo.db"), newHub())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e.db
}

// cacheOf runs fn with the statement cache of db's one connection.
func cacheOf(t *testing.T, db *sql.DB, fn func(c *cachingConn)) {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*cachingConn)
		if !ok {
			return fmt.Errorf("driver connection is %T, not *cachingConn", dc)
		}
		fn(c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A query run again with the same text while the first one's rows are
// still being read, in one transaction on the one connection, must not
// reset the statement under the outer loop.
func TestStmtCacheNestedSameQuery(t *testing.T) {
	ctx := context.Background()
	db := openSQLiteDB(t)
	if _, err := db.ExecContext(ctx, `CREATE TABLE nums (n INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	const count = 5
	for i := 1; i <= count; i++ {
		if _, err := db.ExecContext(ctx, `INSERT INTO nums (n) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
	}
	const q = `SELECT n FROM nums WHERE n > $1 ORDER BY n`
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	outer, err := tx.QueryContext(ctx, q, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seen []int
	for outer.Next() {
		var n int
		if err := outer.Scan(&n); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, n)
		inner, err := tx.QueryContext(ctx, q, n)
		if err != nil {
			t.Fatal(err)
		}
		var later int
		for inner.Next() {
			later++
		}
		if err := inner.Err(); err != nil {
			t.Fatal(err)
		}
		inner.Close()
		if later != count-n {
			t.Errorf("inner query after %d: %d rows, want %d", n, later, count-n)
		}
		if len(seen) > count {
			break
		}
	}
	if err := outer.Err(); err != nil {
		t.Fatal(err)
	}
	outer.Close()
	if want := []int{1, 2, 3, 4, 5}; fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("outer query read %v, want %v", seen, want)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// The statement is free again and still gives the right answer.
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM (`+q+`)`, 2).Scan(&n); err != nil || n != 3 {
		t.Errorf("after the transaction: %d, %v; want 3", n, err)
	}
}

// The cache keeps statements for reuse, at most its size of them, and a
// query evicted and run again still works.
func TestStmtCacheBounded(t *testing.T) {
	ctx := context.Background()
	db := openSQLiteDB(t)
	cacheOf(t, db, func(c *cachingConn) { c.size = 4 })
	for round := 0; round < 3; round++ {
		for i := 0; i < 20; i++ {
			var got int
			if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT $1 + %d`, i), round).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != round+i {
				t.Fatalf("SELECT %d + %d = %d", round, i, got)
			}
		}
	}
	cacheOf(t, db, func(c *cachingConn) {
		if n := len(c.byQuery); n == 0 || n > 4 || c.lru.Len() != n {
			t.Errorf("%d statements cached (list %d), want 1 to 4", n, c.lru.Len())
		}
		if _, ok := c.byQuery[`SELECT $1 + 19`]; !ok {
			t.Errorf("the last statement run is not cached")
		}
	})
}
