package clustertest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/testsupport"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

// call is one request's outcome.
type call struct {
	at         time.Time
	target     string // router/component
	status     int
	deployment string
	body       string
	err        error
}

// TestPostgresOutage stops Postgres for longer than the worker timeout
// while two routers are called for two components, each placed on one of
// two workers: during the outage the routers serve from their last table,
// and once Postgres is back no healthy worker looks dead (no "no healthy
// instance" 503, no placement moved), although for a while after it the
// workers' last heartbeats are older than the timeout, and one of them
// stalls across the restart while the routers reread their tables.
func TestPostgresOutage(t *testing.T) {
	const timeout = 8 * time.Second // VELO_WORKER_TIMEOUT, under the outage
	c := New(t, "VELO_WORKER_TIMEOUT="+timeout.String(), "VELO_WASM_REPLICAS=1")
	dm := c.Start("deploymgr", "deploymgr")
	c.Start("worker-a", "worker", "--name", "a", "--data", t.TempDir())
	wb := c.Start("worker-b", "worker", "--name", "b", "--data", t.TempDir())
	routers := []*Proc{c.Start("router-1", "router"), c.Start("router-2", "router")}

	// One component per worker: with a worker left out of a table, its
	// component has no instance to go to.
	live := map[string]string{}
	placed := map[string][]string{}
	for _, name := range []string{"one", "two"} {
		live[name] = strconv.FormatInt(c.Deploy(dm, name, name), 10)
	}
	testsupport.Eventually(t, 30*time.Second, "one and two ready, one on each worker", func() bool {
		for name := range live {
			ws, err := c.ReadyOn(dm, name)
			if err != nil || len(ws) != 1 {
				return false
			}
			placed[name] = ws
		}
		return placed["one"][0] != placed["two"][0]
	})

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer hc.CloseIdleConnections()
	get := func(rt *Proc, name string) call {
		cl := call{at: time.Now(), target: rt.Name + "/" + name}
		res, err := hc.Get(rt.URL + "/fn/" + name + "/x")
		if err != nil {
			cl.err = err
			return cl
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		cl.status, cl.body, cl.err, cl.deployment = res.StatusCode, string(b), err, res.Header.Get("X-Velo-Deployment")
		return cl
	}
	ok := func(cl call) bool {
		name := cl.target[strings.Index(cl.target, "/")+1:]
		return cl.err == nil && cl.status == http.StatusOK && cl.deployment == live[name]
	}
	for _, rt := range routers {
		for name := range live {
			testsupport.Eventually(t, 30*time.Second, rt.Name+" serving "+name, func() bool { return ok(get(rt, name)) })
		}
	}

	// Calls go on, one at a time per router and component, before, during
	// and after the outage.
	var (
		mu    sync.Mutex
		calls []call
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for _, rt := range routers {
		for name := range live {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(20 * time.Millisecond):
					}
					cl := get(rt, name)
					mu.Lock()
					calls = append(calls, cl)
					mu.Unlock()
				}
			})
		}
	}
	stopCalls := func() []call {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(calls)
	}
	defer stopCalls()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(calls) }
	testsupport.Eventually(t, 30*time.Second, "calls flowing", func() bool { return count() >= 40 })

	pgtest.Stop(t)
	down := time.Now()
	restarted := false
	defer func() {
		if !restarted {
			pgtest.Start(t) // the next test's database lives there too
		}
	}()
	time.Sleep(10 * time.Second) // more than the worker timeout: every heartbeat expires
	// Worker b stalls across the restart (a loaded machine): a beats
	// again first, and the routers reread their whole table while b's
	// last beat is as old as the outage. b's calls wait meanwhile.
	if err := wb.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stalled := true
	resume := func() {
		if stalled {
			stalled = false
			_ = wb.Signal(syscall.SIGCONT)
		}
	}
	defer resume()
	pgtest.Start(t)
	restarted = true
	up := time.Now()
	db, err := pgx.Connect(c.Ctx, c.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	testsupport.Eventually(t, 30*time.Second, "worker a beating again", func() bool {
		var seen int64
		err := db.QueryRow(c.Ctx, `SELECT seen_at FROM workers WHERE name = 'a'`).Scan(&seen)
		return err == nil && time.UnixMicro(seen).After(up)
	})
	// Cut every LISTEN connection: each router reconnects and rereads its
	// whole table now (a resync), with a fresh and b stale.
	var cut int
	if err := db.QueryRow(c.Ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE pid <> pg_backend_pid() AND datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&cut); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "the listeners back", func() bool {
		var n int
		err := db.QueryRow(c.Ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE pid <> pg_backend_pid() AND datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&n)
		return err == nil && n >= cut
	})
	time.Sleep(time.Second) // their resync reads
	resume()
	// Long enough after the store's return for every worker to beat
	// again, the deploymgr to judge workers again (a worker timeout after
	// its reads work) and each router to reread its whole table (every
	// 10s): what a late look at stale heartbeats would do is done by then.
	time.Sleep(12 * time.Second)
	all := stopCalls()

	var bad []string
	var during, after int
	for _, cl := range all {
		if cl.at.After(down) && cl.at.Before(up) {
			during++
		}
		if cl.at.After(up) {
			after++
		}
		if !ok(cl) {
			bad = append(bad, fmt.Sprintf("%s %+.1fs after Postgres stopped: status %d deployment %q err %v body %q",
				cl.target, cl.at.Sub(down).Seconds(), cl.status, cl.deployment, cl.err, strings.TrimSpace(cl.body)))
		}
	}
	if during == 0 || after == 0 {
		t.Fatalf("calls: %d during the outage, %d after it; want some of each", during, after)
	}
	if n := len(bad); n > 0 {
		if n > 20 {
			bad = append(bad[:20], fmt.Sprintf("… and %d more", n-20))
		}
		t.Fatalf("%d of %d calls not served by the live deployment (Postgres down %v, up again at %+.1fs):\n%s",
			n, len(all), up.Sub(down).Round(100*time.Millisecond), up.Sub(down).Seconds(), strings.Join(bad, "\n"))
	}
	for name, want := range placed {
		got, err := c.ReadyOn(dm, name)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: ready on %v after the outage (err %v), was %v: a healthy worker lost its placement", name, got, err, want)
		}
	}
	t.Logf("Postgres down %v: %d calls, %d during the outage and %d in the 12s after, all served by the live deployment on its worker",
		up.Sub(down).Round(100*time.Millisecond), len(all), during, after)
}
