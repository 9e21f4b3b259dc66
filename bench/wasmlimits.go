package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The wasmlimits section (bench/README.md): Velo's WASM throughput against
// an older commit of Velo in the same run, and a worker's memory under a
// flood of large calls.

// wasmLimitsSection runs both parts.
func wasmLimitsSection(ctx context.Context, b *Bench) (string, error) {
	c := &wasmModule{label: "C", component: "hello-c", path: filepath.Join(b.Root, "bench", "testdata", "hello.wasm")}
	bin, label, err := b.candidate(ctx)
	if err != nil {
		return "", err
	}
	var base *baselineResult
	var oldFlood *floodResult
	if b.Baseline != "" {
		if base, err = wasmBaseline(ctx, b, c, bin); err != nil {
			return "", err
		}
	}
	flood, err := wasmFlood(ctx, b, "velo-up-flood", bin, floodBudget)
	if err != nil {
		return "", err
	}
	if b.Baseline != "" {
		oldBin, _, err := b.buildCheckout(ctx, b.Baseline)
		if err != nil {
			return "", err
		}
		if oldFlood, err = wasmFlood(ctx, b, "velo-up-flood-baseline", oldBin, 0); err != nil {
			return "", err
		}
	}
	return wasmLimitsReport(b, label, base, flood, oldFlood), nil
}

// candidate builds the velo measured: -wasm-candidate's, else this
// checkout's. label names it for the report.
func (b *Bench) candidate(ctx context.Context) (bin, label string, err error) {
	if b.Candidate == "" {
		bin, err = b.GoBuild(ctx, "./cmd/velo")
		return bin, "this checkout", err
	}
	bin, commit, err := b.buildCheckout(ctx, b.Candidate)
	return bin, "commit " + commit, err
}

// baselineResult is part 4: C-module throughput of this checkout's velo up
// and of the baseline's, per round.
type baselineResult struct {
	commit          string
	veloRPS, oldRPS []float64
	ratio           []float64
	veloCPU, oldCPU []float64 // server CPU µs per request
	veloBad, oldBad int64
	// serveCPU and oldServeCPU are CPU µs per call of worker/wasm's
	// BenchmarkServe/c in each checkout's test binary, per run.
	serveCPU, oldServeCPU []float64
}

// floodResult is part 5: one velo up under the flood.
type floodResult struct {
	budget           int64 // VELO_WORKER_MEMORY, 0 for the baseline (it has none)
	before, hwm      int64 // VmRSS before the flood, VmHWM after it
	echoed, refused  int   // whole echoes, 503s (and resets while sending)
	failed           int   // anything else
	elapsed          time.Duration
	otherOK, otherNo int // calls to another component during the flood
}

const (
	floodPosts  = 64
	floodSize   = 30 << 20
	floodBudget = 512 << 20
)

// buildCheckout builds the velo of the checkout in dir, once per run.
func (b *Bench) buildCheckout(ctx context.Context, dir string) (bin, commit string, err error) {
	out, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "", "", fmt.Errorf("%s: not a git checkout: %v", dir, err)
	}
	commit = strings.TrimSpace(string(out))
	bin = filepath.Join(b.Tmp, "bin", "velo-"+commit)
	if _, err := os.Stat(bin); err == nil {
		return bin, commit, nil
	}
	b.logf("building velo of %s (%s)", commit, dir)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/velo")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("build the velo of %s: %v\n%s", dir, err, out)
	}
	return bin, commit, nil
}

// startUpProc runs `velo up` from bin on a fresh data dir with env.
func (b *Bench) startUpProc(ctx context.Context, name, bin string, env ...string) (*Velo, error) {
	data := filepath.Join(b.Tmp, name)
	p, err := b.StartProc(ctx, name, bin, []string{"up", "--addr", "127.0.0.1:0", "--data", data},
		append([]string{"VELO_LOG_LEVEL=warn"}, env...), "Velo is up at ")
	if err != nil {
		return nil, err
	}
	v, err := veloAt(p, data)
	if err != nil {
		p.Stop()
	}
	return v, err
}

// wasmBaseline measures part 4: the C module through this checkout's
// `velo up` and through the baseline's, back to back in every round, the
// order alternating.
func wasmBaseline(ctx context.Context, b *Bench, c *wasmModule, newBin string) (*baselineResult, error) {
	oldBin, commit, err := b.buildCheckout(ctx, b.Baseline)
	if err != nil {
		return nil, err
	}
	res := &baselineResult{commit: commit}
	if err := serveCPU(ctx, b, res); err != nil {
		return nil, err
	}
	type target struct {
		url string
		v   *Velo
	}
	var targets [2]target // new, old
	for i, bin := range []string{newBin, oldBin} {
		v, err := b.startUpProc(ctx, fmt.Sprintf("velo-up-baseline-%d", i), bin)
		if err != nil {
			return nil, err
		}
		defer v.Close()
		comp, err := b.newWasmComponent(c.component+"-"+strconv.Itoa(i), c.path)
		if err != nil {
			return nil, err
		}
		if _, err := v.Deploy(ctx, comp); err != nil {
			return nil, err
		}
		targets[i] = target{url: v.URL + "/fn/" + comp.name + "/bench", v: v}
		if _, err := b.Wrk(ctx, targets[i].url, 2, 32, time.Second); err != nil {
			return nil, err
		}
	}
	rounds := max(b.Rounds, 7)
	for r := range rounds {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		var rps, cpu [2]float64
		for _, i := range order {
			cpu0 := targets[i].v.proc.CPUTime()
			w, err := b.Wrk(ctx, targets[i].url, 2, 32, b.Duration)
			if err != nil {
				return nil, err
			}
			rps[i] = w.rps
			cpu[i] = float64((targets[i].v.proc.CPUTime() - cpu0).Microseconds()) / float64(w.requests)
			if i == 0 {
				res.veloBad += w.non2xx + w.socketErrors
			} else {
				res.oldBad += w.non2xx + w.socketErrors
			}
		}
		res.veloRPS = append(res.veloRPS, rps[0])
		res.oldRPS = append(res.oldRPS, rps[1])
		res.ratio = append(res.ratio, rps[0]/rps[1])
		res.veloCPU = append(res.veloCPU, cpu[0])
		res.oldCPU = append(res.oldCPU, cpu[1])
		b.logf("wasm C throughput vs %s, round %d: %.0f vs %.0f req/s (%.3f×), CPU %.1f vs %.1f µs per request",
			commit, r+1, rps[0], rps[1], rps[0]/rps[1], cpu[0], cpu[1])
	}
	return res, nil
}

// serveCPU runs worker/wasm's BenchmarkServe/c (one goroutine, a fixed
// number of calls) from each checkout's test binary in turn, and takes the
// CPU time each process used per call: on a machine shared with other
// work, CPU time is disturbed far less than wall time.
func serveCPU(ctx context.Context, b *Bench, res *baselineResult) error {
	cand := b.Candidate
	if cand == "" {
		cand = b.Root
	}
	const calls = 30000
	var bins [2]string
	for i, dir := range []string{cand, b.Baseline} {
		bins[i] = filepath.Join(b.Tmp, "bin", fmt.Sprintf("wasm-%d.test", i))
		cmd := exec.CommandContext(ctx, "go", "test", "-c", "-o", bins[i], "./worker/wasm")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build worker/wasm tests in %s: %v\n%s", dir, err, out)
		}
	}
	for r := range 6 {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, i := range order {
			// A run of one call measures what every run costs besides the
			// calls (TestMain builds the Go example, the module compiles).
			var cpu [2]time.Duration
			for k, n := range []int{1, calls} {
				cmd := exec.CommandContext(ctx, bins[i], "-test.run", "^$", "-test.bench", "^BenchmarkServe$/^c$",
					"-test.benchtime", strconv.Itoa(n)+"x", "-test.cpu", "1")
				cmd.Dir = filepath.Join([]string{cand, b.Baseline}[i], "worker", "wasm")
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("BenchmarkServe: %v\n%s", err, out)
				}
				cpu[k] = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
			}
			us := float64((cpu[1] - cpu[0]).Microseconds()) / (calls - 1)
			if i == 0 {
				res.serveCPU = append(res.serveCPU, us)
			} else {
				res.oldServeCPU = append(res.oldServeCPU, us)
			}
		}
		b.logf("BenchmarkServe/c CPU per call, run %d: %.1f vs %.1f µs", r+1, res.serveCPU[r], res.oldServeCPU[r])
	}
	return nil
}

// wasmFlood measures part 5 on a fresh `velo up` from bin: floodPosts
// concurrent POSTs of floodSize bytes to a component whose module echoes
// the body, while another component is called in a loop; then the
// process's VmHWM.
func wasmFlood(ctx context.Context, b *Bench, name, bin string, budget int64) (*floodResult, error) {
	var env []string
	if budget > 0 {
		env = append(env, fmt.Sprintf("VELO_WORKER_MEMORY=%dMiB", budget>>20))
	}
	v, err := b.startUpProc(ctx, name, bin, env...)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	module := filepath.Join(b.Root, "worker", "wasm", "testdata", "stream.wasm")
	for _, comp := range []string{"flood", "other"} {
		c, err := b.newWasmComponent(comp, module)
		if err != nil {
			return nil, err
		}
		// The manifest's memory is what admission reserves per call.
		if err := os.WriteFile(filepath.Join(c.dir, "velo.toml"),
			fmt.Appendf(nil, "name = %q\nruntime = \"wasm\"\nmodule = \"module.wasm\"\ntimeout = \"60s\"\nmemory = \"16MiB\"\n", comp), 0o644); err != nil {
			return nil, err
		}
		if _, err := v.Deploy(ctx, c); err != nil {
			return nil, err
		}
	}
	pid := v.proc.Pid()
	res := &floodResult{budget: budget, before: vmStatus(pid, "VmRSS")}

	hc := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: floodPosts}}
	defer hc.CloseIdleConnections()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range floodPosts {
		wg.Go(func() {
			kind := floodPost(ctx, hc, v.URL+"/fn/flood/echo")
			mu.Lock()
			defer mu.Unlock()
			switch kind {
			case "echoed":
				res.echoed++
			case "refused":
				res.refused++
			default:
				res.failed++
				b.logf("flood POST: %s", kind)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	oc := &http.Client{Timeout: 30 * time.Second}
	for loop := true; loop; {
		select {
		case <-done:
			loop = false
			continue
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		r, err := oc.Get(v.URL + "/fn/other/")
		if err == nil {
			_, _ = io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		if err == nil && r.StatusCode == 200 {
			res.otherOK++
		} else {
			res.otherNo++
		}
	}
	res.elapsed = time.Since(start)
	res.hwm = vmStatus(pid, "VmHWM")
	b.logf("flood of %s: %d echoed, %d refused, %d failed in %s; VmRSS before %d MiB, VmHWM %d MiB; other component %d ok, %d not",
		name, res.echoed, res.refused, res.failed, res.elapsed.Round(time.Millisecond), res.before>>20, res.hwm>>20, res.otherOK, res.otherNo)
	return res, nil
}

// floodPost sends one large POST and reads the answer: "echoed" for the
// whole body back, "refused" for a 503 (or a reset while sending, which a
// call turned away before its body was read may see), else what went
// wrong.
func floodPost(ctx context.Context, hc *http.Client, url string) string {
	req, err := http.NewRequestWithContext(ctx, "POST", url, io.LimitReader(zeros{}, floodSize))
	if err != nil {
		return err.Error()
	}
	req.ContentLength = floodSize
	res, err := hc.Do(req)
	if err != nil {
		if msg := err.Error(); strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") {
			return "refused"
		}
		return err.Error()
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	switch {
	case res.StatusCode == 503:
		return "refused"
	case res.StatusCode != 200:
		return fmt.Sprintf("status %d", res.StatusCode)
	case err != nil || n != floodSize:
		return fmt.Sprintf("echo of %d bytes (%v)", n, err)
	}
	return "echoed"
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// vmStatus reads a size field (VmRSS, VmHWM) of /proc/PID/status in bytes,
// 0 when it cannot.
func vmStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// wasmLimitsReport writes parts 4 and 5.
func wasmLimitsReport(b *Bench, label string, base *baselineResult, flood, oldFlood *floodResult) string {
	var s strings.Builder
	t := b.newTable("")
	if base != nil {
		ratio := median(base.ratio)
		result := verdict(ratio >= 0.95)
		if lo, hi := slices.Min(base.ratio), slices.Max(base.ratio); lo < 0.95 && hi >= 0.95 {
			result += fmt.Sprintf(" (rounds disagree: %.2f–%.2f×)", lo, hi)
		}
		t.add(fmt.Sprintf("C module throughput, 32 connections, vs Velo at %s (req/s)", base.commit),
			fmt.Sprintf("%.0f", median(base.veloRPS)), fmt.Sprintf("%.0f", median(base.oldRPS)),
			fmt.Sprintf("%.3f× (rounds %.3f–%.3f×)", ratio, slices.Min(base.ratio), slices.Max(base.ratio)), "≥ 0.95×", result)
		sc, osc := median(base.serveCPU), median(base.oldServeCPU)
		t.add("Instance.Serve CPU time per call, C module, in process (BenchmarkServe/c)", fmt.Sprintf("%.1f µs", sc), fmt.Sprintf("%.1f µs", osc),
			fmt.Sprintf("%.3f×", sc/osc), "≤ 1.05×", verdict(sc/osc <= 1.05))
		vc, oc := median(base.veloCPU), median(base.oldCPU)
		t.add("… server CPU time per request under wrk", fmt.Sprintf("%.1f µs", vc), fmt.Sprintf("%.1f µs", oc), fmt.Sprintf("%.3f×", vc/oc), "", info)
		if base.veloBad > 0 || base.oldBad > 0 {
			t.add("non-2xx answers + socket errors", fmt.Sprint(base.veloBad), fmt.Sprint(base.oldBad), "", "0", verdict(base.veloBad == 0))
		}
	}
	if flood != nil {
		peer, cmp := "", ""
		if oldFlood != nil {
			peer = fmt.Sprintf("%d MiB", oldFlood.hwm>>20)
			cmp = fmt.Sprintf("%.2f×", float64(flood.hwm)/float64(oldFlood.hwm))
		}
		t.add(fmt.Sprintf("worker (velo up) peak RSS under %d concurrent %d MiB POSTs, VELO_WORKER_MEMORY=%dMiB", floodPosts, floodSize>>20, flood.budget>>20),
			fmt.Sprintf("%d MiB", flood.hwm>>20), peer, cmp, fmt.Sprintf("≤ %d MiB", flood.budget>>20), verdict(flood.hwm <= flood.budget))
		row := func(f *floodResult) string {
			return fmt.Sprintf("%d echoed, %d refused (503), %d failed, in %.1f s", f.echoed, f.refused, f.failed, f.elapsed.Seconds())
		}
		peer = ""
		if oldFlood != nil {
			peer = row(oldFlood)
		}
		t.add("… the flood's calls", row(flood), peer, "", "", info)
		peer = ""
		if oldFlood != nil {
			peer = fmt.Sprintf("%d of %d", oldFlood.otherOK, oldFlood.otherOK+oldFlood.otherNo)
		}
		t.add("… another component's calls answered meanwhile", fmt.Sprintf("%d of %d", flood.otherOK, flood.otherOK+flood.otherNo), peer,
			"", "all", verdict(flood.otherNo == 0 && flood.otherOK > 0))
	}
	fmt.Fprintf(&s, "## wasmlimits — streaming and admission: throughput against an older commit, memory under a flood\n\n")
	fmt.Fprintf(&s, "%s Velo measured: %s.\n\n", b.Stamp(), label)
	if base != nil {
		fmt.Fprintf(&s, "1. **Throughput vs an older commit** — the `velo up` measured and the one built from `-wasm-baseline` "+
			"(commit %s), both fresh processes with hit recording on, each serving the C module `bench/testdata/hello.wasm` "+
			"with the wasm section's manifest; `wrk -t2 -c32 -d%s` against each, back to back in every one of %d rounds, "+
			"the order alternating; the ratio is the median of the per-round ratios. Server CPU time per request (from /proc) "+
			"is less disturbed by the other processes on the machine than req/s. The row *Instance.Serve CPU time* runs worker/wasm's "+
			"`BenchmarkServe/c` (one goroutine, 30 000 calls; the test process's user+system time less that of a run of one call, "+
			"divided by the calls) from each checkout's test binary, 6 runs each, interleaved: the same path without HTTP, "+
			"router or admission, and the least noisy figure here.\n",
			base.commit, b.Duration, len(base.ratio))
	}
	if flood != nil {
		fmt.Fprintf(&s, "2. **Memory under a flood** — a fresh `velo up` with `VELO_WORKER_MEMORY=%dMiB`; component *flood* runs "+
			"`worker/wasm/testdata/stream.wasm` (its `/echo` sends the body back as it reads it) with `memory = \"16MiB\"`, component "+
			"*other* the same module. %d clients POST %d MiB each to `/fn/flood/echo` at once (bodies generated, answers counted, "+
			"nothing held whole by the bench) while one client calls `/fn/other/` every 20 ms; then the process's `VmHWM` "+
			"(peak RSS, /proc/PID/status). A 503 (or a reset while the client still sends, which a call turned away before its "+
			"body was read may see) counts as refused.",
			flood.budget>>20, floodPosts, floodSize>>20)
		if oldFlood != nil {
			fmt.Fprintf(&s, " The peer column is the same flood against the baseline's `velo up`.")
		}
		fmt.Fprintf(&s, "\n")
	}
	fmt.Fprintf(&s, "\n%s\n", t)
	if base != nil {
		fmt.Fprintf(&s, "Per round — measured/baseline req/s: %s; CPU µs per request: %s; BenchmarkServe/c CPU µs per call: %s.\n\n",
			fmtRatios(base.veloRPS, base.oldRPS), fmtRatios(base.veloCPU, base.oldCPU), fmtFloats(base.serveCPU, base.oldServeCPU))
	}
	return s.String()
}

func fmtFloats(a, b []float64) string {
	var parts []string
	for i := range a {
		parts = append(parts, fmt.Sprintf("%.1f/%.1f", a[i], b[i]))
	}
	return strings.Join(parts, ", ")
}
