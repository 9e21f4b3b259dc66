package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// A read outside a transaction does not wait for the transaction: it runs
// on a reader and sees what was committed before it, not the transaction's
// writes until it commits.
func TestSQLiteReadsBesideTransaction(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	mkComponent(t, s, "before")
	err := s.tx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, `INSERT INTO components (name, created_at, updated_at) VALUES ('inside', 0, 0)`); err != nil {
			return err
		}
		// With one connection this read waits for the transaction,
		// which waits for it: the deadline ends both.
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := s.Component(rctx, "before"); err != nil {
			return err
		}
		if _, err := s.Component(rctx, "inside"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a reader saw the transaction's write before its commit: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Component(ctx, "inside"); err != nil {
		t.Errorf("after the commit: %v", err)
	}
}

// Readers are read-only: a write that reached one would fail, not run
// beside the writer.
func TestSQLiteReadersAreReadOnly(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, "sqlite://"+filepath.Join(t.TempDir(), "velo.db"))
	e := s.db.(*sqliteEngine)
	if _, err := e.read.ExecContext(ctx, `INSERT INTO components (name, created_at, updated_at) VALUES ('x', 0, 0)`); err == nil {
		t.Fatal("a write on a reader succeeded")
	}
	for q, want := range map[string]bool{
		"SELECT 1": true, "\n\t select 1": true, "INSERT INTO x VALUES (1) RETURNING id": false,
		"PRAGMA wal_checkpoint(TRUNCATE)": false, "SELEC": false, "": false,
	} {
		if got := isSelect(q); got != want {
			t.Errorf("isSelect(%q) = %v, want %v", q, got, want)
		}
	}
}
