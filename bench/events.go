package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
)

// eventsCalls is how many async calls one round sends; eventsConns how
// many clients send them at once.
const (
	eventsCalls = 6000
	// eventsCallsSQLite is a round's calls on SQLite, whose single
	// connection carries River and Velo's writes one at a time.
	eventsCallsSQLite = 1000
	eventsConns       = 32
	// eventsConcurrency is the bench component's [events] concurrency.
	eventsConcurrency = 64
	// eventsOpenShare is the share of the measured capacity offered in
	// the open-loop latency run held to the target, for eventsOpenFor;
	// eventsOpenShares are all the shares run (the lower ones as extra
	// information on a shared machine).
	eventsOpenShare = 0.5
	eventsOpenFor   = 5 * time.Second
	// riverBulkBatch is the InsertMany batch of River's bulk peer (as
	// `river bench` inserts).
	riverBulkBatch = 1000
)

// eventsOpenShares are the shares of the capacity offered in the open
// loops, eventsOpenShare first.
var eventsOpenShares = []float64{eventsOpenShare, 0.25, 0.10}

// openRun is one open loop: each call's time from its due send to its
// 202, and River's Inserts at the same rate (Postgres only).
type openRun struct {
	share, rate float64
	velo, river []time.Duration
}

// eventsResult is what the rounds on one engine measured.
type eventsResult struct {
	rates    []float64       // async calls completed per second, per round
	lat      []time.Duration // closed loop: each call's time to its 202
	cpu      []float64       // µs of CPU per completed call (bench process + Postgres), per round
	pgShare  []float64       // Postgres's share of cpu, per round
	river    []float64       // River's empty jobs per second, one Insert each
	riverLat []time.Duration // each of those Inserts' time
	riverCPU []float64       // µs of CPU per empty job
	bulk     []float64       // River's empty jobs per second, InsertMany batches
	open     []openRun       // the open loops, eventsOpenShares in order
	lateness []time.Duration
}

// eventsSection measures the event engine: async calls completed per
// second end to end (the first POST with Prefer: respond-async → the last
// call succeeded) on Postgres and on SQLite, River's own insert+work rate
// for an empty job on the same database in the same run (the cost Velo
// adds), the enqueue latency (request in → 202 out) both at saturation
// and at a fixed offered rate, and the lateness of schedule ticks (due →
// the call started).
func eventsSection(ctx context.Context, b *Bench) (string, error) {
	server, stopPG, err := pgtest.Throwaway()
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	defer stopPG()
	db := strings.Replace(server, "/postgres?", "/velo_events?", 1)
	if err := createDatabase(ctx, server, "velo_events"); err != nil {
		return "", err
	}
	module, err := os.ReadFile(filepath.Join(b.Root, "bench", "testdata", "hello.wasm"))
	if err != nil {
		return "", err
	}
	t := b.newTable("")
	for _, engine := range []string{"postgres", "sqlite"} {
		url := ""
		if engine == "postgres" {
			url = db
		}
		log := slog.New(slog.NewTextHandler(b.log, &slog.HandlerOptions{Level: slog.LevelWarn}))
		n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: filepath.Join(b.Tmp, "events-"+engine), DatabaseURL: url, Logger: log})
		if err != nil {
			return "", err
		}
		nctx, cancel := context.WithCancel(ctx)
		go func() { _ = n.Wait(nctx) }()
		r, err := eventsRounds(nctx, b, n, engine, module)
		cancel()
		n.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", engine, err)
		}
		eventsRows(t, engine, r)
	}
	var sb strings.Builder
	sb.WriteString("## events — async calls, River beside them, schedule ticks\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	fmt.Fprintf(&sb, "An all-in-one Velo in the bench process (`node.Start`, as `velo up`), once on a throwaway Postgres and once on its embedded SQLite, with the wasm section's C module `bench/testdata/hello.wasm` deployed with `[events] concurrency = %d`.\n\n", eventsConcurrency)
	fmt.Fprintf(&sb, "- **Completed per second** (closed loop, saturated): each round sends %d (SQLite: %d) `POST /fn/NAME/bench` with `Prefer: respond-async` from %d clients over keep-alive connections as fast as they are answered, and times from the first request to the last call succeeded (the store's count of completed jobs in the component's queue). *CPU per call* is the CPU time of the bench process (Velo, its River client and the load-generating clients) plus the Postgres server's (postmaster and every backend), over the round, divided by the calls.\n", eventsCalls, eventsCallsSQLite, eventsConns)
	fmt.Fprintf(&sb, "- **River's own rate**, in the same run, on the same database and the same pool (Postgres only: River's SQLite driver works one row at a time), with the River configuration Velo's executor uses (`FetchCooldown` 2 ms, `FetchPollInterval` 1 s beside LISTEN/NOTIFY, the batch completer): a plain River client inserting %d empty jobs from %d goroutines, one `Insert` each (the peer of the ratio: Velo group-commits the enqueues that arrive together into one `InsertManyTx`), working them with %d workers; and beside it the same jobs inserted by `InsertMany` in batches of %d, as `river bench` does (River's best case: no request, no call, no answer recorded).\n", eventsCalls, eventsConns, eventsConcurrency, riverBulkBatch)
	fmt.Fprintf(&sb, "- **Enqueue latency** (request in → 202 out, so after the call's row committed): at saturation it is what the %d closed-loop clients wait, mostly queueing (by Little's law about %d ÷ the rate); the latency figure held to the target is the open loop after it: calls sent at a fixed rate, %.0f %% of the capacity just measured (the rate is in the row), for %v, each timed from the moment it was due to be sent (so a stall counts against Velo, not hidden by a waiting client); the same at 25 %% and 10 %% of the capacity after it, as extra information, each with River's Insert at that rate beside it.\n", eventsConns, eventsConns, eventsOpenShare*100, eventsOpenFor)
	sb.WriteString("- The throwaway Postgres is `internal/pgtest`'s, started with `fsync=off`, `synchronous_commit=off`, `full_page_writes=off` (made for tests): a commit here costs CPU, not a disk flush, so these figures say nothing of the disk; on a durable cluster each commit waits for a flush and group commit matters more. Postgres runs on the same 2 cores as Velo and the clients.\n")
	sb.WriteString("- Schedule lateness: a component with `[[schedule]] cron = \"@every 1s\"`, the time from each tick to its call's start, over the ticks of about 20 s.\n\n")
	sb.WriteString(t.String())
	return sb.String(), nil
}

// eventsRows adds the rows of one engine's results to t.
func eventsRows(t *table, engine string, r *eventsResult) {
	rounds := func(vs []float64) string {
		return "rounds " + strings.Join(mapf(vs, func(v float64) string { return fmt.Sprintf("%.0f", v) }), ", ")
	}
	peer, ratio := "—", ""
	if r.river != nil {
		peer = fmt.Sprintf("%.0f/s", median(r.river))
		ratio = fmt.Sprintf("%.2f× ", median(r.rates)/median(r.river))
	}
	target, ok := "reported", info
	if engine == "postgres" {
		target, ok = "≥ 2000/s", verdict(median(r.rates) >= 2000)
	}
	t.add(fmt.Sprintf("async calls completed per second, %s (River's empty job, one Insert each, beside)", engine),
		fmt.Sprintf("%.0f/s", median(r.rates)), peer, ratio+"("+rounds(r.rates)+")", target, ok)
	if r.bulk != nil {
		t.add(fmt.Sprintf("River's empty job inserted by InsertMany ×%d, %s (River's best case)", riverBulkBatch, engine),
			"—", fmt.Sprintf("%.0f/s", median(r.bulk)), fmt.Sprintf("Velo %.2f× (%s)", median(r.rates)/median(r.bulk), rounds(r.bulk)), "reported", info)
	}
	cpuPeer, cpuCmp := "—", ""
	if r.riverCPU != nil {
		cpuPeer = fmt.Sprintf("%.0f µs", median(r.riverCPU))
		cpuCmp = fmt.Sprintf("%.2f×, ", median(r.cpu)/median(r.riverCPU))
	}
	pg := ""
	if engine == "postgres" {
		pg = fmt.Sprintf("%.0f %% of it Postgres, ", 100*median(r.pgShare))
	}
	t.add(fmt.Sprintf("CPU per async call, %s (bench process + Postgres; River's empty job beside)", engine),
		fmt.Sprintf("%.0f µs", median(r.cpu)), cpuPeer, cpuCmp+pg+rounds(r.cpu), "reported", info)
	latPeer := func(lat []time.Duration) string {
		if lat == nil {
			return "—"
		}
		return fmtDur(percentile(lat, 99))
	}
	latCmp := func(lat []time.Duration) string {
		if lat == nil {
			return ""
		}
		return fmt.Sprintf(" (River p50 %s)", fmtDur(percentile(lat, 50)))
	}
	t.add(fmt.Sprintf("enqueue latency p99 at saturation, %s (%d clients, closed loop: queueing; River's Insert beside)", engine, eventsConns),
		fmtDur(percentile(r.lat, 99)), latPeer(r.riverLat), fmt.Sprintf("p50 %s%s, %d calls", fmtDur(percentile(r.lat, 50)), latCmp(r.riverLat), len(r.lat)), "reported", info)
	for i, o := range r.open {
		p99 := percentile(o.velo, 99)
		target, ok = "reported", info
		if engine == "postgres" && i == 0 {
			target, ok = "≤ 5 ms", verdict(p99 <= 5*time.Millisecond)
		}
		t.add(fmt.Sprintf("enqueue latency p99 at %.0f calls/s offered (%.0f %% of capacity, open loop), %s (River's Insert at that rate beside)", o.rate, o.share*100, engine),
			fmtDur(p99), latPeer(o.river), fmt.Sprintf("p50 %s%s, %d calls", fmtDur(percentile(o.velo, 50)), latCmp(o.river), len(o.velo)), target, ok)
	}
	if len(r.lateness) > 0 {
		t.add(fmt.Sprintf("schedule lateness p99, %s (tick due → call started, @every 1s)", engine),
			fmtDur(percentile(r.lateness, 99)), "—",
			fmt.Sprintf("p50 %s, %d ticks", fmtDur(percentile(r.lateness, 50)), len(r.lateness)), "≤ 1 s",
			verdict(percentile(r.lateness, 99) <= time.Second))
	}
}

// eventsRounds deploys the components on n and runs b.Rounds rounds.
func eventsRounds(ctx context.Context, b *Bench, n *node.Node, engine string, module []byte) (*eventsResult, error) {
	c := client.New(n.URL, n.Token, nil)
	deploy := func(name, toml string) error {
		dir := filepath.Join(b.Tmp, "components", engine+"-"+name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "hello.wasm"), module, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "velo.toml"), []byte(toml), 0o644); err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := archive.Pack(&buf, dir, "hello.wasm"); err != nil {
			return err
		}
		if _, err := c.Deploy(ctx, name, &buf); err != nil {
			return err
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			res, err := http.Get(n.URL + "/fn/" + name + "/bench")
			if err == nil {
				drain(res)
				if res.StatusCode == 200 {
					return nil
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not live after 60s", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := deploy("async", fmt.Sprintf("name = \"async\"\nmodule = \"hello.wasm\"\n[events]\nconcurrency = %d\n", eventsConcurrency)); err != nil {
		return nil, err
	}
	calls := int64(eventsCalls)
	if engine == "sqlite" {
		calls = eventsCallsSQLite
	}
	pgPID := 0
	if pool := n.Store.PostgresPool(); pool != nil {
		var err error
		if pgPID, err = postmasterPID(ctx, n.Store); err != nil {
			return nil, err
		}
	}
	meter := func() (self, pg time.Duration) { return processCPU(), pgCPU(pgPID) }
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: eventsConns, MaxConnsPerHost: eventsConns}}
	queue := store.EventQueue("async")
	var base int64
	// waitDone waits until want calls of the queue succeeded.
	waitDone := func(want int64) error {
		deadline := time.Now().Add(5 * time.Minute)
		for {
			cnt, err := n.Store.EventCounts(ctx, queue)
			if err != nil {
				return err
			}
			if cnt.Succeeded >= want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%d of %d calls succeeded after 5 minutes (%+v)", cnt.Succeeded-base, want-base, cnt)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	r := &eventsResult{}
	for round := range b.Rounds {
		if n.Store.PostgresPool() != nil {
			s0, p0 := meter()
			rate, lat, err := riverEmptyRate(ctx, n.Store, fmt.Sprintf("bench_empty_%d", round), 1)
			if err != nil {
				return nil, fmt.Errorf("river alone: %w", err)
			}
			s1, p1 := meter()
			r.river = append(r.river, rate)
			r.riverLat = append(r.riverLat, lat...)
			r.riverCPU = append(r.riverCPU, float64((s1-s0+p1-p0).Microseconds())/eventsCalls)
			b.logf("events river round %d: %.0f/s, %.0f µs CPU each (%.0f µs Postgres)", round, rate, r.riverCPU[len(r.riverCPU)-1], float64((p1-p0).Microseconds())/eventsCalls)
			rate, _, err = riverEmptyRate(ctx, n.Store, fmt.Sprintf("bench_bulk_%d", round), riverBulkBatch)
			if err != nil {
				return nil, fmt.Errorf("river alone, InsertMany: %w", err)
			}
			r.bulk = append(r.bulk, rate)
		}
		s0, p0 := meter()
		start := time.Now()
		var next atomic.Int64
		var mu sync.Mutex
		var wg sync.WaitGroup
		var failed atomic.Int64
		for range eventsConns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for next.Add(1) <= calls {
					t0 := time.Now()
					if !asyncCall(ctx, hc, n.URL) {
						failed.Add(1)
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				r.lat = append(r.lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		sent := time.Since(start)
		if f := failed.Load(); f > 0 {
			return nil, fmt.Errorf("round %d: %d of %d async calls not accepted", round, f, calls)
		}
		if err := waitDone(base + calls); err != nil {
			return nil, fmt.Errorf("round %d: %w", round, err)
		}
		took := time.Since(start)
		s1, p1 := meter()
		base += calls
		r.rates = append(r.rates, float64(calls)/took.Seconds())
		total := s1 - s0 + p1 - p0
		r.cpu = append(r.cpu, float64(total.Microseconds())/float64(calls))
		r.pgShare = append(r.pgShare, float64(p1-p0)/float64(max(total, 1)))
		b.logf("events %s round %d: %d async calls accepted in %v, completed in %v (%.0f/s), %.0f µs CPU each (%.0f µs Postgres)",
			engine, round, calls, sent.Round(time.Millisecond), took.Round(time.Millisecond), r.rates[len(r.rates)-1], r.cpu[len(r.cpu)-1], float64((p1-p0).Microseconds())/float64(calls))
	}

	// Enqueue latency at fixed offered rates, below capacity.
	ohc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}
	defer ohc.CloseIdleConnections()
	for i, share := range eventsOpenShares {
		o := openRun{share: share, rate: share * median(r.rates)}
		lat, sent, err := openLoop(ctx, o.rate, eventsOpenFor, func() bool { return asyncCall(ctx, ohc, n.URL) })
		if err != nil {
			return nil, fmt.Errorf("open loop at %.0f/s: %w", o.rate, err)
		}
		o.velo = lat
		b.logf("events %s open loop: %d calls at %.0f/s, p50 %v p99 %v", engine, sent, o.rate, percentile(lat, 50), percentile(lat, 99))
		base += sent
		if err := waitDone(base); err != nil {
			return nil, fmt.Errorf("open loop: %w", err)
		}
		if n.Store.PostgresPool() != nil {
			if o.river, err = riverOpenLoop(ctx, n.Store, fmt.Sprintf("bench_open_%d", i), o.rate, eventsOpenFor); err != nil {
				return nil, fmt.Errorf("river alone, open loop: %w", err)
			}
			b.logf("events river open loop at %.0f/s: p50 %v p99 %v", o.rate, percentile(o.river, 50), percentile(o.river, 99))
		}
		r.open = append(r.open, o)
	}

	// Schedule lateness.
	if err := deploy("tick", "name = \"tick\"\nmodule = \"hello.wasm\"\n[[schedule]]\ncron = \"@every 1s\"\npath = \"/bench\"\n"); err != nil {
		return nil, err
	}
	time.Sleep(21 * time.Second)
	invs, err := n.Events.Invocations(ctx, "tick", "", 100)
	if err != nil {
		return nil, err
	}
	for _, inv := range invs {
		full, err := n.Events.Invocation(ctx, inv.ID)
		if err != nil || full.ScheduledFor == nil || len(full.Attempts) == 0 {
			continue
		}
		r.lateness = append(r.lateness, full.Attempts[0].StartedAt.Sub(*full.ScheduledFor))
	}
	return r, nil
}

// asyncCall sends one async call to the bench component and reports
// whether it was accepted (202). The answer is read to its end, so that
// the connection is kept for the next call.
func asyncCall(ctx context.Context, hc *http.Client, base string) bool {
	req, _ := http.NewRequestWithContext(ctx, "POST", base+"/fn/async/bench", strings.NewReader("{}"))
	req.Header.Set("Prefer", "respond-async")
	res, err := hc.Do(req)
	if err != nil {
		return false
	}
	drain(res)
	return res.StatusCode == http.StatusAccepted
}

// drain reads an answer's body to its end and closes it (an answer closed
// before its end closes its connection).
func drain(res *http.Response) {
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
}

// openLoop calls send at rate per second for d, each when it is due
// whether or not the earlier ones returned (at most 1024 at once), and
// returns each call's time from when it was due to its return.
func openLoop(ctx context.Context, rate float64, d time.Duration, send func() bool) ([]time.Duration, int64, error) {
	const inFlight = 1024
	total := int64(rate * d.Seconds())
	every := time.Duration(float64(time.Second) / rate)
	sem := make(chan struct{}, inFlight)
	lat := make([]time.Duration, total)
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * every)
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return nil, 0, ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if !send() {
				failed.Add(1)
			}
			lat[i] = time.Since(due)
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return nil, 0, fmt.Errorf("%d of %d calls failed", f, total)
	}
	return lat, total, nil
}

// processCPU is the CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postmasterPID finds the Postgres server's process (the parent of the
// backend serving a query of the store's pool).
func postmasterPID(ctx context.Context, st *store.Store) (int, error) {
	var backend int
	if err := st.PostgresPool().QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		return 0, fmt.Errorf("postgres backend pid: %w", err)
	}
	f, err := procStat(backend)
	if err != nil || len(f) < 2 {
		return 0, fmt.Errorf("postgres backend %d: %v", backend, err)
	}
	var ppid int
	fmt.Sscan(f[1], &ppid)
	return ppid, nil
}

// pgCPU is the CPU time the Postgres server pid has used: its own, its
// reaped children's and its live children's (the backends).
func pgCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	ticks := func(f []string, from, to int) (n int64) {
		for i := from; i <= to && i < len(f); i++ {
			var v int64
			fmt.Sscan(f[i], &v)
			n += v
		}
		return n
	}
	f, err := procStat(pid)
	if err != nil {
		return 0
	}
	// utime, stime, cutime, cstime are fields 14–17 of the line.
	n := ticks(f, 11, 14)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var child int
		if _, err := fmt.Sscan(e.Name(), &child); err != nil {
			continue
		}
		cf, err := procStat(child)
		if err != nil || len(cf) < 13 || cf[1] != fmt.Sprint(pid) {
			continue
		}
		n += ticks(cf, 11, 12)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(n) * time.Second / hz
}

// procStat returns the fields of /proc/PID/stat after the command name
// (the first is the state, the second the parent's pid).
func procStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	return strings.Fields(s), nil
}

// emptyArgs is River's empty job of the peer figure.
type emptyArgs struct{}

func (emptyArgs) Kind() string { return "bench_empty" }

type emptyWorker struct {
	river.WorkerDefaults[emptyArgs]
}

func (w *emptyWorker) Work(context.Context, *river.Job[emptyArgs]) error { return nil }

// riverPeer is a plain River client working empty jobs from one queue on
// the store's pool, with eventsConcurrency workers and the settings of
// Velo's executor (internal/events.New).
type riverPeer struct {
	rc    *river.Client[pgx.Tx]
	st    *store.Store
	queue string
}

func startRiverPeer(ctx context.Context, st *store.Store, queue string) (*riverPeer, func(), error) {
	workers := river.NewWorkers()
	river.AddWorker(workers, &emptyWorker{})
	rc, err := river.NewClient(riverpgxv5.New(st.PostgresPool()), &river.Config{
		Queues:            map[string]river.QueueConfig{queue: {MaxWorkers: eventsConcurrency}},
		Workers:           workers,
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: time.Second,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return nil, nil, err
	}
	if err := rc.Start(ctx); err != nil {
		return nil, nil, err
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = rc.Stop(sctx)
	}
	return &riverPeer{rc: rc, st: st, queue: queue}, stop, nil
}

func (p *riverPeer) insert(ctx context.Context) error {
	_, err := p.rc.Insert(ctx, emptyArgs{}, &river.InsertOpts{Queue: p.queue})
	return err
}

// waitDone waits until the store counts n of the queue's jobs completed
// (as for Velo's calls).
func (p *riverPeer) waitDone(ctx context.Context, n int64) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		cnt, err := p.st.EventCounts(ctx, p.queue)
		if err != nil {
			return err
		}
		if cnt.Succeeded >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d empty jobs completed after 5 minutes", cnt.Succeeded, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// riverEmptyRate inserts eventsCalls empty jobs into queue and returns
// jobs completed per second, and with batch 1 each Insert's time. batch
// 1: eventsConns goroutines insert one job each per Insert; else one
// goroutine inserts batch at a time with InsertMany.
func riverEmptyRate(ctx context.Context, st *store.Store, queue string, batch int) (float64, []time.Duration, error) {
	p, stop, err := startRiverPeer(ctx, st, queue)
	if err != nil {
		return 0, nil, err
	}
	defer stop()
	start := time.Now()
	var lat []time.Duration
	if batch <= 1 {
		var next atomic.Int64
		var mu sync.Mutex
		errc := make(chan error, eventsConns)
		var wg sync.WaitGroup
		for range eventsConns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				defer func() { mu.Lock(); lat = append(lat, mine...); mu.Unlock() }()
				for next.Add(1) <= eventsCalls {
					t0 := time.Now()
					if err := p.insert(ctx); err != nil {
						errc <- err
						return
					}
					mine = append(mine, time.Since(t0))
				}
			}()
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			return 0, nil, err
		}
	} else {
		params := make([]river.InsertManyParams, batch)
		for i := range params {
			params[i] = river.InsertManyParams{Args: emptyArgs{}, InsertOpts: &river.InsertOpts{Queue: queue}}
		}
		for left := eventsCalls; left > 0; left -= batch {
			if _, err := p.rc.InsertMany(ctx, params[:min(batch, left)]); err != nil {
				return 0, nil, err
			}
		}
	}
	if err := p.waitDone(ctx, eventsCalls); err != nil {
		return 0, nil, err
	}
	return float64(eventsCalls) / time.Since(start).Seconds(), lat, nil
}

// riverOpenLoop inserts empty jobs one Insert each at rate per second for
// d (openLoop) and returns each Insert's time from when it was due.
func riverOpenLoop(ctx context.Context, st *store.Store, queue string, rate float64, d time.Duration) ([]time.Duration, error) {
	p, stop, err := startRiverPeer(ctx, st, queue)
	if err != nil {
		return nil, err
	}
	defer stop()
	lat, n, err := openLoop(ctx, rate, d, func() bool { return p.insert(ctx) == nil })
	if err != nil {
		return nil, err
	}
	return lat, p.waitDone(ctx, n)
}
