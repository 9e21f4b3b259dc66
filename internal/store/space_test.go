package store

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSQLiteReclaimsSpace checks that an SQLite file made before
// incremental auto-vacuum (the mode SQLite creates files in) is switched to
// it at open with its rows intact, and that the space of dropped artifacts
// goes back to the file system after ReclaimSpace.
func TestSQLiteReclaimsSpace(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "velo.db")
	// An old file: SQLite's default mode, some rows of its own.
	old, err := sql.Open("sqlite", path)
	must(t, err)
	if _, err := old.ExecContext(ctx, `CREATE TABLE before_us (v TEXT); INSERT INTO before_us VALUES ('kept')`); err != nil {
		t.Fatal(err)
	}
	must(t, old.Close())

	s, err := Open(ctx, path)
	must(t, err)
	defer s.Close()
	var mode int
	must(t, s.db.queryRow(ctx, `PRAGMA auto_vacuum`).Scan(&mode))
	if mode != 2 {
		t.Fatalf("auto_vacuum = %d after Open, want 2 (incremental)", mode)
	}
	var v string
	must(t, s.db.queryRow(ctx, `SELECT v FROM before_us`).Scan(&v))
	if v != "kept" {
		t.Fatalf("row of the old file: %q", v)
	}

	size := func() int64 {
		if _, err := s.db.exec(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		must(t, err)
		return fi.Size()
	}
	mkComponent(t, s, "app")
	const n = 20
	for i := range n {
		d := fmt.Sprint("a", i)
		must(t, s.PutArtifact(ctx, d, bytes.Repeat([]byte{byte(i)}, 256<<10)))
		mkDeployment(t, s, "app", d, "wasm")
	}
	full := size()
	dropped, err := s.DropArtifacts(ctx, "app", 1, time.Now().Add(time.Second))
	must(t, err)
	if dropped != n-1 {
		t.Fatalf("dropped %d artifacts, want %d", dropped, n-1)
	}
	must(t, s.ReclaimSpace(ctx))
	after := size()
	t.Logf("database file: %d bytes with %d artifacts, %d after dropping %d", full, n, after, dropped)
	if after > full/4 {
		t.Errorf("database file %d bytes after dropping %d of %d artifacts and reclaiming, was %d: space not given back", after, dropped, n, full)
	}
}

// testTrimBuildLogs: the build logs of a component's deployments beyond its
// newest keep are trimmed, except the live one's and the one rolling out;
// other components' are untouched, and the records stay.
func testTrimBuildLogs(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	var ds []Deployment
	for i := range 6 {
		d := mkDeployment(t, s, "app", fmt.Sprint("a", i), "wasm")
		must(t, s.AppendBuildLog(ctx, d.ID, fmt.Sprintf("log %d\n", i)))
		ds = append(ds, d)
	}
	o := mkDeployment(t, s, "other", "o", "wasm")
	must(t, s.AppendBuildLog(ctx, o.ID, "other log\n"))
	must(t, s.SetTarget(ctx, "app", ds[0].ID))
	must(t, s.Promote(ctx, "app", ds[0].ID))   // live: the oldest
	must(t, s.SetTarget(ctx, "app", ds[1].ID)) // rolling out: the next

	if _, err := s.TrimBuildLogs(ctx, "app", 0); err == nil {
		t.Error("TrimBuildLogs with keep 0: no error")
	}
	n, err := s.TrimBuildLogs(ctx, "app", 2)
	must(t, err)
	if n != 2 {
		t.Errorf("trimmed %d build logs, want 2 (deployments 3 and 4)", n)
	}
	if n, err := s.TrimBuildLogs(ctx, "app", 2); err != nil || n != 0 {
		t.Errorf("trimming again = %d, %v; want 0", n, err)
	}
	for i, d := range ds {
		text, err := s.BuildLog(ctx, d.ID)
		must(t, err)
		want := fmt.Sprintf("log %d\n", i)
		if i == 2 || i == 3 {
			want = TrimmedBuildLog
		}
		if text != want {
			t.Errorf("deployment %d: build log %q, want %q", i, text, want)
		}
	}
	if text, err := s.BuildLog(ctx, o.ID); err != nil || text != "other log\n" {
		t.Errorf("other component's build log: %q, %v", text, err)
	}
	if got, err := s.Deployments(ctx, "app", 100); err != nil || len(got) != len(ds) {
		t.Errorf("deployment records: %d, %v; want %d", len(got), err, len(ds))
	}
	must(t, s.ReclaimSpace(ctx))
}
