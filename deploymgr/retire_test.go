package deploymgr_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
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
// needs (one unpacked tree, one compiled module), that only the newest
// KeepDeployments artifacts stay in the store, and that rollback works to
// a kept deployment and is refused, with the reason, to an older one.
func TestOldVersionsGoAway(t *testing.T) {
	const keep, grace = 3, time.Second
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	data := t.TempDir()
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: data, KeepDeployments: keep, Grace: grace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e := &env{t: t, ctx: ctx, n: n, c: client.New(n.URL, n.Token, nil)}
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
	var deps []api.Deployment
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
	// A few more, so that some fall out of the kept ones.
	for i := len(deps); len(deps) < keep+3; i++ {
		deps = append(deps, e.deploy("churn", files(i)))
		e.do("GET", "/fn/churn/env", "", nil)
	}
	last := deps[len(deps)-1]
	t.Logf("%d deploys in %s", len(deps), time.Since(start).Round(time.Millisecond))

	// What stays: the live version on the worker, keep artifacts in the store.
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
	trees := func() int {
		es, _ := os.ReadDir(filepath.Join(data, "artifacts"))
		return len(es)
	}
	testsupport.EventuallyShow(t, 15*time.Second, "old versions retired on the worker", func() bool {
		all, err := n.Store.AllPlacements(ctx)
		return err == nil && len(all) == 1 && trees() == 1 && countDir(filepath.Join(data, "wasm-cache")) == 1
	}, func() string {
		all, _ := n.Store.AllPlacements(ctx)
		return fmt.Sprintf("%d placements, %d unpacked trees, %d compiled modules", len(all), trees(), countDir(filepath.Join(data, "wasm-cache")))
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
	// The build logs of the dropped ones go too; their records stay.
	logs := func() string {
		var b strings.Builder
		for i, d := range deps {
			text, err := n.Store.BuildLog(ctx, d.ID)
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
	testsupport.EventuallyShow(t, 15*time.Second, "only the newest build logs kept", func() bool { return logs() == "" }, logs)

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
	_, err = e.c.Rollback(ctx, "churn", gone.ID)
	if err == nil || !strings.Contains(err.Error(), "VELO_KEEP_DEPLOYMENTS") {
		t.Errorf("rollback to dropped deployment %d: %v, want a refusal naming VELO_KEEP_DEPLOYMENTS", gone.ID, err)
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
