package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
)

// routerSection measures `velo router` (separate process, route table in
// Postgres) against nginx and a direct connection, all forwarding to the
// same static Go backend with wrk at 32 connections; hit recording on vs
// off; the router's net/http path; and the route lookup with 10, 1000 and
// 10000 components.
func routerSection(ctx context.Context, b *Bench) (string, error) {
	velo, err := b.GoBuild(ctx, "./cmd/velo")
	if err != nil {
		return "", err
	}
	server, stopPG, err := pgtest.Throwaway()
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	defer stopPG()
	db := strings.Replace(server, "/postgres?", "/velo_bench?", 1)
	if err := createDatabase(ctx, server, "velo_bench"); err != nil {
		return "", err
	}

	// The backend: a second nginx answering every request with a fixed
	// 13-byte body. A Go net/http backend in this process collected
	// garbage every ~60 ms under this load, and its pauses, not the
	// proxies, made the p99 of every target (direct's the worst).
	backendURL, stopBackend, _, err := startNginx(ctx, b.Tmp, "backend",
		`location / { default_type text/plain; return 200 "Hello, world\n"; }`, "")
	if err != nil {
		return "", err
	}
	defer stopBackend()
	if err := seedStaticRoute(ctx, db, backendURL); err != nil {
		return "", err
	}

	nginxURL, stopNginx, nginxPid, err := startNginx(ctx, b.Tmp, "nginx", `location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }`, fmt.Sprintf("upstream backend { server %s; keepalive 64; keepalive_requests 1000000; }", strings.TrimPrefix(backendURL, "http://")))
	if err != nil {
		return "", err
	}
	defer stopNginx()
	type target struct {
		name, url string
		pid       int // the process doing the forwarding (0: none)
		rps       []float64
		p50, p99  []time.Duration
		cpu       []time.Duration // its CPU time per call
		bad       int64
	}
	targets := []*target{{name: "direct", url: backendURL}, {name: "nginx", url: nginxURL, pid: nginxPid}}
	for _, v := range []struct{ name, flag, env string }{
		{"velo router", "", ""}, {"velo router --no-hits", "--no-hits", ""}, {"velo router --no-fast-path", "--no-fast-path", ""},
		// One core, as nginx's one worker process.
		{"velo router GOMAXPROCS=1", "", "GOMAXPROCS=1"},
	} {
		u, stop, pid, err := startVeloRouter(ctx, b, velo, db, v.flag, v.env)
		if err != nil {
			return "", err
		}
		defer stop()
		targets = append(targets, &target{name: v.name, url: u, pid: pid})
	}
	for _, t := range targets { // warm up: connections, code paths
		if _, err := b.Wrk(ctx, t.url+"/fn/bench/", 2, 32, 2*time.Second); err != nil {
			return "", fmt.Errorf("%s: %w", t.name, err)
		}
	}
	for round := 1; round <= b.Rounds; round++ {
		for _, t := range targets {
			cpu0 := cpuTime(t.pid)
			r, err := b.Wrk(ctx, t.url+"/fn/bench/", 2, 32, b.Duration)
			if err != nil {
				return "", fmt.Errorf("%s: %w", t.name, err)
			}
			t.rps, t.p50, t.p99 = append(t.rps, r.rps), append(t.p50, r.p50), append(t.p99, r.p99)
			if t.pid != 0 && r.requests > 0 {
				t.cpu = append(t.cpu, (cpuTime(t.pid)-cpu0)/time.Duration(r.requests))
			}
			t.bad += r.non2xx + r.socketErrors
			b.logf("router round %d: %-27s %8.0f req/s p50 %v p99 %v", round, t.name, r.rps, r.p50, r.p99)
		}
	}
	byName := map[string]*target{}
	for _, t := range targets {
		byName[t.name] = t
	}
	ng, vr, noHits, slow, direct := byName["nginx"], byName["velo router"], byName["velo router --no-hits"], byName["velo router --no-fast-path"], byName["direct"]
	oneCore := byName["velo router GOMAXPROCS=1"]
	// Compared round by round (the runs of a round are seconds apart;
	// the machine's speed drifts over minutes), then the median.
	var oneCoreRatios []float64
	var ratios, hitCost []float64
	var p50d, p99d, oneCoreP99d []time.Duration
	for i := range ng.rps {
		ratios = append(ratios, vr.rps[i]/ng.rps[i])
		hitCost = append(hitCost, 100*(noHits.rps[i]-vr.rps[i])/noHits.rps[i])
		oneCoreRatios = append(oneCoreRatios, oneCore.rps[i]/ng.rps[i])
		p50d = append(p50d, vr.p50[i]-ng.p50[i])
		p99d = append(p99d, vr.p99[i]-ng.p99[i])
		oneCoreP99d = append(oneCoreP99d, oneCore.p99[i]-ng.p99[i])
	}

	lookup, hitNs, err := routerMicroBench(ctx, b)
	if err != nil {
		return "", err
	}

	t := b.newTable("")
	ratio := median(ratios)
	t.add("throughput (req/s, 32 conns)", fmt.Sprintf("%.0f", median(vr.rps)), fmt.Sprintf("%.0f nginx", median(ng.rps)),
		fmt.Sprintf("%.2f×", ratio), "≥ 1.0× nginx", verdict(ratio >= 1.0))
	p99n := median(ng.p99)
	t.add("p50 latency", fmtDur(median(vr.p50)), fmtDur(median(ng.p50)), fmtDiff(median(p50d)), "", info)
	t.add("p99 latency", fmtDur(median(vr.p99)), fmtDur(p99n), fmtDiff(median(p99d)), "no worse than nginx", verdict(median(p99d) <= 0))
	t.add("hit recording cost", fmt.Sprintf("%.0f req/s on", median(vr.rps)), fmt.Sprintf("%.0f off", median(noHits.rps)),
		fmt.Sprintf("%.1f %%", median(hitCost)), "≤ 3 %", verdict(median(hitCost) <= 3))
	t.add("net/http path (--no-fast-path)", fmt.Sprintf("%.0f", median(slow.rps)), fmt.Sprintf("%.0f nginx", median(ng.rps)),
		fmt.Sprintf("%.2f×", median(slow.rps)/median(ng.rps)), "", info)
	t.add("one core (GOMAXPROCS=1), as nginx's one worker", fmt.Sprintf("%.0f, p99 %s", median(oneCore.rps), fmtDur(median(oneCore.p99))),
		fmt.Sprintf("%.0f, p99 %s nginx", median(ng.rps), fmtDur(p99n)), fmt.Sprintf("%.2f×, p99 %s", median(oneCoreRatios), fmtDiff(median(oneCoreP99d))), "", info)
	t.add("proxy CPU time per call", fmtDur(median(vr.cpu)), fmtDur(median(ng.cpu))+" nginx", fmt.Sprintf("%.2f×", float64(median(vr.cpu))/float64(median(ng.cpu))), "", info)
	t.add("hit recording CPU per call, every core on one component (BenchmarkHitRecording)", fmt.Sprintf("%.0f ns", hitNs), "",
		fmt.Sprintf("%.1f %% of the router's CPU per call", 100*hitNs/float64(median(vr.cpu).Nanoseconds())), "", info)
	t.add("direct to the backend (no proxy)", fmt.Sprintf("%.0f", median(direct.rps)), "", "", "", info)
	t.add("route lookup, 10 / 1000 / 10000 components", lookup, "", "", "flat", info)
	var errs int64
	for _, tg := range targets {
		errs += tg.bad
	}

	var sb strings.Builder
	sb.WriteString("## Router\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	sb.WriteString("`velo router` runs as its own process with its route table in Postgres (a throwaway server), one component whose only worker is a static backend: a second nginx answering every request with a fixed 13-byte body (`return 200`). A Go net/http backend was used before; under this load it collected garbage every 60 ms or so, and its pauses, not the proxies, set every target's p99 (direct's was the worst). " +
		"The peer nginx (Debian's, one worker process, `upstream { keepalive 64; }`, `proxy_http_version 1.1`, `Connection \"\"`, keep-alive requests unlimited on both sides) forwards to the same backend, and *direct* is wrk against the backend itself. " +
		fmt.Sprintf("wrk -t2 -c32, %v per run after a 2s warm-up of each, the targets interleaved in each of %d rounds; the table gives the medians of the values and, in *Velo vs peer*, the median of the per-round ratios or differences (each round's runs are seconds apart, while the machine's speed drifts over minutes). The velo router serves on its event loops, one per GOMAXPROCS (here %d), and records hits unless `--no-hits`; `--no-fast-path` serves through net/http with the same forwarding client; `GOMAXPROCS=1` is the default router held to one core and one event loop, like nginx's one worker process. *Proxy CPU time per call* is the forwarding process's user+system time during each run (from /proc; nginx's worker process) divided by the calls wrk made. Hit recording is also measured alone, in process: `BenchmarkHitRecording` records calls from every core at once on one component, the worst case for its shared counters (uncontended it costs about a sixth of that). wrk, the backend, nginx and the routers share the machine's CPUs. Errors (non-2xx, socket) over all runs: %d.\n\n", b.Duration, b.Rounds, runtime.NumCPU(), errs))
	sb.WriteString(t.String())
	sb.WriteString("\nPer round — req/s velo router / nginx: " + pairs(vr.rps, ng.rps, func(v float64) string { return fmt.Sprintf("%.0f", v) }) +
		"; p99: " + pairs(durFloats(vr.p99), durFloats(ng.p99), func(v float64) string { return fmtDur(time.Duration(v)) }) +
		"; hit recording cost: " + strings.Join(mapf(hitCost, func(v float64) string { return fmt.Sprintf("%.1f %%", v) }), ", ") + ".\n")
	sb.WriteString("\nA killed worker: measured by `go test ./cmd/velo -run TestClusterRoundRobinFailover -v` (kill -9 of a worker process under 8 connections of load): the first refused connection marks it down for 1s and the call goes to another worker, so no call sent after the kill fails and none reaches it; calls in flight on it are retried elsewhere when idempotent. Its route disappears when its heartbeat expires (VELO_WORKER_TIMEOUT).\n")
	return sb.String(), nil
}

func createDatabase(ctx context.Context, serverURL, name string) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	return nil
}

// seedStaticRoute registers component "bench" whose live deployment is
// served by one worker: the static backend.
func seedStaticRoute(ctx context.Context, db, backendURL string) error {
	st, err := store.Open(ctx, db)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.CreateComponent(ctx, store.Component{Name: "bench", Runtime: "wasm"}); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	digest := strings.Repeat("0", 64)
	if err := st.PutArtifact(ctx, digest, []byte("x")); err != nil {
		return err
	}
	d, err := st.CreateDeployment(ctx, store.Deployment{Component: "bench", Digest: digest, Runtime: "wasm",
		Manifest: []byte("{}"), Source: "upload", Status: store.StatusReady})
	if err != nil {
		return err
	}
	// Seen far ahead: nothing heartbeats for the static backend.
	if err := st.UpsertWorker(ctx, store.Worker{Name: "static", Addr: backendURL, SeenAt: time.Now().Add(24 * time.Hour)}); err != nil {
		return err
	}
	if err := st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "static", State: store.PlacementReady}); err != nil {
		return err
	}
	return st.Promote(ctx, "bench", d.ID)
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startNginx runs Debian's nginx with one worker process and keep-alive
// connections that last, listening on a free loopback port: location is
// the server's only location block, upstream its http block's upstream
// (may be empty).
func startNginx(ctx context.Context, tmp, name, location, upstream string) (string, func(), int, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, 0, err
	}
	dir := filepath.Join(tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, 0, err
	}
	conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  %[4]s
  server {
    listen %[2]s;
    %[3]s
  }
}
`, dir, addr, location, upstream)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", nil, 0, err
	}
	cmd := exec.Command("nginx", "-c", path, "-g", "daemon off;")
	if err := cmd.Start(); err != nil {
		return "", nil, 0, fmt.Errorf("start nginx: %w", err)
	}
	stop := func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }
	if err := waitOK(ctx, "http://"+addr+"/fn/bench/"); err != nil {
		stop()
		return "", nil, 0, fmt.Errorf("nginx %s: %w", name, err)
	}
	// The one worker process, which does the work (the master's CPU
	// time does not include its children's until they exit).
	pid := cmd.Process.Pid
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	worker, _ := strconv.Atoi(strings.TrimSpace(string(kids)))
	return "http://" + addr, stop, worker, nil
}

func startVeloRouter(ctx context.Context, b *Bench, velo, db, flag, env string) (string, func(), int, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, 0, err
	}
	args := []string{"router", "--addr", addr}
	if flag != "" {
		args = append(args, flag)
	}
	name := "router" + strings.ReplaceAll(flag, "-", "_") + strings.ReplaceAll(env, "=", "_")
	logf, err := os.Create(filepath.Join(b.Tmp, name+".log"))
	if err != nil {
		return "", nil, 0, err
	}
	cmd := exec.Command(velo, args...)
	cmd.Env = append(os.Environ(), "VELO_DATABASE_URL="+db, "VELO_CLUSTER_TOKEN=bench", "VELO_LOG_LEVEL=warn")
	if env != "" {
		cmd.Env = append(cmd.Env, env)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", nil, 0, err
	}
	stop := func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait(); logf.Close() }
	if err := waitOK(ctx, "http://"+addr+"/fn/bench/"); err != nil {
		stop()
		return "", nil, 0, fmt.Errorf("velo router %s: %w (log in %s)", flag, err, logf.Name())
	}
	return "http://" + addr, stop, cmd.Process.Pid, nil
}

// waitOK waits up to 15s for url to answer 200.
func waitOK(ctx context.Context, url string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lookupBench runs the router's BenchmarkLookup and returns its ns/op at
// 10, 1000 and 10000 components.
// routerMicroBench runs the router's in-process benchmarks: a whole
// routed call at 10, 1000 and 10000 components (BenchmarkLookup) and the
// hit recording of one call, from every core at once
// (BenchmarkHitRecording).
func routerMicroBench(ctx context.Context, b *Bench) (lookup string, hitNs float64, err error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^(BenchmarkLookup|BenchmarkHitRecording)$", "-benchtime", "1s", "./router")
	cmd.Dir = b.Root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", 0, fmt.Errorf("go test -bench: %v\n%s", err, out)
	}
	var ns []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != "ns/op" {
			continue
		}
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(f[0], "BenchmarkLookup/"):
			ns = append(ns, fmt.Sprintf("%.0f", v))
		case strings.HasPrefix(f[0], "BenchmarkHitRecording"):
			if i := slices.Index(f, "cpu-ns/op"); i > 0 {
				hitNs, _ = strconv.ParseFloat(f[i-1], 64)
			}
		}
	}
	if len(ns) != 3 || hitNs == 0 {
		return "", 0, fmt.Errorf("router benchmarks: unexpected output\n%s", out)
	}
	return strings.Join(ns, " / ") + " ns per call", hitNs, nil
}

func mapf(vs []float64, f func(float64) string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = f(v)
	}
	return out
}

// pairs formats two series as "a1/b1, a2/b2, …".
func pairs(a, b []float64, f func(float64) string) string {
	var parts []string
	for i := range a {
		parts = append(parts, f(a[i])+"/"+f(b[i]))
	}
	return strings.Join(parts, ", ")
}

func durFloats(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d)
	}
	return out
}
