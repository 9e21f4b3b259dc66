package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
)

// eventsSection measures the event engine: async calls completed per
// second end to end (the first POST with Prefer: respond-async → the last
// call succeeded) on Postgres and on SQLite, River's own insert+work rate
// for an empty job on the same database in the same run (the cost Velo
// adds), the enqueue latency (request in → 202 out) and the lateness of
// schedule ticks (due → the call started).
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
		rate, lat, riverRate, lateness, err := eventsRounds(nctx, b, n, engine, module)
		cancel()
		n.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", engine, err)
		}
		peer, ratio := "—", ""
		if riverRate != nil {
			peer = fmt.Sprintf("%.0f/s", median(riverRate))
			ratio = fmt.Sprintf("%.2f×", median(rate)/median(riverRate))
		}
		target, ok := "reported", info
		if engine == "postgres" {
			target, ok = "≥ 2000/s", verdict(median(rate) >= 2000)
		}
		t.add(fmt.Sprintf("async calls completed per second, %s (River's empty job beside)", engine),
			fmt.Sprintf("%.0f/s", median(rate)), peer, strings.TrimSpace(ratio+" (rounds "+strings.Join(mapf(rate, func(v float64) string { return fmt.Sprintf("%.0f", v) }), ", ")+")"),
			target, ok)
		p50, p99 := percentile(lat, 50), percentile(lat, 99)
		t.add(fmt.Sprintf("enqueue latency p99, %s (request in → 202 out, under that load)", engine),
			fmtDur(p99), "—", fmt.Sprintf("p50 %s, %d calls", fmtDur(p50), len(lat)),
			map[bool]string{true: "≤ 5 ms", false: "reported"}[engine == "postgres"],
			map[bool]string{true: verdict(p99 <= 5*time.Millisecond), false: info}[engine == "postgres"])
		if len(lateness) > 0 {
			t.add(fmt.Sprintf("schedule lateness p99, %s (tick due → call started, @every 1s)", engine),
				fmtDur(percentile(lateness, 99)), "—",
				fmt.Sprintf("p50 %s, %d ticks", fmtDur(percentile(lateness, 50)), len(lateness)), "≤ 1 s",
				verdict(percentile(lateness, 99) <= time.Second))
		}
	}
	var sb strings.Builder
	sb.WriteString("## events — async calls, River beside them, schedule ticks\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	fmt.Fprintf(&sb, "An all-in-one Velo in the bench process (`node.Start`, as `velo up`), once on a throwaway Postgres and once on its embedded SQLite, with the wasm section's C module `bench/testdata/hello.wasm` deployed with `[events] concurrency = %d`. Each round sends %d (SQLite: %d) `POST /fn/NAME/bench` with `Prefer: respond-async` from %d clients over keep-alive connections and times from the first request to the last call succeeded (the store's count of completed jobs in the component's queue); each request's own time to its 202 is the enqueue latency. River's peer figure, in the same run and on the same database (Postgres only: its SQLite driver works one row at a time), is a plain River client inserting the same number of empty jobs from %d goroutines, one `Insert` each (no batching; Velo group-commits the enqueues that arrive together into one `InsertManyTx`), and working them with %d workers: the same queue machinery with nothing to run. The throwaway Postgres is `internal/pgtest`'s, started with `fsync=off`, `synchronous_commit=off`, `full_page_writes=off` (made for tests): a commit here costs CPU, not a disk flush, so these figures say nothing of the disk; on a durable cluster each commit waits for a flush and group commit matters more. Schedule lateness: a component with `[[schedule]] cron = \"@every 1s\"`, the time from each tick to its call's start, over the ticks of about 20 s.\n\n",
		eventsConcurrency, eventsCalls, eventsCallsSQLite, eventsConns, eventsConns, eventsConcurrency)
	sb.WriteString(t.String())
	return sb.String(), nil
}

// eventsRounds deploys the components on n and runs b.Rounds rounds.
func eventsRounds(ctx context.Context, b *Bench, n *node.Node, engine string, module []byte) (rates []float64, lat []time.Duration, riverRates []float64, lateness []time.Duration, err error) {
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
				res.Body.Close()
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
		return nil, nil, nil, nil, err
	}
	calls := int64(eventsCalls)
	if engine == "sqlite" {
		calls = eventsCallsSQLite
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: eventsConns, MaxConnsPerHost: eventsConns}}
	queue := store.EventQueue("async")
	base := int64(0)
	for round := range b.Rounds {
		if n.Store.PostgresPool() != nil {
			r, err := riverEmptyRate(ctx, n.Store, fmt.Sprintf("bench_empty_%d", round))
			if err != nil {
				return nil, nil, nil, nil, fmt.Errorf("river alone: %w", err)
			}
			riverRates = append(riverRates, r)
		}
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
					req, _ := http.NewRequestWithContext(ctx, "POST", n.URL+"/fn/async/bench", strings.NewReader("{}"))
					req.Header.Set("Prefer", "respond-async")
					t0 := time.Now()
					res, err := hc.Do(req)
					if err != nil {
						failed.Add(1)
						continue
					}
					res.Body.Close()
					if res.StatusCode != http.StatusAccepted {
						failed.Add(1)
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if f := failed.Load(); f > 0 {
			return nil, nil, nil, nil, fmt.Errorf("round %d: %d of %d async calls not accepted", round, f, calls)
		}
		want := base + calls
		deadline := time.Now().Add(5 * time.Minute)
		for {
			cnt, err := n.Store.EventCounts(ctx, queue)
			if err != nil {
				return nil, nil, nil, nil, err
			}
			if cnt.Succeeded >= want {
				break
			}
			if time.Now().After(deadline) {
				return nil, nil, nil, nil, fmt.Errorf("round %d: %d of %d calls succeeded after 5 minutes (%+v)", round, cnt.Succeeded-base, calls, cnt)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		base = want
		rates = append(rates, float64(calls)/took.Seconds())
		b.logf("events %s round %d: %d async calls completed in %v (%.0f/s)", engine, round, calls, took, rates[len(rates)-1])
	}

	// Schedule lateness.
	if err := deploy("tick", "name = \"tick\"\nmodule = \"hello.wasm\"\n[[schedule]]\ncron = \"@every 1s\"\npath = \"/bench\"\n"); err != nil {
		return nil, nil, nil, nil, err
	}
	time.Sleep(21 * time.Second)
	invs, err := n.Events.Invocations(ctx, "tick", "", 100)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	for _, inv := range invs {
		full, err := n.Events.Invocation(ctx, inv.ID)
		if err != nil || full.ScheduledFor == nil || len(full.Attempts) == 0 {
			continue
		}
		lateness = append(lateness, full.Attempts[0].StartedAt.Sub(*full.ScheduledFor))
	}
	return rates, lat, riverRates, lateness, nil
}

// emptyArgs is River's empty job of the peer figure.
type emptyArgs struct{}

func (emptyArgs) Kind() string { return "bench_empty" }

type emptyWorker struct {
	river.WorkerDefaults[emptyArgs]
	done *atomic.Int64
}

func (w *emptyWorker) Work(context.Context, *river.Job[emptyArgs]) error {
	w.done.Add(1)
	return nil
}

// riverEmptyRate inserts eventsCalls empty jobs into queue from
// eventsConns goroutines, one insert each, worked by a River client with
// eventsConcurrency workers on the same database, and returns jobs
// completed per second (until the store counts them all completed, as
// for Velo's calls).
func riverEmptyRate(ctx context.Context, st *store.Store, queue string) (float64, error) {
	var done atomic.Int64
	workers := river.NewWorkers()
	river.AddWorker(workers, &emptyWorker{done: &done})
	rc, err := river.NewClient(riverpgxv5.New(st.PostgresPool()), &river.Config{
		Queues:        map[string]river.QueueConfig{queue: {MaxWorkers: eventsConcurrency}},
		Workers:       workers,
		FetchCooldown: 2 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return 0, err
	}
	if err := rc.Start(ctx); err != nil {
		return 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = rc.Stop(sctx)
	}()
	start := time.Now()
	var next atomic.Int64
	errc := make(chan error, eventsConns)
	var wg sync.WaitGroup
	for range eventsConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= eventsCalls {
				if _, err := rc.Insert(ctx, emptyArgs{}, &river.InsertOpts{Queue: queue}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		cnt, err := st.EventCounts(ctx, queue)
		if err != nil {
			return 0, err
		}
		if cnt.Succeeded >= eventsCalls {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d of %d empty jobs completed after 5 minutes", cnt.Succeeded, eventsCalls)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return float64(eventsCalls) / time.Since(start).Seconds(), nil
}
