// Command router measures `velo router` against nginx and a direct
// connection, all forwarding to the same static Go backend, with wrk at 32
// connections, in one run; and the cost of hit recording (a second router
// with --no-hits). It prints a Markdown table.
//
//	go run ./bench/router [-velo PATH] [-db postgres://…] [-rounds 3] [-d 10s]
//
// Without -db it starts a throwaway Postgres (Debian's postgresql). The
// backend runs in this process; nginx, the routers and wrk are processes of
// their own. Everything it starts it stops, and its files are removed.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/router:", err)
		os.Exit(1)
	}
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	errs     int64
}

func run() error {
	var (
		velo   = flag.String("velo", "", "velo binary (default: build ./cmd/velo)")
		db     = flag.String("db", os.Getenv("VELO_DATABASE_URL"), "Postgres URL (default: a throwaway server)")
		rounds = flag.Int("rounds", 3, "rounds of each target")
		dur    = flag.Duration("d", 10*time.Second, "wrk duration per measurement")
		conns  = flag.Int("c", 32, "connections")
	)
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tmp, err := os.MkdirTemp("", "velo-bench-router-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	if *velo == "" {
		*velo = filepath.Join(tmp, "velo")
		build := exec.Command("go", "build", "-o", *velo, "./cmd/velo")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build velo: %v\n%s", err, out)
		}
	}
	if *db == "" {
		u, stop, err := pgtest.Throwaway()
		if err != nil {
			return err
		}
		defer stop()
		*db = strings.Replace(u, "/postgres?", "/velo_bench?", 1)
		if err := createDB(ctx, u, "velo_bench"); err != nil {
			return err
		}
	}

	// The static backend: 13 bytes, as small as it gets.
	backendLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	body := []byte("Hello, world\n")
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Write(body)
	})}
	go backend.Serve(backendLn)
	defer backend.Close()
	backendURL := "http://" + backendLn.Addr().String()

	if err := seed(ctx, *db, backendURL); err != nil {
		return err
	}
	nginxURL, stopNginx, err := startNginx(tmp, backendLn.Addr().String())
	if err != nil {
		return err
	}
	defer stopNginx()
	routerURL, stopRouter, err := startRouter(*velo, *db, tmp, "router")
	if err != nil {
		return err
	}
	defer stopRouter()
	noHitsURL, stopNoHits, err := startRouter(*velo, *db, tmp, "router-nohits", "--no-hits")
	if err != nil {
		return err
	}
	defer stopNoHits()
	slowURL, stopSlow, err := startRouter(*velo, *db, tmp, "router-nethttp", "--no-fast-path")
	if err != nil {
		return err
	}
	defer stopSlow()

	targets := []struct{ name, url string }{
		{"direct", backendURL + "/fn/bench/"},
		{"nginx", nginxURL + "/fn/bench/"},
		{"velo router", routerURL + "/fn/bench/"},
		{"velo router --no-hits", noHitsURL + "/fn/bench/"},
		{"velo router --no-fast-path", slowURL + "/fn/bench/"},
	}
	for _, t := range targets { // warm up and check each answers
		if _, err := wrk(ctx, t.url, *conns, 2*time.Second); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	res := map[string][]result{}
	for r := 0; r < *rounds; r++ {
		for _, t := range targets {
			x, err := wrk(ctx, t.url, *conns, *dur)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			res[t.name] = append(res[t.name], x)
			fmt.Fprintf(os.Stderr, "round %d %-22s %9.0f req/s p50 %v p99 %v errors %d\n", r+1, t.name, x.rps, x.p50, x.p99, x.errs)
		}
	}

	fmt.Printf("Router: %d connections, wrk -t2, %v per measurement, %d rounds interleaved, %d CPUs, %s. Backend: Go net/http, 13-byte body. nginx: 1 worker process, keepalive 64 upstream.\n\n",
		*conns, *dur, *rounds, runtime.NumCPU(), runtime.Version())
	fmt.Println("| target | req/s (median) | × nginx | p50 | p99 | errors |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	ng := median(res["nginx"]).rps
	for _, t := range targets {
		m := median(res[t.name])
		var errs int64
		for _, x := range res[t.name] {
			errs += x.errs
		}
		fmt.Printf("| %s | %.0f | %.2f | %v | %v | %d |\n", t.name, m.rps, m.rps/ng, m.p50, m.p99, errs)
	}
	on, off := median(res["velo router"]).rps, median(res["velo router --no-hits"]).rps
	fmt.Printf("\nHit recording cost: %.1f %% of throughput (%.0f req/s with, %.0f without).\n", 100*(off-on)/off, on, off)
	return nil
}

// median returns the round with the median throughput (its latencies too).
func median(rs []result) result {
	s := append([]result(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].rps < s[j].rps })
	return s[len(s)/2]
}

func createDB(ctx context.Context, serverURL, name string) error {
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

// seed registers a component "bench" whose live deployment is served by one
// worker, the static backend.
func seed(ctx context.Context, db, backendURL string) error {
	st, err := store.Open(ctx, db)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.CreateComponent(ctx, store.Component{Name: "bench", Runtime: "wasm"}); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	if err := st.PutArtifact(ctx, strings.Repeat("0", 64), []byte("x")); err != nil {
		return err
	}
	d, err := st.CreateDeployment(ctx, store.Deployment{Component: "bench", Digest: strings.Repeat("0", 64), Runtime: "wasm",
		Manifest: []byte("{}"), Source: "upload", Status: store.StatusReady})
	if err != nil {
		return err
	}
	// The worker's heartbeat is set far ahead: nothing heartbeats for
	// the static backend.
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

func startNginx(tmp, backend string) (string, func(), error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream backend { server %[2]s; keepalive 64; }
  server {
    listen %[3]s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`, dir, backend, addr)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	cmd := exec.Command("nginx", "-c", path, "-g", "daemon off;")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start nginx: %w", err)
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	if err := waitHTTP("http://" + addr + "/"); err != nil {
		stop()
		return "", nil, fmt.Errorf("nginx: %w", err)
	}
	return "http://" + addr, stop, nil
}

func startRouter(velo, db, tmp, name string, flags ...string) (string, func(), error) {
	addr, err := freeAddr()
	if err != nil {
		return "", nil, err
	}
	args := append([]string{"router", "--addr", addr}, flags...)
	cmd := exec.Command(velo, args...)
	cmd.Env = append(os.Environ(), "VELO_DATABASE_URL="+db, "VELO_CLUSTER_TOKEN=bench", "VELO_LOG_LEVEL=warn")
	logf, err := os.Create(filepath.Join(tmp, name+".log"))
	if err != nil {
		return "", nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		logf.Close()
	}
	if err := waitHTTP("http://" + addr + "/fn/bench/"); err != nil {
		stop()
		log, _ := os.ReadFile(logf.Name())
		return "", nil, fmt.Errorf("%s: %w\n%s", name, err, log)
	}
	return "http://" + addr, stop, nil
}

// waitHTTP waits up to 10s for url to answer 200.
func waitHTTP(url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %s", res.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func wrk(ctx context.Context, url string, conns int, d time.Duration) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "wrk", "-t2", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d/time.Second))+"s",
		"--latency", url).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	var r result
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, _ = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			r.p50 = wrkDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99 = wrkDuration(f[1])
		case len(f) == 5 && f[0] == "Non-2xx":
			n, _ := strconv.ParseInt(f[4], 10, 64)
			r.errs += n
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.errs += n
			}
		}
	}
	if r.rps == 0 {
		return r, fmt.Errorf("wrk: no requests completed\n%s", out)
	}
	return r, nil
}

func wrkDuration(s string) time.Duration {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0
			}
			return time.Duration(f * float64(u.unit))
		}
	}
	return 0
}
