package docker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

func TestNewEngineUnreachable(t *testing.T) {
	cli, err := client.NewClientWithOpts(client.WithHost("unix:///nonexistent/docker.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	_, err = New(context.Background(), Config{Owner: "x", Client: cli})
	if err == nil || !strings.HasPrefix(err.Error(), "docker engine not reachable:") {
		t.Fatalf("err = %v, want docker engine not reachable", err)
	}
}

func TestImageTag(t *testing.T) {
	for _, tc := range []struct{ owner, component, digest, want string }{
		{"local", "hello", "0123456789abcdef0123", "velo/hello:0123456789ab-local"},
		{"Worker_1", "Hello_World", "ABCDEF", "velo/hello-world:abcdef-worker-1"},
		{"w", "--x..y--", "00", "velo/x-y:00-w"},
		{"w", "___", "00", "velo/component:00-w"},
		{strings.Repeat("o", 300), "c", "00", "velo/c:00-" + strings.Repeat("o", 100)},
	} {
		if got := imageTag(tc.owner, tc.component, tc.digest); got != tc.want {
			t.Errorf("imageTag(%q, %q, %q) = %q, want %q", tc.owner, tc.component, tc.digest, got, tc.want)
		}
	}
}

func TestHardening(t *testing.T) {
	r := newRuntime(t, Config{CPUs: 0.5, Pids: 64})
	dir, digest := appDir(t, "")
	a := newSpec(t, "hardening", dir, digest, manifest.Manifest{
		Port: 8080, Timeout: 5 * time.Second, Memory: 64 << 20,
		Env:   map[string]string{"GREETING": "hi", "PORT": "1"},
		Scale: manifest.Scale{Min: 1, Max: 1},
	})
	prepare(t, r, a)

	cs := containers(t, r, a.spec.Deployment)
	if len(cs) != 1 {
		t.Fatalf("%d containers, want 1", len(cs))
	}
	info, err := r.cli.ContainerInspect(context.Background(), cs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	hc := info.HostConfig
	if want := fmt.Sprintf("/velo-%s-%s-%d-1", r.cfg.Owner, a.spec.Component, a.spec.Deployment); info.Name != want {
		t.Errorf("name %q, want %q", info.Name, want)
	}
	if hc.Privileged || !slices.Equal(hc.CapDrop, []string{"ALL"}) || len(hc.CapAdd) != 0 {
		t.Errorf("privileged %v capdrop %v capadd %v", hc.Privileged, hc.CapDrop, hc.CapAdd)
	}
	if !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
		t.Errorf("security opts %v lack no-new-privileges", hc.SecurityOpt)
	}
	if !hc.ReadonlyRootfs || hc.Tmpfs["/tmp"] != "rw,noexec,nosuid,size=64m" {
		t.Errorf("readonly %v tmpfs %v", hc.ReadonlyRootfs, hc.Tmpfs)
	}
	if hc.Memory != 64<<20 || hc.MemorySwap != 64<<20 || hc.NanoCPUs != 5e8 || hc.PidsLimit == nil || *hc.PidsLimit != 64 {
		t.Errorf("memory %d swap %d nanocpus %d pids %v", hc.Memory, hc.MemorySwap, hc.NanoCPUs, hc.PidsLimit)
	}
	if hc.RestartPolicy.Name != container.RestartPolicyDisabled || hc.AutoRemove {
		t.Errorf("restart %q autoremove %v", hc.RestartPolicy.Name, hc.AutoRemove)
	}
	for port, bs := range info.NetworkSettings.Ports {
		for _, b := range bs {
			if b.HostIP != "127.0.0.1" {
				t.Errorf("port %s published on %q", port, b.HostIP)
			}
		}
	}
	if len(info.NetworkSettings.Ports["8080/tcp"]) != 1 {
		t.Errorf("ports %v", info.NetworkSettings.Ports)
	}
	l := info.Config.Labels
	if l[LabelManaged] != "true" || l[LabelOwner] != r.cfg.Owner || l[LabelComponent] != a.spec.Component || l[LabelDigest] != digest {
		t.Errorf("labels %v", l)
	}

	// And from inside.
	for _, tc := range []struct{ path, want string }{
		{"/caps", "CapEff:\t0000000000000000"},
		{"/caps", "NoNewPrivs:\t1"},
		{"/write", "read-only file system"},
		{"/write?path=/tmp/x", "ok"},
		{"/env", "PORT=8080 GREETING=hi"},
		{"/echo/a/b?x=1&y=2", "path=/echo/a/b query=x=1&y=2"},
		{"", "hello hi"},
	} {
		code, body := a.get(tc.path)
		if code != http.StatusOK || !strings.Contains(body, tc.want) {
			t.Errorf("GET %s = %d %q, want %q", tc.path, code, body, tc.want)
		}
	}

	// The forwarding headers the router set reach the container as they
	// are (the router appended the client already; nothing more added).
	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, a.mount+"/echo/f", nil)
	req.RemoteAddr = "203.0.113.5:0"
	req.Header.Set("X-Forwarded-For", "203.0.113.5, 10.0.0.1")
	req.Header.Set("X-Forwarded-Proto", "https")
	a.inst.Serve(w, req, a.mount)
	if want := `xff="203.0.113.5, 10.0.0.1" xfp="https"`; !strings.Contains(w.Body.String(), want) {
		t.Errorf("forwarding headers: %q, want %s", w.Body.String(), want)
	}

	if err := a.inst.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cs := containers(t, r, a.spec.Deployment); len(cs) != 0 {
		t.Errorf("%d containers left after Close", len(cs))
	}
	if code, _ := a.get("/"); code != http.StatusServiceUnavailable {
		t.Errorf("after Close: %d, want 503", code)
	}
}

func TestBuildOnceAndRemoveImage(t *testing.T) {
	r := newRuntime(t, Config{})
	dir, digest := appDir(t, "LABEL test="+randHex(4)+"\n")
	a := newSpec(t, "build", dir, digest, manifest.Manifest{Scale: manifest.Scale{Max: 1}})
	prepare(t, r, a)
	if log := a.log.String(); !strings.Contains(log, "Step 1/5 : FROM scratch") || !strings.Contains(log, "built image "+imageTag(r.cfg.Owner, a.spec.Component, digest)) {
		t.Errorf("build log does not show the build:\n%s", log)
	}

	img, err := r.cli.ImageInspect(context.Background(), imageTag(r.cfg.Owner, a.spec.Component, digest))
	if err != nil {
		t.Fatal(err)
	}
	if l := img.Config.Labels; l[LabelComponent] != a.spec.Component || l[LabelDigest] != digest || l[LabelOwner] != r.cfg.Owner || l[LabelManaged] != "" {
		t.Errorf("image labels %v", l)
	}

	b := newSpec(t, "build", dir, digest, manifest.Manifest{Scale: manifest.Scale{Max: 1}})
	prepare(t, r, b)
	if log := b.log.String(); strings.Contains(log, "Step 1/") || !strings.Contains(log, "not rebuilding") {
		t.Errorf("same digest was rebuilt:\n%s", log)
	}

	ctx := context.Background()
	tag := imageTag(r.cfg.Owner, a.spec.Component, digest)
	if err := r.RemoveImage(ctx, a.spec.Component, digest); !errors.Is(err, ErrImageInUse) {
		t.Fatalf("RemoveImage while in use = %v", err)
	}
	a.inst.Close(ctx)
	if err := r.RemoveImage(ctx, a.spec.Component, digest); !errors.Is(err, ErrImageInUse) {
		t.Fatalf("RemoveImage while one instance is open = %v", err)
	}
	b.inst.Close(ctx)
	if err := r.RemoveImage(ctx, a.spec.Component, digest); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cli.ImageInspect(ctx, tag); !cerrdefs.IsNotFound(err) {
		t.Fatalf("image still there: %v", err)
	}
	if err := r.RemoveImage(ctx, a.spec.Component, digest); err != nil {
		t.Fatalf("second RemoveImage = %v", err)
	}
}

func TestBuildFails(t *testing.T) {
	r := newRuntime(t, Config{})
	dir, digest := appDir(t, "COPY no-such-file /x\n")
	a := newSpec(t, "broken", dir, digest, manifest.Manifest{})
	_, err := r.Prepare(context.Background(), a.spec)
	if err == nil {
		t.Fatal("Prepare succeeded")
	}
	for _, want := range []string{"build failed", "COPY no-such-file /x", "no-such-file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
		if !strings.Contains(a.log.String(), want) && want != "build failed" {
			t.Errorf("build log lacks %q", want)
		}
	}
	if n := strings.Count(err.Error(), "\n"); n > buildTail+1 {
		t.Errorf("error has %d lines", n)
	}
	if _, err := r.cli.ImageInspect(context.Background(), imageTag(r.cfg.Owner, a.spec.Component, digest)); !cerrdefs.IsNotFound(err) {
		t.Errorf("failed build left an image: %v", err)
	}
}

func TestNoDockerfile(t *testing.T) {
	r := newRuntime(t, Config{})
	a := newSpec(t, "nodockerfile", t.TempDir(), randHex(32), manifest.Manifest{})
	_, err := r.Prepare(context.Background(), a.spec)
	if err == nil || !strings.Contains(err.Error(), "no Dockerfile") {
		t.Fatalf("err = %v", err)
	}
}

func TestNeverReady(t *testing.T) {
	r := newRuntime(t, Config{ReadyTimeout: 1500 * time.Millisecond})
	dir, digest := appDir(t, "")
	a := newSpec(t, "neverready", dir, digest, manifest.Manifest{Env: map[string]string{"NOLISTEN": "1"}})
	_, err := r.Prepare(context.Background(), a.spec)
	if err == nil {
		t.Fatal("Prepare succeeded")
	}
	if !strings.Contains(err.Error(), "did not answer HTTP on port 8080 within 1.5s") || !strings.Contains(err.Error(), "booting forever") {
		t.Errorf("err = %v", err)
	}
	if !a.logs.has(worker.System, "failed to start") {
		t.Errorf("no failure event in logs:\n%s", a.logs)
	}
	if cs := containers(t, r, a.spec.Deployment); len(cs) != 0 {
		t.Errorf("%d containers left", len(cs))
	}
}

func TestExitsAtStart(t *testing.T) {
	r := newRuntime(t, Config{ReadyTimeout: 20 * time.Second})
	dir, digest := appDir(t, "")
	a := newSpec(t, "exits", dir, digest, manifest.Manifest{Env: map[string]string{"EXIT_AT_START": "1"}})
	start := time.Now()
	_, err := r.Prepare(context.Background(), a.spec)
	if err == nil {
		t.Fatal("Prepare succeeded")
	}
	if !strings.Contains(err.Error(), "exited with code 1 before it was ready") || !strings.Contains(err.Error(), "fatal: bad config") {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s: the exit was not noticed", d)
	}
	if cs := containers(t, r, a.spec.Deployment); len(cs) != 0 {
		t.Errorf("%d containers left", len(cs))
	}
}

// TestStopKeepsOthersConnections: stopping the container of one instance
// leaves the keep-alive connections to another instance's container open:
// its next request reuses one rather than dialing again.
func TestStopKeepsOthersConnections(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: time.Hour})
	dir, digest := appDir(t, "")
	a := newSpec(t, "keepconn", dir, digest, manifest.Manifest{})
	b := newSpec(t, "stopped", dir, digest, manifest.Manifest{})
	prepare(t, r, a)
	prepare(t, r, b)
	// reused sends GET / to a and tells whether its proxy reused an idle
	// connection to the container.
	reused := func() bool {
		t.Helper()
		var got httptrace.GotConnInfo
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { got = info },
		})
		w := httptest.NewRecorder()
		a.inst.Serve(w, httptest.NewRequest(http.MethodGet, a.mount+"/", nil).WithContext(ctx), a.mount)
		if w.Code != 200 {
			t.Fatalf("GET / = %d %q", w.Code, w.Body)
		}
		return got.Reused
	}
	reused() // a connection to a's container, idle once answered
	if !reused() {
		t.Fatal("a second request to the same container dialed again: keep-alive is off")
	}
	if code, _ := b.get("/"); code != 200 {
		t.Fatalf("GET / on b = %d", code)
	}
	if err := b.inst.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !reused() {
		t.Error("stopping b's container closed the idle connections to a's")
	}
}

func TestPauseWake(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: time.Hour})
	dir, digest := appDir(t, "")
	a := newSpec(t, "pausewake", dir, digest, manifest.Manifest{})
	prepare(t, r, a)
	ctx := context.Background()
	if err := a.inst.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	cs := containers(t, r, a.spec.Deployment)
	if len(cs) != 1 || cs[0].State != "paused" {
		t.Fatalf("containers %+v, want one paused", cs)
	}
	if code, body := a.get("/"); code != 200 || body != "hello \n" {
		t.Fatalf("GET / = %d %q", code, body)
	}
	cs = containers(t, r, a.spec.Deployment)
	if len(cs) != 1 || cs[0].State != "running" {
		t.Fatalf("containers %+v, want one running", cs)
	}
	if s := a.inst.Stats(); s.Wakes != 1 || s.Pauses != 1 || s.Count(Running) != 1 {
		t.Errorf("stats %+v", s)
	}
	if !a.logs.has(worker.System, "paused") || !a.logs.has(worker.System, "woke") {
		t.Errorf("no pause/wake events:\n%s", a.logs)
	}
}

func TestIdleTimers(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: 300 * time.Millisecond, IdleStop: 1500 * time.Millisecond})
	dir, digest := appDir(t, "")
	a := newSpec(t, "idle", dir, digest, manifest.Manifest{Scale: manifest.Scale{Min: 0, Max: 2}})
	prepare(t, r, a)
	warm := newSpec(t, "idle", dir, digest, manifest.Manifest{Scale: manifest.Scale{Min: 1, Max: 2}})
	prepare(t, r, warm)

	testsupport.Eventually(t, 10*time.Second, "paused then stopped", func() bool {
		s := a.inst.Stats()
		return s.Pauses == 1 && s.Stops == 1 && s.Count(Stopped) == 1
	})
	cs := containers(t, r, a.spec.Deployment)
	if len(cs) != 1 || cs[0].State != "exited" {
		t.Fatalf("containers %+v, want one exited", cs)
	}
	if code, _ := a.get("/"); code != 200 {
		t.Fatalf("GET after stop = %d", code)
	}
	if s := a.inst.Stats(); s.Starts != 2 || s.Count(Running) != 1 {
		t.Errorf("stats %+v", s)
	}
	// scale.min 1 stays running all along.
	if s := warm.inst.Stats(); s.Pauses != 0 || s.Count(Running) != 1 {
		t.Errorf("warm instance went idle: %+v", s)
	}
}

func TestColdStartOnce(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: time.Hour, ScaleUpInFlight: 1000})
	dir, digest := appDir(t, "")
	a := newSpec(t, "coldstart", dir, digest, manifest.Manifest{Scale: manifest.Scale{Min: 0, Max: 4}})
	prepare(t, r, a)
	if err := a.inst.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := a.inst.Stats(); s.Count(Stopped) != 1 {
		t.Fatalf("stats %+v", s)
	}
	var wg sync.WaitGroup
	codes := make([]int, 16)
	for k := range codes {
		wg.Go(func() { codes[k], _ = a.get("/hostname") })
	}
	wg.Wait()
	for k, c := range codes {
		if c != 200 {
			t.Errorf("request %d: %d", k, c)
		}
	}
	cs := containers(t, r, a.spec.Deployment)
	if len(cs) != 1 || cs[0].State != "running" {
		t.Fatalf("containers %+v, want exactly one running", cs)
	}
	if s := a.inst.Stats(); s.Starts != 2 {
		t.Errorf("%d starts, want 2 (prepare + one cold start)", s.Starts)
	}
}

func TestScaleUp(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: time.Hour, ScaleUpInFlight: 2})
	dir, digest := appDir(t, "")
	a := newSpec(t, "scaleup", dir, digest, manifest.Manifest{Scale: manifest.Scale{Min: 0, Max: 2}})
	prepare(t, r, a)
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			if code, _ := a.get("/slow?d=700ms"); code != 200 {
				t.Errorf("GET /slow = %d", code)
			}
		})
	}
	wg.Wait()
	testsupport.Eventually(t, 30*time.Second, "second container running", func() bool { return a.inst.Stats().Count(Running) == 2 })
	if cs := containers(t, r, a.spec.Deployment); len(cs) != 2 {
		t.Fatalf("%d containers, want scale.max 2", len(cs))
	}
}

func TestCrashReplaced(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: time.Hour})
	dir, digest := appDir(t, "")
	a := newSpec(t, "crash", dir, digest, manifest.Manifest{Scale: manifest.Scale{Min: 1, Max: 1}})
	prepare(t, r, a)
	before := a.inst.Stats().Containers[0].Name
	if code, _ := a.get("/crash"); code != http.StatusBadGateway {
		t.Errorf("GET /crash = %d, want 502", code)
	}
	testsupport.Eventually(t, 20*time.Second, "replacement", func() bool {
		s := a.inst.Stats()
		return s.Crashes == 1 && s.Count(Running) == 1 && s.Containers[0].Name != before
	})
	if code, _ := a.get("/"); code != 200 {
		t.Errorf("GET after crash = %d", code)
	}
	testsupport.Eventually(t, 10*time.Second, "crashed container removed", func() bool {
		return len(containers(t, r, a.spec.Deployment)) == 1
	})
	if !a.logs.has(worker.System, "crashed (exit code 1); replaced by") || !a.logs.has(worker.Stderr, "crashing on request") {
		t.Errorf("logs:\n%s", a.logs)
	}
}

// TestCrashBackoff: a container that crashes again soon after it was
// replaced is not restarted at once: during the hold requests are refused
// with 503 and Retry-After, and once it is over a container starts again.
func TestCrashBackoff(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: time.Hour, CrashBackoff: 5 * time.Second})
	dir, digest := appDir(t, "")
	a := newSpec(t, "crashloop", dir, digest, manifest.Manifest{Scale: manifest.Scale{Min: 1, Max: 1}})
	prepare(t, r, a)
	a.get("/crash")
	testsupport.Eventually(t, 20*time.Second, "the first crash replaced at once", func() bool {
		s := a.inst.Stats()
		return s.Crashes == 1 && s.Count(Running) == 1
	})
	a.get("/crash")
	testsupport.Eventually(t, 20*time.Second, "the second crash noticed", func() bool { return a.inst.Stats().Crashes == 2 })
	w := httptest.NewRecorder()
	a.inst.Serve(w, httptest.NewRequest(http.MethodGet, a.mount+"/", nil), a.mount)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "keeps crashing") {
		t.Fatalf("during the hold: %d %q, Retry-After %q", w.Code, w.Body.String(), w.Header().Get("Retry-After"))
	}
	if n := a.inst.Stats().Count(Running) + a.inst.Stats().Count(Starting); n != 0 {
		t.Fatalf("%d containers running or starting during the hold", n)
	}
	testsupport.Eventually(t, 30*time.Second, "serving again after the hold", func() bool {
		code, _ := a.get("/")
		return code == http.StatusOK
	})
	if !a.logs.has(worker.System, "2 times in a row soon after starting; next start in 5s") {
		t.Errorf("logs:\n%s", a.logs)
	}
}

func TestLogs(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: time.Hour})
	dir, digest := appDir(t, "")
	a := newSpec(t, "logs", dir, digest, manifest.Manifest{})
	prepare(t, r, a)
	msg := randHex(6)
	if code, _ := a.get("/log?msg=" + msg); code != 200 {
		t.Fatalf("GET /log = %d", code)
	}
	testsupport.Eventually(t, 5*time.Second, "log lines", func() bool {
		return a.logs.has(worker.Stdout, "stdout "+msg) && a.logs.has(worker.Stderr, "stderr "+msg)
	})
	if a.logs.has(worker.Stdout, "stderr "+msg) || a.logs.has(worker.Stderr, "stdout "+msg) {
		t.Errorf("streams mixed up:\n%s", a.logs)
	}
	if !a.logs.has(worker.System, "started") {
		t.Errorf("no start event:\n%s", a.logs)
	}
	// After a stop and start the earlier lines are not repeated. The
	// engine streams a container's stdout in order, so once a line the
	// second run wrote has arrived, a repeat of the first run's would have
	// arrived before it.
	if err := a.inst.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := randHex(6)
	if code, _ := a.get("/log?msg=" + after); code != 200 {
		t.Fatalf("GET /log after the restart = %d", code)
	}
	testsupport.Eventually(t, 5*time.Second, "the second run's log line", func() bool { return a.logs.has(worker.Stdout, "stdout "+after) })
	a.logs.mu.Lock()
	n := 0
	for _, l := range a.logs.lines {
		if l.line == "stdout "+msg {
			n++
		}
	}
	a.logs.mu.Unlock()
	if n != 1 {
		t.Errorf("line seen %d times", n)
	}
}

func TestTimeout(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: time.Hour})
	dir, digest := appDir(t, "")
	a := newSpec(t, "timeout", dir, digest, manifest.Manifest{Timeout: 300 * time.Millisecond})
	prepare(t, r, a)
	start := time.Now()
	code, _ := a.get("/slow?d=3s")
	if code != http.StatusGatewayTimeout {
		t.Errorf("GET /slow = %d, want 504", code)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
	if code, _ := a.get("/slow?d=10ms"); code != 200 {
		t.Errorf("GET fast = %d", code)
	}
}

func TestAdoption(t *testing.T) {
	cli := dockertest.Engine(t)
	owner := "velotest-adopt-" + randHex(4)
	other := "velotest-other-" + randHex(4)
	r := newRuntime(t, Config{})
	dir, digest := appDir(t, "")
	a := newSpec(t, "adopt", dir, digest, manifest.Manifest{})
	prepare(t, r, a)
	img := imageTag(r.cfg.Owner, a.spec.Component, digest)

	ctx := context.Background()
	mk := func(name string, labels map[string]string) string {
		resp, err := cli.ContainerCreate(ctx, &container.Config{Image: img, Labels: labels}, nil, nil, nil, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.ContainerRemove(ctx, resp.ID, container.RemoveOptions{Force: true}) })
		return resp.ID
	}
	mine := mk("velotest-mine-"+randHex(4), map[string]string{LabelManaged: "true", LabelOwner: owner})
	foreign := mk("velotest-foreign-"+randHex(4), map[string]string{LabelManaged: "true", LabelOwner: other})
	unlabelled := mk("velotest-plain-"+randHex(4), map[string]string{LabelOwner: owner}) // not managed

	r2, err := New(ctx, Config{Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close(ctx)
	if _, err := cli.ContainerInspect(ctx, mine); !cerrdefs.IsNotFound(err) {
		t.Errorf("own leftover survived: %v", err)
	}
	for _, id := range []string{foreign, unlabelled} {
		if _, err := cli.ContainerInspect(ctx, id); err != nil {
			t.Errorf("container %s not ours was touched: %v", id[:12], err)
			t.Logf("mine %s foreign %s unlabelled %s", mine[:12], foreign[:12], unlabelled[:12])
		}
	}
	// The first runtime's instance, another owner, still serves.
	if code, _ := a.get("/"); code != 200 {
		t.Errorf("other owner's instance broken: %d", code)
	}
}

func TestHammer(t *testing.T) {
	r := newRuntime(t, Config{IdlePause: 50 * time.Millisecond, IdleStop: 200 * time.Millisecond, ScaleUpInFlight: 2})
	dir, digest := appDir(t, "")
	a := newSpec(t, "hammer", dir, digest, manifest.Manifest{Scale: manifest.Scale{Min: 0, Max: 2}})
	prepare(t, r, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for k := 0; ctx.Err() == nil; k++ {
			if k%2 == 0 {
				a.inst.Pause(ctx)
			} else {
				a.inst.Stop(ctx)
			}
			time.Sleep(30 * time.Millisecond)
		}
	})
	var reqs sync.WaitGroup
	for g := range 6 {
		reqs.Go(func() {
			for k := range 25 {
				if code, body := a.get(fmt.Sprintf("/echo/%d/%d", g, k)); code != 200 || !strings.Contains(body, fmt.Sprintf("path=/echo/%d/%d", g, k)) {
					t.Errorf("GET = %d %q", code, body)
				}
				if k%5 == 0 {
					time.Sleep(80 * time.Millisecond) // let the idle timers act
				}
			}
		})
	}
	reqs.Wait()
	cancel()
	wg.Wait()
	if n := len(containers(t, r, a.spec.Deployment)); n > 2 {
		t.Errorf("%d containers, scale.max is 2", n)
	}
	t.Logf("stats: %+v", a.inst.Stats())
}

// TestTwoOwnersShareEngine: two workers on one engine (two owners) run the
// same deployment side by side, each with its own containers and image;
// one retiring it leaves the other serving. (With names and tags without
// the owner, the second worker's container could not even be created.)
func TestTwoOwnersShareEngine(t *testing.T) {
	r1 := newRuntime(t, Config{})
	r2 := newRuntime(t, Config{Owner: testOwner + "-b"})
	t.Cleanup(func() {
		// The sweep covers testOwner only: leave nothing of the second.
		ctx := context.Background()
		own := filters.NewArgs(filters.Arg("label", LabelOwner+"="+r2.cfg.Owner))
		if cs, err := r1.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: own}); err == nil {
			for _, c := range cs {
				t.Errorf("container %v of the second owner left", c.Names)
				r1.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
			}
		}
		if imgs, err := r1.cli.ImageList(ctx, image.ListOptions{Filters: own}); err == nil {
			for _, img := range imgs {
				r1.cli.ImageRemove(ctx, img.ID, image.RemoveOptions{Force: true, PruneChildren: true})
			}
		}
	})
	dir, digest := appDir(t, "")
	a := newSpec(t, "shared", dir, digest, manifest.Manifest{})
	b := &app{log: &testsupport.SyncBuffer{}, logs: &sink{}, mount: a.mount}
	b.spec = a.spec // the same component, deployment and artifact
	b.spec.BuildLog, b.spec.Logs = b.log, b.logs
	prepare(t, r1, a)
	prepare(t, r2, b)
	for i, x := range []*app{a, b} {
		if code, body := x.get("/"); code != http.StatusOK {
			t.Fatalf("worker %d: GET / = %d %q", i+1, code, body)
		}
	}
	d := a.spec.Deployment
	if n1, n2 := len(containers(t, r1, d)), len(containers(t, r2, d)); n1 != 1 || n2 != 1 {
		t.Fatalf("containers: %d of the first owner, %d of the second; want 1 each", n1, n2)
	}

	ctx := context.Background()
	tag1, tag2 := imageTag(r1.cfg.Owner, a.spec.Component, digest), imageTag(r2.cfg.Owner, a.spec.Component, digest)
	if err := a.inst.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r1.Retire(ctx, a.spec.Component, digest); err != nil {
		t.Fatalf("first owner retires: %v", err)
	}
	if _, err := r1.cli.ImageInspect(ctx, tag1); !cerrdefs.IsNotFound(err) {
		t.Fatalf("first owner's image %s still there: %v", tag1, err)
	}
	if _, err := r2.cli.ImageInspect(ctx, tag2); err != nil {
		t.Fatalf("second owner's image %s: %v", tag2, err)
	}
	if code, body := b.get("/"); code != http.StatusOK {
		t.Fatalf("second owner after the first retired: GET / = %d %q", code, body)
	}
	if err := b.inst.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.Retire(ctx, a.spec.Component, digest); err != nil {
		t.Fatalf("second owner retires: %v", err)
	}
	if _, err := r2.cli.ImageInspect(ctx, tag2); !cerrdefs.IsNotFound(err) {
		t.Fatalf("second owner's image %s still there: %v", tag2, err)
	}
}

// TestHealthReadiness: with a health check, a container is ready when its
// health path passes, not when its port opens: right after Prepare the
// check answers 200, although the server answered 503 for its first
// second.
func TestHealthReadiness(t *testing.T) {
	r := newRuntime(t, Config{ReadyTimeout: 30 * time.Second})
	dir, digest := appDir(t, "")
	h := &manifest.Health{Path: "/healthz", Timeout: 30 * time.Second, Expect: manifest.DefaultExpect}
	a := newSpec(t, "healthready", dir, digest, manifest.Manifest{Health: h, Env: map[string]string{"HEALTHY_AFTER": "1s"}})
	prepare(t, r, a)
	if code, body := a.get("/healthz"); code != 200 || body != "healthy\n" {
		t.Fatalf("GET /healthz right after Prepare = %d %q, want 200: ready before its health check passed", code, body)
	}
}

// TestHealthNeverPasses: a container whose health check never passes is
// not ready; Prepare fails with the check's last answer and leaves no
// container.
func TestHealthNeverPasses(t *testing.T) {
	r := newRuntime(t, Config{ReadyTimeout: 1500 * time.Millisecond})
	dir, digest := appDir(t, "")
	h := &manifest.Health{Path: "/healthz", Timeout: 30 * time.Second, Expect: manifest.DefaultExpect}
	a := newSpec(t, "unhealthy", dir, digest, manifest.Manifest{Health: h, Env: map[string]string{"UNHEALTHY": "no database"}})
	_, err := r.Prepare(context.Background(), a.spec)
	if err == nil {
		t.Fatal("Prepare succeeded")
	}
	for _, want := range []string{"did not pass its health check GET /healthz expecting 200-399", "with 500", "unhealthy: no database"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to hold %q", err, want)
		}
	}
	if cs := containers(t, r, a.spec.Deployment); len(cs) != 0 {
		t.Errorf("%d containers left", len(cs))
	}
}

// TestCloseDrains: closing an instance (its deployment was replaced) lets
// the requests in flight finish before the containers stop.
func TestCloseDrains(t *testing.T) {
	r := newRuntime(t, Config{})
	dir, digest := appDir(t, "")
	a := newSpec(t, "drain", dir, digest, manifest.Manifest{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	inst, err := r.prepare(ctx, a.spec)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	a.inst = inst
	type answer struct {
		code int
		body string
	}
	got := make(chan answer, 1)
	go func() {
		code, body := a.get("/slow?d=2s")
		got <- answer{code, body}
	}()
	testsupport.Eventually(t, 30*time.Second, "the slow call in flight", func() bool {
		inst.mu.Lock()
		defer inst.mu.Unlock()
		return inst.inflight > 0
	})
	if err := inst.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	select {
	case a := <-got:
		if a.code != 200 || a.body != "slept 2s" {
			t.Fatalf("call in flight at close = %d %q, want 200 \"slept 2s\"", a.code, a.body)
		}
	default:
		t.Fatal("Close returned before the call in flight was answered")
	}
	if cs := containers(t, r, a.spec.Deployment); len(cs) != 0 {
		t.Errorf("%d containers left", len(cs))
	}
}
