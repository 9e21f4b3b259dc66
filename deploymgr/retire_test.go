package deploymgr_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/internal/testsupport"
)

// variantWasm is echo.wasm with a custom section holding n appended: the
// same program, its own binary (so its own compiled module on disk).
func variantWasm(n int) []byte {
	name, payload := "velo-test", fmt.Sprint(n)
	body := append([]byte{byte(len(name))}, name...)
	body = append(body, payload...)
	out := append(append([]byte(nil), echoWasm...), 0, byte(len(body))) // short sections: one-byte size
	return append(out, body...)
}

// TestOldVersionsGoAway redeploys one component much faster than the
// retirement grace and checks that old versions are retired meanwhile
// anyway, that the worker's data dir ends up holding what the live version
// needs (one unpacked tree, one compiled module; as many files as after
// the first deploy), that only the newest KeepDeployments artifacts and
// build logs and the newest KeepRecords records stay in the store, that
// the store's WAL is cut back, and that rollback works to a kept
// deployment and is refused, with the reason, to older ones.
func TestOldVersionsGoAway(t *testing.T) { testOldVersionsGoAway(t, "") }

// TestOldVersionsGoAwayPostgres is TestOldVersionsGoAway on Postgres
// (without the WAL, SQLite's alone).
func TestOldVersionsGoAwayPostgres(t *testing.T) { testOldVersionsGoAway(t, pgtest.URL(t)) }

func testOldVersionsGoAway(t *testing.T, dbURL string) {
	const keep, records, grace = 3, 6, time.Second
	data := t.TempDir()
	e := startWith(t, node.Config{DataDir: data, DatabaseURL: dbURL, KeepDeployments: keep, KeepRecords: records, Grace: grace})
	ctx, n := e.ctx, e.n
	files := func(i int) map[string][]byte {
		return map[string][]byte{
			"echo.wasm": variantWasm(i),
			"velo.toml": []byte(fmt.Sprintf("name = \"churn\"\n[env]\nGREETING = \"v%d\"\n", i)),
		}
	}

	// Deploy back to back until the first version is retired; with a
	// grace counted from the component's last change it never would be
	// while each deploy takes less than the grace. (On a machine so loaded
	// that a deploy takes longer, it is retired either way.)
	countDir := func(dir string) int {
		c := 0
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				c++
			}
			return nil
		})
		return c
	}
	var deps []api.Deployment
	var firstFiles int // in the data dir, once the first version serves
	start := time.Now()
	for i := 0; ; i++ {
		d := e.deploy("churn", files(i))
		if d.Status != "ready" || !d.Live {
			t.Fatalf("deployment %d: %s %s", i, d.Status, d.Error)
		}
		// A call, so that the version's machine code is compiled now
		// (the worker otherwise compiles it in the background) and there
		// is compiled code of old versions to collect.
		e.do("GET", "/fn/churn/env", "", nil)
		if i == 0 {
			// Counted once its compiled module is on disk (the call
			// compiles it; the file may land just after the answer).
			testsupport.EventuallyShow(t, 15*time.Second, "the first version's compiled module on disk",
				func() bool { return countDir(filepath.Join(data, "wasm-cache")) == 1 },
				func() string {
					return fmt.Sprintf("%d files in wasm-cache", countDir(filepath.Join(data, "wasm-cache")))
				})
			firstFiles = countDir(data)
		}
		deps = append(deps, d)
		ps, err := n.Store.Placements(ctx, deps[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 0 && i >= 2 {
			break
		}
		if i == 40 {
			t.Fatalf("after %d deploys in %s (grace %s) the first version is still placed", i+1, time.Since(start).Round(time.Millisecond), grace)
		}
	}
	// A few more, so that some fall out of the kept ones and the kept
	// records.
	for i := len(deps); len(deps) < records+3; i++ {
		deps = append(deps, e.deploy("churn", files(i)))
		e.do("GET", "/fn/churn/env", "", nil)
	}
	last := deps[len(deps)-1]
	t.Logf("%d deploys in %s", len(deps), time.Since(start).Round(time.Millisecond))

	// What stays: the live version on the worker, keep artifacts in the store.
	trees := func() int {
		es, _ := os.ReadDir(filepath.Join(data, "artifacts"))
		return len(es)
	}
	testsupport.EventuallyShow(t, 15*time.Second, "old versions retired on the worker", func() bool {
		all, err := n.Store.AllPlacements(ctx)
		return err == nil && len(all) == 1 && trees() == 1 && countDir(filepath.Join(data, "wasm-cache")) == 1 && countDir(data) <= firstFiles
	}, func() string {
		all, _ := n.Store.AllPlacements(ctx)
		return fmt.Sprintf("%d placements, %d unpacked trees, %d compiled modules, %d files in the data dir (%d after the first deploy)",
			len(all), trees(), countDir(filepath.Join(data, "wasm-cache")), countDir(data), firstFiles)
	})
	kept := func() string {
		var b strings.Builder
		for i, d := range deps {
			ok, err := n.Store.HasArtifact(ctx, d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if want := i >= len(deps)-keep; ok != want {
				fmt.Fprintf(&b, "deployment %d of %d: artifact kept %v, want %v; ", i+1, len(deps), ok, want)
			}
		}
		return b.String()
	}
	testsupport.EventuallyShow(t, 15*time.Second, "only the newest artifacts kept", func() bool { return kept() == "" }, kept)
	// The build logs of the dropped ones go too; their records stay, up
	// to the newest KeepRecords.
	logs := func() string {
		var b strings.Builder
		for i, d := range deps {
			text, err := n.Store.BuildLog(ctx, d.ID)
			if i < len(deps)-records {
				if !errors.Is(err, store.ErrNotFound) {
					fmt.Fprintf(&b, "deployment %d of %d: build log %q, %v; want its record gone; ", i+1, len(deps), text, err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			trimmed := text == store.TrimmedBuildLog
			if want := i < len(deps)-keep; trimmed != want || text == "" {
				fmt.Fprintf(&b, "deployment %d of %d: build log trimmed %v, want %v (%q); ", i+1, len(deps), trimmed, want, text)
			}
		}
		return b.String()
	}
	testsupport.EventuallyShow(t, 15*time.Second, "only the newest build logs and records kept", func() bool { return logs() == "" }, logs)
	if got, err := n.Store.Deployments(ctx, "churn", 0); err != nil || len(got) != records {
		t.Errorf("deployment records: %d, %v; want %d", len(got), err, records)
	}
	// The store's WAL is cut back a Grace after the last deploy (SQLite
	// would leave it at up to 4 MiB); the workers' heartbeats add a few
	// pages a second after that.
	wal := func() int64 {
		fi, err := os.Stat(filepath.Join(data, "velo.db-wal"))
		if err != nil {
			return -1
		}
		return fi.Size()
	}
	if dbURL == "" {
		testsupport.EventuallyShow(t, 15*time.Second, "the WAL cut back", func() bool { w := wal(); return w >= 0 && w < 128<<10 },
			func() string { return fmt.Sprintf("velo.db-wal: %d bytes", wal()) })
	}

	// Rollback to the oldest kept one works, and serves it.
	oldest := deps[len(deps)-keep]
	if _, err := e.c.Rollback(ctx, "churn", oldest.ID); err != nil {
		t.Fatalf("rollback to kept deployment %d: %v", oldest.ID, err)
	}
	want := fmt.Sprintf("GREETING=v%d", len(deps)-keep)
	testsupport.EventuallyShow(t, 15*time.Second, "the rolled-back version serving", func() bool {
		res, body := e.do("GET", "/fn/churn/env", "", nil)
		return res.StatusCode == 200 && strings.Contains(body, want)
	}, func() string { _, body := e.do("GET", "/fn/churn/env", "", nil); return body })
	// Rollback to one older than the kept ones is refused with the reason.
	gone := deps[len(deps)-keep-1]
	_, err := e.c.Rollback(ctx, "churn", gone.ID)
	if err == nil || !strings.Contains(err.Error(), "VELO_KEEP_DEPLOYMENTS") {
		t.Errorf("rollback to dropped deployment %d: %v, want a refusal naming VELO_KEEP_DEPLOYMENTS", gone.ID, err)
	}
	// Rollback to one whose record went is refused with the reason.
	_, err = e.c.Rollback(ctx, "churn", deps[0].ID)
	if err == nil || !strings.Contains(err.Error(), "records of deployments older") {
		t.Errorf("rollback to pruned deployment %d: %v, want a refusal saying old records are removed", deps[0].ID, err)
	}
	// And forward again to the newest, whose artifact is kept too.
	if _, err := e.c.Rollback(ctx, "churn", last.ID); err != nil {
		t.Errorf("rollback to the newest deployment: %v", err)
	}
	testsupport.EventuallyShow(t, 15*time.Second, "the newest version serving again", func() bool {
		res, body := e.do("GET", "/fn/churn/env", "", nil)
		return res.StatusCode == 200 && strings.Contains(body, fmt.Sprintf("GREETING=v%d\n", len(deps)-1))
	}, func() string { _, body := e.do("GET", "/fn/churn/env", "", nil); return body })
}
