package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/clustertest"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/testsupport"
)

// The cluster tests run Velo's roles as separate OS processes of the velo
// binary, on loopback, against a real Postgres: what users run.

// veloBinary is the velo binary the cluster tests run, built once per
// test process (clustertest.Binary; TestMain's clustertest.Run removes it).
func veloBinary(t testing.TB) string { return clustertest.Binary(t) }

// newCluster is a cluster (clustertest.New) whose roles also take the
// metrics token the tests read /metrics with.
func newCluster(t *testing.T, env ...string) *clustertest.Cluster {
	t.Helper()
	return clustertest.New(t, append([]string{"VELO_METRICS_TOKEN=" + testMetricsToken}, env...)...)
}

// helloArchive packs the hello-wasm example with the given greeting.
func helloArchive(t testing.TB, greeting string) []byte {
	t.Helper()
	wasm := helloWasm(t)
	return archivetest.TarGz(t, map[string]string{
		"hello.wasm": string(wasm),
		"velo.toml":  fmt.Sprintf("name = \"hello\"\nruntime = \"wasm\"\nmodule = \"hello.wasm\"\n[env]\nGREETING = %q\n", greeting),
	})
}

// deployHello uploads the hello-wasm example with greeting as component
// hello through deploymgr dm and waits until it is live.
func deployHello(c *clustertest.Cluster, dm *clustertest.Proc, greeting string) int64 {
	c.T.Helper()
	return c.DeployArchive(dm, "hello", helloArchive(c.T, greeting))
}

// readyWorkers returns the workers with a ready placement of hello's live
// deployment, per the API (none when it cannot be read).
func readyWorkers(c *clustertest.Cluster, dm *clustertest.Proc) []string {
	ws, _ := c.ReadyOn(dm, "hello")
	return ws
}

// retired waits until deployment id of hello has no placement left.
func retired(c *clustertest.Cluster, dm *clustertest.Proc, id int64) {
	c.T.Helper()
	testsupport.Eventually(c.T, 20*time.Second, fmt.Sprintf("the placements of deployment %d to be retired", id), func() bool {
		comp, err := c.Client(dm).Component(c.Ctx, "hello")
		return err == nil && !slices.ContainsFunc(comp.Instances, func(in api.Instance) bool { return in.Deployment == id })
	})
}

// call is one request's outcome.
type call struct {
	start, end time.Time
	status     int
	worker     string
	deployment string
	body       string
	err        error
}

// loadClient keeps its own connections so that each load run is separate.
func loadClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
}

// load sends GETs to url from conc goroutines until stop is closed, at most
// max requests and at most limit long (every load loop is bounded), and
// returns every outcome.
func load(url string, conc, max int, limit time.Duration, stop <-chan struct{}) []call {
	return loadCounting(url, conc, max, limit, stop, new(atomic.Int64))
}

// loadCounting is load that counts the answered calls in answered as they
// come, for a test to wait until traffic flows.
func loadCounting(url string, conc, max int, limit time.Duration, stop <-chan struct{}, answered *atomic.Int64) []call {
	hc := loadClient()
	defer hc.CloseIdleConnections()
	var (
		mu    sync.Mutex
		calls []call
		wg    sync.WaitGroup
		sent  int
	)
	deadline := time.Now().Add(limit)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				if sent >= max || time.Now().After(deadline) {
					mu.Unlock()
					return
				}
				sent++
				mu.Unlock()
				cl := call{start: time.Now()}
				res, err := hc.Get(url)
				if err == nil {
					b, rerr := io.ReadAll(res.Body)
					res.Body.Close()
					cl.status, cl.body, cl.err = res.StatusCode, string(b), rerr
					cl.worker = res.Header.Get("X-Velo-Worker")
					cl.deployment = res.Header.Get("X-Velo-Deployment")
				} else {
					cl.err = err
				}
				cl.end = time.Now()
				mu.Lock()
				calls = append(calls, cl)
				mu.Unlock()
				answered.Add(1)
			}
		}()
	}
	wg.Wait()
	return calls
}

func failed(calls []call) []call {
	var out []call
	for _, c := range calls {
		if c.err != nil || c.status != 200 {
			out = append(out, c)
		}
	}
	return out
}

func describeCalls(calls []call) string {
	var b strings.Builder
	for i, c := range calls {
		if i == 10 {
			fmt.Fprintf(&b, "… and %d more\n", len(calls)-10)
			break
		}
		fmt.Fprintf(&b, "%s status=%d worker=%q err=%v body=%q\n", c.start.Format("15:04:05.000"), c.status, c.worker, c.err, c.body)
	}
	return b.String()
}

// TestClusterRoundRobinFailover deploys through deploymgr, calls through the
// router and sees both workers answer in turn; then kills one worker with
// SIGKILL under load: only requests in flight on it may fail, it gets no
// traffic after the first second, and once its heartbeat expires its
// placement moves to the spare worker, which starts serving.
func TestClusterRoundRobinFailover(t *testing.T) {
	c := newCluster(t, "VELO_WORKER_TIMEOUT=3s", "VELO_WASM_REPLICAS=2")
	dm := c.Start("deploymgr", "deploymgr")
	wa := c.Start("worker-a", "worker", "--name", "a", "--data", t.TempDir())
	c.Start("worker-b", "worker", "--name", "b", "--data", t.TempDir())
	rt := c.Start("router", "router")

	id := deployHello(c, dm, "hi")
	testsupport.Eventually(c.T, 20*time.Second, "placements ready on a and b", func() bool {
		return strings.Join(readyWorkers(c, dm), ",") == "a,b"
	})
	// Placed on two workers (VELO_WASM_REPLICAS=2) and routed round-robin.
	url := rt.URL + "/fn/hello/x"
	testsupport.Eventually(c.T, 10*time.Second, "router serving from both workers", func() bool {
		seen := map[string]bool{}
		for _, cl := range load(url, 1, 4, 5*time.Second, nil) {
			if cl.status == 200 {
				seen[cl.worker] = true
			}
		}
		return seen["a"] && seen["b"]
	})
	calls := load(url, 1, 10, 5*time.Second, nil)
	for i, cl := range calls {
		if cl.status != 200 || !strings.HasPrefix(cl.body, "hi from Velo!") || cl.deployment != strconv.FormatInt(id, 10) {
			t.Fatalf("call %d: %d %q deployment %s", i, cl.status, cl.body, cl.deployment)
		}
		if i > 0 && cl.worker == calls[i-1].worker {
			t.Fatalf("X-Velo-Worker did not alternate: %s", describeCalls(calls))
		}
	}

	// A spare worker: not placed (two replicas), ready to take over.
	c.Start("worker-c", "worker", "--name", "c", "--data", t.TempDir())

	const conc = 8
	stop := make(chan struct{})
	done := make(chan []call)
	go func() { done <- load(url, conc, 200000, 20*time.Second, stop) }()
	time.Sleep(time.Second)
	wa.Kill()
	killed := time.Now() // the process is gone: whatever starts now is new
	// Placement moves off a once its heartbeat is older than 3s.
	testsupport.Eventually(c.T, 20*time.Second, "placement moved from a to c", func() bool {
		return strings.Join(readyWorkers(c, dm), ",") == "b,c"
	})
	moved := time.Now()
	testsupport.Eventually(c.T, 10*time.Second, "traffic on c", func() bool {
		for _, cl := range load(url, 1, 4, 5*time.Second, nil) {
			if cl.worker == "c" {
				return true
			}
		}
		return false
	})
	time.Sleep(500 * time.Millisecond)
	close(stop)
	calls = <-done

	var lastA time.Time
	var afterKill, fromC int
	var slowest time.Duration
	for _, cl := range calls {
		if cl.start.After(killed) && cl.end.Sub(cl.start) > slowest {
			slowest = cl.end.Sub(cl.start)
		}
		if cl.worker == "a" && cl.end.After(lastA) {
			lastA = cl.end
		}
		if cl.start.After(killed) {
			afterKill++
		}
		if cl.worker == "c" {
			fromC++
		}
	}
	bad := failed(calls)
	if len(bad) > conc {
		t.Fatalf("%d of %d requests failed around the kill, more than the %d that can be in flight:\n%s", len(bad), len(calls), conc, describeCalls(bad))
	}
	for _, cl := range bad {
		if cl.start.After(killed) {
			t.Fatalf("a request sent after the kill failed:\n%s", describeCalls([]call{cl}))
		}
	}
	if afterKill == 0 {
		t.Fatal("no request was sent after the kill")
	}
	t.Logf("kill -9 under load (%d connections): %d requests, %d failed (in flight), %d sent after the kill all served (slowest %v); last answer from the dead worker %v after the kill; placement moved after %v; %d served by the new worker",
		conc, len(calls), len(bad), afterKill, slowest.Round(time.Millisecond), lastA.Sub(killed).Round(time.Millisecond), moved.Sub(killed).Round(100*time.Millisecond), fromC)
}

// TestClusterPostgresRestart restarts Postgres under load: the router keeps
// serving from its table, and the hits it counted meanwhile reach the
// store once Postgres is back, none lost. Sequential: the server it stops
// is the one every other test of the package uses.
func TestClusterPostgresRestart(t *testing.T) {
	c := newCluster(t)
	dm := c.Start("deploymgr", "deploymgr")
	c.Start("worker-a", "worker", "--name", "a", "--data", t.TempDir())
	rt := c.Start("router", "router")
	deployHello(c, dm, "hi")
	url := rt.URL + "/fn/hello/"
	testsupport.Eventually(c.T, 10*time.Second, "router serving", func() bool {
		cl := load(url, 1, 1, 5*time.Second, nil)
		return len(cl) == 1 && cl[0].status == 200
	})
	// Let the warm-up hits reach the store, then count from there.
	testsupport.Eventually(c.T, 10*time.Second, "warm-up hits flushed", func() bool {
		st, err := c.Client(dm).Stats(c.Ctx, "hello", "1h")
		return err == nil && st.Hits > 0
	})
	time.Sleep(1500 * time.Millisecond)
	before, err := c.Client(dm).Stats(c.Ctx, "hello", "1h")
	if err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	done := make(chan []call)
	go func() { done <- load(url, 4, 100000, 30*time.Second, stop) }()
	time.Sleep(500 * time.Millisecond)
	pgtest.Stop(t)
	down := time.Now()
	time.Sleep(3 * time.Second) // more than the 1s hit flush: writes fail meanwhile
	pgtest.Start(t)
	up := time.Now()
	time.Sleep(500 * time.Millisecond)
	close(stop)
	calls := <-done
	if bad := failed(calls); len(bad) > 0 {
		t.Fatalf("%d of %d requests failed across the Postgres restart:\n%s", len(bad), len(calls), describeCalls(bad))
	}
	var duringOutage int
	for _, cl := range calls {
		if cl.start.After(down) && cl.end.Before(up) {
			duringOutage++
		}
	}
	if duringOutage == 0 {
		t.Fatal("no request completed while Postgres was down")
	}
	want := before.Hits + int64(len(calls))
	var got int64
	testsupport.Eventually(c.T, 20*time.Second, fmt.Sprintf("%d hits in stats", want), func() bool {
		st, err := c.Client(dm).Stats(c.Ctx, "hello", "1h")
		if err != nil {
			return false
		}
		got = st.Hits
		return got >= want
	})
	time.Sleep(1500 * time.Millisecond) // one more flush: nothing counted twice
	if st, err := c.Client(dm).Stats(c.Ctx, "hello", "1h"); err != nil || st.Hits != want {
		t.Fatalf("stats after the restart: %d hits (err %v), want exactly %d", st.Hits, err, want)
	}
	t.Logf("Postgres down %v under load: %d requests, %d during the outage, none failed; all %d hits recorded", up.Sub(down).Round(100*time.Millisecond), len(calls), duringOutage, len(calls))
}

// TestClusterRedeployRollback redeploys and rolls back under load across
// two workers: no request fails, and the answers switch versions.
func TestClusterRedeployRollback(t *testing.T) {
	c := newCluster(t)
	dm := c.Start("deploymgr", "deploymgr")
	c.Start("worker-a", "worker", "--name", "a", "--data", t.TempDir())
	c.Start("worker-b", "worker", "--name", "b", "--data", t.TempDir())
	rt := c.Start("router", "router")
	v1 := deployHello(c, dm, "hi")
	testsupport.Eventually(c.T, 20*time.Second, "v1 ready on a and b", func() bool { return len(readyWorkers(c, dm)) == 2 })
	url := rt.URL + "/fn/hello/"
	testsupport.Eventually(c.T, 10*time.Second, "router serving v1", func() bool {
		cl := load(url, 1, 1, 5*time.Second, nil)
		return len(cl) == 1 && cl[0].status == 200
	})

	// Built before the traffic starts, so that the load's time bound
	// covers the redeploy and not the module's compilation.
	v2Archive := helloArchive(c.T, "v2")
	stop := make(chan struct{})
	done := make(chan []call)
	var answered atomic.Int64
	go func() { done <- loadCounting(url, 8, 200000, 60*time.Second, stop, &answered) }()
	testsupport.Eventually(c.T, 10*time.Second, "traffic on v1", func() bool { return answered.Load() >= 50 })
	v2 := c.DeployArchive(dm, "hello", v2Archive)
	testsupport.Eventually(c.T, 10*time.Second, "router serving v2", func() bool {
		cl := load(url, 1, 1, 5*time.Second, nil)
		return len(cl) == 1 && strings.HasPrefix(cl[0].body, "v2 from Velo!")
	})
	// Past the grace period v1's placements are retired: the rollback
	// places it again.
	retired(c, dm, v1)
	if _, err := c.Client(dm).Rollback(c.Ctx, "hello", 0); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	c.WaitLive(dm, "hello", v1)
	testsupport.Eventually(c.T, 10*time.Second, "router serving v1 again", func() bool {
		cl := load(url, 1, 1, 5*time.Second, nil)
		return len(cl) == 1 && strings.HasPrefix(cl[0].body, "hi from Velo!")
	})
	retired(c, dm, v2) // the load runs on while v2's placements go
	close(stop)
	calls := <-done
	if bad := failed(calls); len(bad) > 0 {
		t.Fatalf("%d of %d requests failed during redeploy and rollback:\n%s", len(bad), len(calls), describeCalls(bad))
	}
	byDep := map[string]int{}
	for _, cl := range calls {
		byDep[cl.deployment]++
	}
	if byDep[strconv.FormatInt(v1, 10)] == 0 || byDep[strconv.FormatInt(v2, 10)] == 0 {
		t.Fatalf("answers by deployment: %v; want both %d and %d", byDep, v1, v2)
	}
	t.Logf("redeploy + rollback under load (8 connections): %d requests, 0 failed; by deployment %v", len(calls), byDep)
}

// TestClusterTwoDeploymgrs runs two deploymgrs at once: both serve the API,
// exactly one schedules, and the other takes over when it is killed.
func TestClusterTwoDeploymgrs(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	dm1 := c.Start("deploymgr-1", "deploymgr")
	dm2 := c.Start("deploymgr-2", "deploymgr")
	c.Start("worker-a", "worker", "--name", "a", "--data", t.TempDir())
	rt := c.Start("router", "router")

	var leader, standby *clustertest.Proc
	testsupport.Eventually(c.T, 10*time.Second, "exactly one leader", func() bool {
		l1, l2 := leaderGauge(dm1), leaderGauge(dm2)
		switch {
		case l1 == 1 && l2 == 0:
			leader, standby = dm1, dm2
		case l1 == 0 && l2 == 1:
			leader, standby = dm2, dm1
		default:
			return false
		}
		return true
	})
	// Through the standby's API: the leader schedules it.
	v1 := deployHello(c, standby, "hi")
	// The processes' output comes through pipes: give the leader's log line
	// a moment to arrive before judging who scheduled.
	testsupport.Eventually(c.T, 5*time.Second, "the leader's log of the deployment", func() bool {
		return strings.Contains(leader.Out.String(), "deployment live")
	})
	if !strings.Contains(leader.Out.String(), "deployment live") || strings.Contains(standby.Out.String(), "deployment live") {
		t.Fatalf("the standby scheduled, or the leader did not:\nleader:\n%s\nstandby:\n%s", leader.Tail(20), standby.Tail(20))
	}
	// Leadership held for a while stays put.
	time.Sleep(2 * time.Second)
	if leaderGauge(leader) != 1 || leaderGauge(standby) != 0 {
		t.Fatal("leadership changed without a failure")
	}

	killed := time.Now()
	leader.Kill()
	testsupport.Eventually(c.T, 15*time.Second, "standby takes over", func() bool { return leaderGauge(standby) == 1 })
	took := time.Since(killed)
	v2 := deployHello(c, standby, "v2")
	url := rt.URL + "/fn/hello/"
	testsupport.Eventually(c.T, 10*time.Second, "v2 served", func() bool {
		cl := load(url, 1, 1, 5*time.Second, nil)
		return len(cl) == 1 && cl[0].deployment == strconv.FormatInt(v2, 10)
	})
	t.Logf("two deploymgrs: one leader; after kill -9 of the leader the standby led within %v and deployed %d (after %d)", took.Round(100*time.Millisecond), v2, v1)
}

// testMetricsToken is what the cluster's Prometheus would send to /metrics.
const testMetricsToken = "metrics-test-token"

// leaderGauge reads velo_deploymgr_leader from a deploymgr's /metrics; -1
// when it cannot.
func leaderGauge(p *clustertest.Proc) int {
	req, err := http.NewRequest(http.MethodGet, p.URL+"/metrics", nil)
	if err != nil {
		return -1
	}
	req.Header.Set("Authorization", "Bearer "+testMetricsToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "velo_deploymgr_leader "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// TestRoleConfigErrors checks each role names what is missing.
func TestRoleConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"router"}, map[string]string{"VELO_CLUSTER_TOKEN": "x"}, "VELO_DATABASE_URL is not set"},
		{[]string{"router"}, map[string]string{"VELO_DATABASE_URL": "postgres://x/y"}, "VELO_CLUSTER_TOKEN is not set"},
		{[]string{"deploymgr"}, nil, "VELO_DATABASE_URL is not set"},
		{[]string{"deploymgr"}, map[string]string{"VELO_DATABASE_URL": "sqlite:///tmp/x.db"}, "must be a postgres:// URL"},
		{[]string{"webui", "--addr", "nowhere"}, map[string]string{"VELO_DATABASE_URL": "postgres://x/y"}, `--addr "nowhere"`},
		{[]string{"worker", "--addr", "0.0.0.0:8082", "--name", "w"}, map[string]string{"VELO_DATABASE_URL": "postgres://x/y", "VELO_CLUSTER_TOKEN": "x"}, "--advertise is required"},
		{[]string{"worker", "--advertise", "ftp://x"}, map[string]string{"VELO_DATABASE_URL": "postgres://x/y", "VELO_CLUSTER_TOKEN": "x"}, `--advertise "ftp://x"`},
		{[]string{"deploymgr"}, map[string]string{"VELO_DATABASE_URL": "postgres://x/y", "VELO_WORKER_TIMEOUT": "soon"}, "VELO_WORKER_TIMEOUT"},
	} {
		for _, k := range []string{"VELO_DATABASE_URL", "VELO_CLUSTER_TOKEN", "VELO_WORKER_TIMEOUT", "VELO_ADDR"} {
			t.Setenv(k, tc.env[k])
		}
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut)
		if code == 0 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("velo %v: exit %d, stderr %q; want failure mentioning %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}
