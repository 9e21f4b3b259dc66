package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// restartComponents is how many C components the restart section deploys.
const restartComponents = 100

// restartSection restarts a `velo up` holding 100 deployed C components
// and calls every one of them the moment it says it is up: how many of
// those first calls are answered by something other than the component
// (a 503 "no healthy instance" while the module is prepared again, a 404
// before the route table is loaded), and how long until all 100 have
// answered. Odd rounds stop Velo with SIGINT, even rounds with SIGKILL.
// There is no peer: the target is an absolute 0.
func restartSection(ctx context.Context, b *Bench) (string, error) {
	bin, err := b.GoBuild(ctx, "./cmd/velo")
	if err != nil {
		return "", err
	}
	data := filepath.Join(b.Tmp, "velo-restart")
	start := func(round int) (*Velo, error) {
		p, err := b.StartProc(ctx, fmt.Sprintf("velo-restart-%d", round), bin, []string{"up", "--addr", "127.0.0.1:0", "--data", data},
			[]string{"VELO_LOG_LEVEL=warn"}, "Velo is up at ")
		if err != nil {
			return nil, err
		}
		v, err := veloAt(p, data)
		if err != nil {
			p.Stop()
		}
		return v, err
	}
	v, err := start(0)
	if err != nil {
		return "", err
	}
	defer func() { v.Close() }()
	module := filepath.Join(b.Root, "bench", "testdata", "hello.wasm")
	for i := range restartComponents {
		c, err := b.newWasmComponent(fmt.Sprintf("r%03d", i), module)
		if err != nil {
			return "", err
		}
		if _, err := v.Deploy(ctx, c); err != nil {
			return "", err
		}
	}

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: restartComponents, DisableCompression: true}}
	defer client.CloseIdleConnections()
	var (
		allServe          []time.Duration
		bad               []int
		statuses          = map[string]int{}
		calls, sigkillBad int
	)
	for round := 1; round <= b.Rounds; round++ {
		if round%2 == 0 {
			_ = v.proc.cmd.Process.Kill()
			<-v.proc.done
		} else {
			v.Close()
		}
		if v, err = start(round); err != nil {
			return "", err
		}
		began := time.Now()
		answers := make([]string, restartComponents)
		var wg sync.WaitGroup
		for i := range restartComponents {
			wg.Go(func() {
				res, err := client.Get(fmt.Sprintf("%s/fn/r%03d/bench", v.URL, i))
				if err != nil {
					answers[i] = "error"
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				answers[i] = fmt.Sprint(res.StatusCode)
			})
		}
		wg.Wait()
		took := time.Since(began)
		n := 0
		for _, a := range answers {
			calls++
			if a != "200" {
				n++
				statuses[a]++
			}
		}
		if round%2 == 0 {
			sigkillBad += n
		}
		allServe, bad = append(allServe, took), append(bad, n)
		b.logf("restart round %d: %d of %d first calls not 200, all answered after %v", round, n, restartComponents, took)
	}
	total := 0
	for _, n := range bad {
		total += n
	}
	what := []string{"none"}
	if len(statuses) > 0 {
		what = what[:0]
		for s, n := range statuses {
			what = append(what, fmt.Sprintf("%d × %s", n, s))
		}
	}
	t := b.newTable("")
	t.add("first calls not answered by their component (one per component, all at once)", fmt.Sprintf("%d of %d", total, calls), "—",
		"", "0", verdict(total == 0))
	t.add("of those after SIGKILL", fmt.Sprint(sigkillBad), "—", "", "0", verdict(sigkillBad == 0))
	t.add("time from \"Velo is up\" until all 100 have answered", fmtDur(median(allServe)), "—",
		fmt.Sprintf("rounds %s", strings.Join(mapf(durFloats(allServe), func(v float64) string { return fmtDur(time.Duration(v)) }), ", ")), "reported", info)

	var sb strings.Builder
	sb.WriteString("## restart — the first calls right after Velo restarts\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	fmt.Fprintf(&sb, "`velo up` (a separate process, embedded SQLite) holding %d deployed components, each the wasm section's C module `bench/testdata/hello.wasm` under its own name, is stopped — with SIGINT in odd rounds, SIGKILL in even ones — and started again on the same data dir, %d rounds. The moment it prints `Velo is up at`, one `GET /fn/rNNN/bench` per component is sent, all at once on fresh connections; each call is either answered by its component (200) or not (a 503 while its module is prepared again from the cache, a 404 before the route table is loaded). No peer: the target is absolute. Answers other than 200: %s.\n\n",
		restartComponents, b.Rounds, strings.Join(what, ", "))
	sb.WriteString(t.String())
	return sb.String(), nil
}
