package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSQLiteReclaimsSpace checks that an SQLite file made before
// incremental auto-vacuum (the mode SQLite creates files in) is switched to
// it at open with its rows intact, and that the space of dropped artifacts
// goes back to the file system after ReclaimSpace, which also empties the
// WAL.
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
	// The WAL is cut to nothing too: left alone, it stays as large as
	// it grew since SQLite's last automatic checkpoint.
	if fi, err := os.Stat(path + "-wal"); err != nil {
		t.Error(err)
	} else if fi.Size() != 0 {
		t.Errorf("WAL after ReclaimSpace: %d bytes, want none", fi.Size())
	}
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

// testPruneDeployments: the records of a component's deployments beyond
// its newest keep go, with their build logs, once their artifact has gone
// or a newer deployment uses it; the live one, the one rolling out, the
// canary, the one automatic rollback returns to and a placed one stay, and
// so do other components' records. Deployed many times over, a
// component's records, build logs and artifacts stay within keep.
func testPruneDeployments(t *testing.T, s *Store) {
	ctx := context.Background()
	mkComponent(t, s, "app")
	mkComponent(t, s, "other")
	must(t, s.UpsertWorker(ctx, Worker{Name: "w", Addr: "127.0.0.1:1"}))
	var ds []Deployment
	for i := range 20 {
		digest := fmt.Sprint("a", i)
		must(t, s.PutArtifact(ctx, digest, []byte(digest)))
		d := mkDeployment(t, s, "app", digest, "wasm")
		must(t, s.AppendBuildLog(ctx, d.ID, fmt.Sprintf("log %d\n", i)))
		ds = append(ds, d)
	}
	o := mkDeployment(t, s, "other", "a5", "wasm") // newer, and uses app's 6th artifact
	must(t, s.SetTarget(ctx, "app", ds[0].ID))
	must(t, s.Promote(ctx, "app", ds[0].ID))
	must(t, s.SetTarget(ctx, "app", ds[1].ID))
	must(t, s.Promote(ctx, "app", ds[1].ID)) // live (rolled back to), ds[0] the previous
	must(t, s.SetCanary(ctx, "app", ds[3].ID, 10))
	must(t, s.PutPlacement(ctx, Placement{Deployment: ds[2].ID, Worker: "w", State: PlacementReady}))

	if _, err := s.PruneDeployments(ctx, "app", 0); err == nil {
		t.Error("PruneDeployments with keep 0: no error")
	}
	// Every artifact still stored: only the record whose artifact a newer
	// deployment uses may go.
	n, err := s.PruneDeployments(ctx, "app", 3)
	must(t, err)
	if n != 1 {
		t.Errorf("pruned %d records with their artifacts stored, want 1 (deployment 6, whose artifact other uses)", n)
	}
	if _, err := s.DropArtifacts(ctx, "app", 3, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err = s.PruneDeployments(ctx, "app", 3)
	must(t, err)
	if want := int64(20 - 3 - 4 - 1); n != want {
		t.Errorf("pruned %d records, want %d", n, want)
	}
	if n, err := s.PruneDeployments(ctx, "app", 3); err != nil || n != 0 {
		t.Errorf("pruning again = %d, %v; want 0", n, err)
	}
	left, err := s.Deployments(ctx, "app", 0)
	must(t, err)
	var ids []int64
	for _, d := range left {
		ids = append(ids, d.ID)
	}
	var want []int64
	for _, i := range []int{19, 18, 17, 3, 2, 1, 0} {
		want = append(want, ds[i].ID)
	}
	if fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("records left %v, want %v (newest 3, canary, placed, live, previous)", ids, want)
	}
	if _, err := s.BuildLog(ctx, ds[5].ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("build log of a pruned deployment: %v, want ErrNotFound", err)
	}
	if _, err := s.Deployment(ctx, o.ID); err != nil {
		t.Errorf("other's deployment: %v", err)
	}
	if ok, err := s.HasArtifact(ctx, "a5"); err != nil || !ok {
		t.Errorf("artifact other uses: stored %v, %v", ok, err)
	}

	// Many deploys of one component: everything per deployment stays
	// within keep (+1 for the one being deployed).
	mkComponent(t, s, "churn")
	const keep = 4
	count := func(query string) int {
		var n int
		must(t, s.db.queryRow(ctx, query).Scan(&n))
		return n
	}
	for i := range 40 {
		digest := fmt.Sprint("c", i)
		must(t, s.PutArtifact(ctx, digest, bytes.Repeat([]byte{byte(i)}, 1<<10)))
		d := mkDeployment(t, s, "churn", digest, "wasm")
		must(t, s.AppendBuildLog(ctx, d.ID, "built\n"))
		must(t, s.SetTarget(ctx, "churn", d.ID))
		must(t, s.Promote(ctx, "churn", d.ID))
		if _, err := s.DropArtifacts(ctx, "churn", keep, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PruneDeployments(ctx, "churn", keep); err != nil {
			t.Fatal(err)
		}
		must(t, s.ReclaimSpace(ctx))
		recs := count(`SELECT count(*) FROM deployments WHERE component = 'churn'`)
		logs := count(`SELECT count(*) FROM build_logs b JOIN deployments d ON d.id = b.deployment WHERE d.component = 'churn'`)
		arts := count(`SELECT count(*) FROM artifacts WHERE digest LIKE 'c%'`)
		if recs > keep || logs > keep || arts > keep {
			t.Fatalf("after %d deploys with keep %d: %d records, %d build logs, %d artifacts; want at most %d each",
				i+1, keep, recs, logs, arts, keep)
		}
	}
}
