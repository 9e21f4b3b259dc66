package main

import (
	"context"
	_ "embed"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/github/githubtest"
	"github.com/velo-run/velo/internal/testsupport"
)

// rolloutWasm is testdata/rollout.c: /healthz answers $HEALTH, every other
// path $VERSION (500 when $FAIL is set).
//
//go:embed testdata/rollout.wasm
var rolloutWasm []byte

// rolloutDir writes a component directory of the rollout module named app
// with the manifest lines extra (keys, then tables).
func rolloutDir(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rollout.wasm"), rolloutWasm, 0o644); err != nil {
		t.Fatal(err)
	}
	toml := "name = \"app\"\nmodule = \"rollout.wasm\"\n" + extra
	if err := os.WriteFile(filepath.Join(dir, "velo.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestHealthGateUnderLoad redeploys under load with a failing health
// check: the deployment fails with the check's status and body in velo
// deploy's output, the build log and the deployment's error; no call fails
// and every call is served by the previous version, which stays live. A
// passing check then goes live.
func TestHealthGateUnderLoad(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	s.velo(0, "deploy", rolloutDir(t, "health = \"/healthz\"\n[env]\nVERSION = \"v1\"\n"))
	comp, err := c.Component(ctx, "app")
	if err != nil || comp.Live == nil {
		t.Fatalf("after deploying v1: %+v, %v", comp, err)
	}
	v1 := comp.Live.ID
	log1, err := c.Deployment(ctx, v1)
	if err != nil || !strings.Contains(log1.BuildLog, "health check GET /healthz expecting 200-399 passed: 200") {
		t.Fatalf("v1's build log does not show the passed check (err %v):\n%s", err, log1.BuildLog)
	}

	bad := rolloutDir(t, "[health]\npath = \"/healthz\"\ntimeout = \"2s\"\n[env]\nVERSION = \"v2\"\nHEALTH = \"503\"\n")
	url := s.n.URL + "/fn/app/"
	stop := make(chan struct{})
	done := make(chan []call)
	var answered atomic.Int64
	go func() { done <- loadCounting(url, 32, 1000000, 60*time.Second, stop, &answered) }()
	testsupport.Eventually(t, 15*time.Second, "traffic on v1", func() bool { return answered.Load() >= 100 })
	out := s.velo(1, "deploy", bad)
	testsupport.Eventually(t, 15*time.Second, "more traffic after the failed deploy", func() bool { return answered.Load() >= 200 })
	close(stop)
	calls := <-done

	for _, want := range []string{"failed: health check GET /healthz expecting 200-399 failed on worker local", "503 Service Unavailable", `health of v2: 503`} {
		if !strings.Contains(out, want) {
			t.Errorf("velo deploy output lacks %q:\n%s", want, out)
		}
	}
	deps, err := c.Deployments(ctx, "app")
	if err != nil || len(deps) < 2 {
		t.Fatalf("deployments: %v %v", deps, err)
	}
	v2 := deps[0]
	if v2.Status != "failed" || !strings.Contains(v2.Error, "503") || !strings.Contains(v2.Error, "health of v2: 503") {
		t.Errorf("v2: status %q error %q, want failed with the check's status and body", v2.Status, v2.Error)
	}
	if got, err := c.Deployment(ctx, v2.ID); err != nil || !strings.Contains(got.BuildLog, "health of v2: 503") {
		t.Errorf("v2's build log lacks the check's answer (err %v):\n%s", err, got.BuildLog)
	}
	if comp, err := c.Component(ctx, "app"); err != nil || comp.Live == nil || comp.Live.ID != v1 {
		t.Fatalf("live after the failed deploy: %+v (err %v), want v1 (#%d)", comp.Live, err, v1)
	}
	if bad := failed(calls); len(bad) > 0 {
		t.Fatalf("%d of %d calls failed during the failed deploy:\n%s", len(bad), len(calls), describeCalls(bad))
	}
	for _, cl := range calls {
		if cl.body != "v1\n" || cl.deployment != fmt.Sprint(v1) {
			t.Fatalf("a call was answered %q by deployment %s, want v1 by #%d", cl.body, cl.deployment, v1)
		}
	}

	s.velo(0, "deploy", rolloutDir(t, "health = \"/healthz\"\n[env]\nVERSION = \"v3\"\n"))
	if _, body := s.get("/fn/app/"); body != "v3\n" {
		t.Fatalf("after deploying v3 with a passing check: %q", body)
	}
	t.Logf("failed health check under load (32 connections): %d calls, 0 failed, all served by v1", len(calls))
}

// TestCanary deploys a canary at 10 %: over 1000 calls it answers its
// share (within 1.5 points) and says so in X-Velo-Deployment; velo stats
// shows both deployments side by side; velo promote sends it every call.
// A second canary is ended by velo rollback.
func TestCanary(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	s.velo(0, "deploy", rolloutDir(t, "[env]\nVERSION = \"v1\"\n"))
	out := s.velo(0, "deploy", "--canary", "10", rolloutDir(t, "[env]\nVERSION = \"v2\"\n"))
	comp, err := c.Component(ctx, "app")
	if err != nil || comp.Live == nil || comp.Canary == nil || comp.CanaryWeight != 10 {
		t.Fatalf("after velo deploy --canary 10: %+v (err %v)", comp, err)
	}
	v1, v2 := comp.Live.ID, comp.Canary.ID
	if want := fmt.Sprintf("canary #%d takes 10 %% of the calls, #%d the rest", v2, v1); !strings.Contains(out, want) {
		t.Errorf("velo deploy --canary output lacks %q:\n%s", want, out)
	}
	if st := s.velo(0, "status", "app"); !strings.Contains(st, "canary:") || !strings.Contains(st, fmt.Sprintf("#%d", v2)) || !strings.Contains(st, "10 % of the calls") {
		t.Errorf("velo status does not show the canary:\n%s", st)
	}

	calls := load(s.n.URL+"/fn/app/", 8, 1000, 60*time.Second, nil)
	by := map[string]int{}
	for _, cl := range calls {
		if cl.status != 200 {
			t.Fatalf("a call failed: %d %q", cl.status, cl.body)
		}
		want := map[string]string{fmt.Sprint(v1): "v1\n", fmt.Sprint(v2): "v2\n"}[cl.deployment]
		if cl.body != want {
			t.Fatalf("deployment %s answered %q", cl.deployment, cl.body)
		}
		by[cl.deployment]++
	}
	share := 100 * float64(by[fmt.Sprint(v2)]) / float64(len(calls))
	if len(calls) != 1000 || share < 8.5 || share > 11.5 {
		t.Fatalf("canary share %.1f %% of %d calls (%v), want 10 ± 1.5", share, len(calls), by)
	}
	testsupport.Eventually(t, 30*time.Second, "both deployments in velo stats", func() bool {
		st, err := c.Stats(ctx, "app", "1h")
		if err != nil || len(st.Deployments) != 2 {
			return false
		}
		got := map[int64]int64{}
		for _, d := range st.Deployments {
			got[d.Deployment] = d.Hits
		}
		return got[v1] == int64(by[fmt.Sprint(v1)]) && got[v2] == int64(by[fmt.Sprint(v2)])
	})
	if st := s.velo(0, "stats", "app"); !strings.Contains(st, "by deployment:") || !strings.Contains(st, fmt.Sprintf("#%d", v2)) {
		t.Errorf("velo stats does not show the deployments side by side:\n%s", st)
	}

	out = s.velo(0, "promote", "app")
	if !strings.Contains(out, "live at") {
		t.Errorf("velo promote output:\n%s", out)
	}
	for _, cl := range load(s.n.URL+"/fn/app/", 4, 100, 30*time.Second, nil) {
		if cl.status != 200 || cl.deployment != fmt.Sprint(v2) {
			t.Fatalf("after velo promote: %d from deployment %s, want 200 from #%d", cl.status, cl.deployment, v2)
		}
	}

	// A canary rolled back takes no calls any more.
	s.velo(0, "deploy", "--canary", "50", rolloutDir(t, "[env]\nVERSION = \"v3\"\n"))
	testsupport.Eventually(t, 15*time.Second, "v3 answering its half", func() bool {
		_, b1 := s.get("/fn/app/")
		_, b2 := s.get("/fn/app/")
		return b1 == "v3\n" || b2 == "v3\n"
	})
	if out := s.velo(0, "rollback", "app"); !strings.Contains(out, "ended") {
		t.Errorf("velo rollback of a canary:\n%s", out)
	}
	for _, cl := range load(s.n.URL+"/fn/app/", 4, 100, 30*time.Second, nil) {
		if cl.status != 200 || cl.body != "v2\n" {
			t.Fatalf("after velo rollback of the canary: %d %q, want v2 only", cl.status, cl.body)
		}
	}
	t.Logf("canary at 10 %%: %.1f %% of %d calls (%v)", share, len(calls), by)
}

// TestAutoRollbackUnderLoad deploys, under load, a version whose calls
// fail: it goes live (its health check passes), its errors are seen, and
// Velo rolls it back to the previous version by itself, saying so in the
// deployment's status, velo status and the component's logs. (When it
// does not, with auto_rollback = false or under the thresholds, is
// deploymgr's TestWatch.)
func TestAutoRollbackUnderLoad(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	s.velo(0, "deploy", rolloutDir(t, "health = \"/healthz\"\n[env]\nVERSION = \"v1\"\n"))
	comp, err := c.Component(ctx, "app")
	if err != nil || comp.Live == nil {
		t.Fatal(comp, err)
	}
	v1 := comp.Live.ID

	bad := rolloutDir(t, "health = \"/healthz\"\n[env]\nVERSION = \"v2\"\nFAIL = \"1\"\n")
	stop := make(chan struct{})
	done := make(chan []call)
	var answered atomic.Int64
	go func() { done <- loadCounting(s.n.URL+"/fn/app/", 8, 1000000, 90*time.Second, stop, &answered) }()
	testsupport.Eventually(t, 15*time.Second, "traffic on v1", func() bool { return answered.Load() >= 100 })
	s.velo(0, "deploy", bad)
	comp, _ = c.Component(ctx, "app")
	v2 := comp.Live.ID
	var v2dep api.Deployment
	testsupport.EventuallyShow(t, 60*time.Second, "v2 rolled back to v1", func() bool {
		comp, err := c.Component(ctx, "app")
		if err != nil || comp.Live == nil {
			return false
		}
		v2dep, err = c.Deployment(ctx, v2)
		return err == nil && comp.Live.ID == v1 && comp.Live.Live && v2dep.Status == "failed"
	}, func() string { return fmt.Sprintf("v2: %+v", v2dep) })
	// The load runs on a moment on v1 again.
	n := answered.Load()
	testsupport.Eventually(t, 15*time.Second, "traffic after the rollback", func() bool { return answered.Load() >= n+100 })
	close(stop)
	calls := <-done

	if !strings.HasPrefix(v2dep.Error, "rolled back: 100 % errors vs 0 %") {
		t.Errorf("v2's error = %q, want it to say it was rolled back and why", v2dep.Error)
	}
	if st := s.velo(0, "status", "app"); !strings.Contains(st, "rolled back: 100 % errors vs 0 %") {
		t.Errorf("velo status does not say v2 was rolled back:\n%s", st)
	}
	if lg := s.velo(0, "logs", "app"); !strings.Contains(lg, fmt.Sprintf("deployment %d rolled back: 100 %% errors vs 0 %%", v2)) {
		t.Errorf("the component's logs do not say v2 was rolled back:\n%s", lg)
	}
	var sawV2, v1After int
	for _, cl := range calls {
		switch {
		case cl.deployment == fmt.Sprint(v2):
			sawV2++
		case sawV2 > 0 && cl.deployment == fmt.Sprint(v1) && cl.status == 200:
			v1After++
		}
	}
	if sawV2 == 0 || v1After == 0 {
		t.Fatalf("calls: %d answered by v2, %d by v1 after it; want both", sawV2, v1After)
	}
	last := calls[len(calls)-1]
	if last.status != 200 || last.body != "v1\n" {
		t.Fatalf("last call after the rollback: %d %q", last.status, last.body)
	}

	t.Logf("rolled back by itself under load (8 connections): %d calls, %d answered by v2 before the rollback", len(calls), sawV2)
}

// TestGitHubAutoRollback: a pushed version whose calls fail is rolled
// back by itself, and its GitHub deployment hears why: a failure status
// "rolled back: 100 % errors vs 0 %" after its success.
func TestGitHubAutoRollback(t *testing.T) {
	v := newGHVelo(t, "")
	ctx, gh := v.ctx, v.gh
	files := func(env string) map[string]string {
		return map[string]string{
			"velo.toml":    "name = \"hello\"\nmodule = \"rollout.wasm\"\n[env]\n" + env,
			"rollout.wasm": string(rolloutWasm),
		}
	}
	repo := gh.AddRepo("octo", "hello-app", "main", 42)
	sha1 := repo.Commit(files("VERSION = \"v1\"\n"), "good")
	v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", "", ""))
	v.settledOn(repo, sha1)
	sha2 := repo.Commit(files("VERSION = \"v2\"\nFAIL = \"1\"\n"), "broken")
	v.answer(http.StatusAccepted)(gh.Push(ctx, v.hook(), repo, "main", "", ""))
	if got := states(v.settledOn(repo, sha2)); !slices.Equal(got, []string{"in_progress", "success"}) {
		t.Fatalf("statuses of the broken push = %v, want in_progress, success (its health is fine)", got)
	}
	stop := make(chan struct{})
	done := make(chan []call)
	go func() { done <- load(v.n.URL+"/fn/hello/", 4, 1000000, 60*time.Second, stop) }()
	var d githubtest.Deployment
	testsupport.EventuallyShow(t, 60*time.Second, "a failure status on the broken push's deployment", func() bool {
		for _, gd := range v.ghDeployments(repo) {
			if gd.SHA == sha2 {
				d = gd
			}
		}
		return len(d.Statuses) == 3
	}, func() string { return fmt.Sprintf("%+v", d.Statuses) })
	close(stop)
	<-done
	if st := d.Statuses[2]; st.State != "failure" || st.Description != "rolled back: 100 % errors vs 0 %" || !strings.Contains(st.LogURL, "/components/hello/deployments/") {
		t.Fatalf("status after the rollback = %+v", st)
	}
	testsupport.Eventually(t, 30*time.Second, "v1 served again", func() bool {
		code, body := v.body("/fn/hello/")
		return code == 200 && body == "v1\n"
	})
}
