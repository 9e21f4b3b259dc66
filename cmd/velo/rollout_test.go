package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/client"
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
