package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/velo-run/velo/bench/internal/wagi"
)

// wasmModule is one module the wasm section measures.
type wasmModule struct {
	label     string // for the report
	component string // component name in Velo, /fn/<component>/
	path      string // the .wasm file
	targeted  bool   // the latency targets apply (the small C module)
	warm, n   int    // sequential requests: warm-up and measured, per round
	coldN     int    // first-request samples per round
}

// wasmResult collects one module's figures over every round.
type wasmResult struct {
	// warm latency, per round: p50 and p99 of each variant
	veloP50, veloP99, peerP50, peerP99, rawP50, rawP99 []time.Duration
	warmN                                              int
	// first request after deploy, pooled over rounds
	veloFirst, rawFirst, toLive []time.Duration
	stale                       int // first requests answered by another deployment
	// throughput, per round
	veloRPS, peerRPS, ratio []float64
	veloWrkP50, peerWrkP50  []time.Duration
	veloWrkP99, peerWrkP99  []time.Duration
	veloBad, peerBad        int64     // non-2xx answers and socket errors
	veloCPU, peerCPU        []float64 // server CPU µs per request
	others                  []float64 // share of the machine other processes used during each wrk run
}

// wasmSection measures Velo's WebAssembly path against a raw wazero run and
// a minimal Go server running the same module (see bench/README.md).
func wasmSection(ctx context.Context, b *Bench) (string, error) {
	goWasm := filepath.Join(b.Tmp, "hello-go", "hello.wasm")
	b.logf("building examples/hello-wasm for wasip1")
	build := exec.CommandContext(ctx, "go", "build", "-o", goWasm, ".")
	build.Dir = filepath.Join(b.Root, "examples", "hello-wasm")
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build examples/hello-wasm: %v\n%s", err, out)
	}
	modules := []*wasmModule{
		{label: "C", component: "hello-c", path: filepath.Join(b.Root, "bench", "testdata", "hello.wasm"),
			targeted: true, warm: 200, n: 2000, coldN: 20},
		{label: "Go", component: "hello-go", path: goWasm, warm: 20, n: 200, coldN: 20},
	}
	results := make([]*wasmResult, len(modules))
	for i := range results {
		results[i] = new(wasmResult)
	}
	if err := wasmLatency(ctx, b, modules, results); err != nil {
		return "", err
	}
	if err := wasmThroughput(ctx, b, modules, results); err != nil {
		return "", err
	}
	return wasmReport(b, modules, results), nil
}

// wasmLatency runs parts 1 and 2 against a Velo in this process.
func wasmLatency(ctx context.Context, b *Bench, modules []*wasmModule, results []*wasmResult) error {
	v, err := b.StartVelo(ctx, "velo-latency")
	if err != nil {
		return err
	}
	defer v.Close()
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()

	for i, m := range modules {
		res := results[i]
		bin, err := os.ReadFile(m.path)
		if err != nil {
			return err
		}
		comp, err := b.newWasmComponent(m.component, m.path)
		if err != nil {
			return err
		}
		if _, err := v.Deploy(ctx, comp); err != nil {
			return err
		}
		greeting := [][2]string{{"GREETING", "hi"}}
		host, err := wagi.New(ctx, bin, wagi.Config{Env: greeting})
		if err != nil {
			return fmt.Errorf("%s: %w", m.label, err)
		}
		peerURL, stopPeer, err := servePeer(host, "/fn/"+m.component)
		if err != nil {
			return err
		}
		veloURL := v.URL + "/fn/" + m.component + "/bench"
		peerURL += "/fn/" + m.component + "/bench"
		rawReq, _ := http.NewRequest("GET", veloURL, nil)
		rawReq.RemoteAddr = "127.0.0.1:40000"
		rawReq.Header.Set("User-Agent", "Go-http-client/1.1")
		var out bytes.Buffer

		variants := []func() error{
			func() error { return get(ctx, hc, veloURL) },
			func() error { return get(ctx, hc, peerURL) },
			func() error {
				out.Reset()
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				err := host.Run(rctx, wagi.Env(rawReq, "/fn/"+m.component, 0), []string{rawReq.URL.EscapedPath()}, nil, &out)
				if err == nil && !bytes.Contains(out.Bytes(), []byte("from Velo!")) {
					err = fmt.Errorf("raw run: unexpected output %q", out.String())
				}
				return err
			},
		}
		b.logf("wasm %s: warm latency, %d rounds of %d requests per variant", m.label, b.Rounds, m.n)
		for r := 0; r < b.Rounds; r++ {
			samples, err := interleave(ctx, variants, m.warm, m.n, 3*time.Minute)
			if err != nil {
				stopPeer()
				host.Close(ctx)
				return fmt.Errorf("%s warm latency: %w", m.label, err)
			}
			res.warmN = len(samples[0])
			res.veloP50 = append(res.veloP50, percentile(samples[0], 50))
			res.veloP99 = append(res.veloP99, percentile(samples[0], 99))
			res.peerP50 = append(res.peerP50, percentile(samples[1], 50))
			res.peerP99 = append(res.peerP99, percentile(samples[1], 99))
			res.rawP50 = append(res.rawP50, percentile(samples[2], 50))
			res.rawP99 = append(res.rawP99, percentile(samples[2], 99))
			b.logf("  round %d: velo p50 %s p99 %s · peer p50 %s · raw p50 %s p99 %s", r+1,
				fmtDur(res.veloP50[r]), fmtDur(res.veloP99[r]), fmtDur(res.peerP50[r]), fmtDur(res.rawP50[r]), fmtDur(res.rawP99[r]))
		}
		stopPeer()
		host.Close(ctx)

		b.logf("wasm %s: first request after deploy, %d rounds of %d deploys", m.label, b.Rounds, m.coldN)
		cache := wazero.NewCompilationCache()
		for r := 0; r < b.Rounds*m.coldN; r++ {
			d, err := v.Deploy(ctx, comp)
			if err != nil {
				return err
			}
			start := time.Now()
			dep, err := getDeployment(ctx, hc, veloURL)
			first := time.Since(start)
			if err != nil {
				return fmt.Errorf("%s first request: %w", m.label, err)
			}
			if dep != fmt.Sprint(d.id) {
				res.stale++
			}
			res.veloFirst = append(res.veloFirst, first)
			res.toLive = append(res.toLive, d.toLive)

			// The floor: the first run of a module just compiled (from an
			// in-memory compilation cache, as Velo's disk cache serves an
			// artifact whose module it has seen) in a new wazero runtime.
			h, err := wagi.New(ctx, bin, wagi.Config{Env: greeting, Cache: cache})
			if err != nil {
				return err
			}
			out.Reset()
			start = time.Now()
			err = h.Run(ctx, wagi.Env(rawReq, "/fn/"+m.component, 0), []string{rawReq.URL.EscapedPath()}, nil, &out)
			res.rawFirst = append(res.rawFirst, time.Since(start))
			h.Close(ctx)
			if err != nil {
				return fmt.Errorf("%s raw first run: %w", m.label, err)
			}
		}
		_ = cache.Close(ctx)
		b.logf("  first request p50 %s p99 %s (raw first run p50 %s), deploy→live p50 %s",
			fmtDur(percentile(res.veloFirst, 50)), fmtDur(percentile(res.veloFirst, 99)),
			fmtDur(percentile(res.rawFirst, 50)), fmtDur(percentile(res.toLive, 50)))
	}
	return nil
}

// servePeer serves host at mount on a loopback port in this process.
func servePeer(host *wagi.Host, mount string) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(mount+"/", host.Handler(mount))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// interleave runs warm calls of each variant, then n timed calls of each in
// blocks of 50, rotating between variants so that all see the same load.
// It stops early, with what it has, when limit has passed.
func interleave(ctx context.Context, variants []func() error, warm, n int, limit time.Duration) ([][]time.Duration, error) {
	for _, v := range variants {
		for range warm {
			if err := v(); err != nil {
				return nil, err
			}
		}
	}
	const block = 50
	deadline := time.Now().Add(limit)
	samples := make([][]time.Duration, len(variants))
	for done := 0; done < n && time.Now().Before(deadline); done += block {
		for i, v := range variants {
			for range min(block, n-done) {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				start := time.Now()
				if err := v(); err != nil {
					return nil, err
				}
				samples[i] = append(samples[i], time.Since(start))
			}
		}
	}
	return samples, nil
}

// get fetches url, reads the body and checks for a 200 with the greeting.
func get(ctx context.Context, hc *http.Client, url string) error {
	_, err := getDeployment(ctx, hc, url)
	return err
}

// getDeployment is get returning the X-Velo-Deployment header.
func getDeployment(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("from Velo!")) {
		return "", fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	return resp.Header.Get("X-Velo-Deployment"), nil
}

// wasmThroughput runs part 3: wrk against a `velo up` process and a
// wagipeer process, back to back, alternating which goes first.
func wasmThroughput(ctx context.Context, b *Bench, modules []*wasmModule, results []*wasmResult) error {
	if _, err := exec.LookPath("wrk"); err != nil {
		return errors.New("wrk is not installed (apt-get install wrk)")
	}
	peerBin, err := b.GoBuild(ctx, "./bench/wagipeer")
	if err != nil {
		return err
	}
	v, err := b.StartVeloProc(ctx, "velo-up")
	if err != nil {
		return err
	}
	defer v.Close()
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()

	type target struct {
		velo, peer         string
		veloProc, peerProc *Proc
	}
	targets := make([]target, len(modules))
	for i, m := range modules {
		comp, err := b.newWasmComponent(m.component, m.path)
		if err != nil {
			return err
		}
		if _, err := v.Deploy(ctx, comp); err != nil {
			return err
		}
		p, err := b.StartProc(ctx, "wagipeer-"+m.component, peerBin,
			[]string{"-module", m.path, "-addr", "127.0.0.1:0", "-mount", "/fn/" + m.component, "-env", "GREETING=hi"},
			nil, "listening on ")
		if err != nil {
			return err
		}
		defer p.Stop()
		targets[i] = target{velo: v.URL + "/fn/" + m.component + "/bench", peer: p.URL + "/fn/" + m.component + "/bench",
			veloProc: v.proc, peerProc: p}
		for _, u := range []string{targets[i].velo, targets[i].peer} {
			if err := get(ctx, hc, u); err != nil {
				return err
			}
			// Warm both servers up (JIT-free, but pools, goroutines and
			// connections) before anything is recorded.
			if _, err := b.Wrk(ctx, u, 2, 32, time.Second); err != nil {
				return err
			}
		}
	}
	hc.CloseIdleConnections()

	for r := 0; r < b.Rounds; r++ {
		for i, m := range modules {
			res, t := results[i], targets[i]
			order := []bool{true, false} // velo first on even rounds
			if r%2 == 1 {
				order = []bool{false, true}
			}
			var vr, pr wrkResult
			for _, isVelo := range order {
				u, p := t.peer, t.peerProc
				if isVelo {
					u, p = t.velo, t.veloProc
				}
				cpu := p.CPUTime()
				w, err := b.Wrk(ctx, u, 2, 32, b.Duration)
				if err != nil {
					return err
				}
				// Server CPU time per request, in µs.
				serverCPU := p.CPUTime() - cpu
				perReq := float64(serverCPU.Microseconds()) / float64(w.requests)
				// The share of the machine other processes took meanwhile.
				others := float64(w.machineBusy-serverCPU-w.wrkCPU) / float64(time.Duration(runtime.NumCPU())*w.wall)
				res.others = append(res.others, min(max(others, 0), 1))
				if isVelo {
					vr = w
					res.veloCPU = append(res.veloCPU, perReq)
				} else {
					pr = w
					res.peerCPU = append(res.peerCPU, perReq)
				}
			}
			res.veloRPS = append(res.veloRPS, vr.rps)
			res.peerRPS = append(res.peerRPS, pr.rps)
			res.ratio = append(res.ratio, vr.rps/pr.rps)
			res.veloWrkP50 = append(res.veloWrkP50, vr.p50)
			res.veloWrkP99 = append(res.veloWrkP99, vr.p99)
			res.peerWrkP50 = append(res.peerWrkP50, pr.p50)
			res.peerWrkP99 = append(res.peerWrkP99, pr.p99)
			res.veloBad += vr.non2xx + vr.socketErrors
			res.peerBad += pr.non2xx + pr.socketErrors
			b.logf("wasm %s throughput round %d: velo %.0f req/s, peer %.0f req/s, ratio %.2f; others used %.0f%%/%.0f%% of the machine",
				m.label, r+1, vr.rps, pr.rps, vr.rps/pr.rps, 100*res.others[len(res.others)-2], 100*res.others[len(res.others)-1])
		}
	}
	return nil
}

func wasmReport(b *Bench, modules []*wasmModule, results []*wasmResult) string {
	var s strings.Builder
	fmt.Fprintf(&s, "## wasm — WebAssembly requests through Velo vs wazero alone\n\n")
	fmt.Fprintf(&s, "%s\n\n", b.Stamp())
	fmt.Fprintf(&s, "Modules: **C** is `bench/testdata/hello.wasm` (%s, clang -O2 + wasi-libc, prints a greeting); "+
		"**Go** is `examples/hello-wasm` built with `GOOS=wasip1 GOARCH=wasm` (%s). Both are deployed with the example's "+
		"manifest (timeout 10s, memory 128MiB, `GREETING=hi`) and called with `GET /fn/NAME/bench`.\n\n",
		fileSize(modules[0].path), fileSize(modules[1].path))
	fmt.Fprintf(&s, "The peer is `bench/internal/wagi`: compile once, a fresh wazero instance per call, the same CGI variables "+
		"set with `ModuleConfig.WithEnv`, stdin/stdout as byte buffers, default wazero memory allocation; no routing, limits, logs or statistics.\n\n")
	fmt.Fprintf(&s, "How it was measured:\n\n")
	fmt.Fprintf(&s, "1. **Warm latency** — Velo started in the bench process (`node.Start`, embedded SQLite, hit recording on), "+
		"called over loopback HTTP/1.1 keep-alive, one request at a time. Peer *raw wazero* is `wagi.Host.Run` in the same process, no HTTP; "+
		"peer *HTTP* is the same host behind a minimal `net/http` server in the same process. Per round: warm-up (C 200, Go 20 calls per variant), "+
		"then C %d / Go %d timed calls per variant, interleaved in blocks of 50. %d rounds; the table shows the median of the per-round p50 and p99.\n",
		modules[0].n, modules[1].n, b.Rounds)
	fmt.Fprintf(&s, "2. **First request after deploy** — %d × %d deploys per module through the REST API, each a new artifact "+
		"(a counter file changes the digest, so the worker prepares and compiles it); the bench polls `GET /api/v1/deployments/{id}` every 2 ms until "+
		"`ready` and `live`, then times one `GET` on the already open keep-alive connection. Peer: the first `Run` of a new wazero runtime right after "+
		"`CompileModule` (served from an in-memory compilation cache, as Velo's disk cache serves a module it has seen). p50/p99 over all samples.\n",
		b.Rounds, modules[0].coldN)
	fmt.Fprintf(&s, "3. **Throughput** — both servers as separate processes built with the same `go build`: `velo up --addr 127.0.0.1:0` "+
		"(fresh data dir, embedded SQLite, hit recording on) and `bench/wagipeer` (the peer host behind `net/http`). "+
		"`wrk -t2 -c32 -d%s --latency`, after a 1 s warm-up run each; Velo and peer back to back in every round, the order alternating; "+
		"%d rounds. The table shows median req/s and the median of the per-round ratios. wrk shares the 2 cores with the server under test.\n\n",
		b.Duration, b.Rounds)

	for i, m := range modules {
		r := results[i]
		t := b.newTable(m.label)
		vp50, vp99 := median(r.veloP50), median(r.veloP99)
		rp50, rp99 := median(r.rawP50), median(r.rawP99)
		hp50, hp99 := median(r.peerP50), median(r.peerP99)
		target, result := "≤ raw + 150 µs", verdict(vp50-rp50 <= 150*time.Microsecond)
		if !m.targeted {
			target, result = "(C module only)", info
		}
		t.add("warm p50 vs raw wazero", fmtDur(vp50), fmtDur(rp50), fmtDiff(vp50-rp50), target, result)
		t.add("warm p99 vs raw wazero", fmtDur(vp99), fmtDur(rp99), fmtDiff(vp99-rp99), "", info)
		t.add("warm p50 vs peer HTTP server", fmtDur(vp50), fmtDur(hp50), fmtDiff(vp50-hp50), "", info)
		t.add("warm p99 vs peer HTTP server", fmtDur(vp99), fmtDur(hp99), fmtDiff(vp99-hp99), "", info)

		f50, f99 := percentile(r.veloFirst, 50), percentile(r.veloFirst, 99)
		rf50, rf99 := percentile(r.rawFirst, 50), percentile(r.rawFirst, 99)
		target, result = "≤ 5 ms", verdict(f50 <= 5*time.Millisecond)
		if !m.targeted {
			target, result = "(C module only)", info
		}
		t.add(fmt.Sprintf("first request after deploy p50 (n=%d)", len(r.veloFirst)), fmtDur(f50), fmtDur(rf50), fmtDiff(f50-rf50), target, result)
		t.add("first request after deploy p99", fmtDur(f99), fmtDur(rf99), fmtDiff(f99-rf99), "", info)
		t.add("deploy upload → live (API) p50", fmtDur(percentile(r.toLive, 50)), "", "", "", info)
		t.add("first requests answered by the new deployment (X-Velo-Deployment)",
			fmt.Sprintf("%d of %d", len(r.veloFirst)-r.stale, len(r.veloFirst)), "", "", "all", verdict(r.stale == 0))

		vr, pr, ratio := median(r.veloRPS), median(r.peerRPS), median(r.ratio)
		result = verdict(ratio >= 0.8)
		if lo, hi := slices.Min(r.ratio), slices.Max(r.ratio); lo < 0.8 && hi >= 0.8 {
			// The rounds disagree: say so rather than hide it in a median.
			result += fmt.Sprintf(" (rounds disagree: %.2f–%.2f×)", lo, hi)
		}
		t.add("throughput, 32 connections (req/s)", fmt.Sprintf("%.0f", vr), fmt.Sprintf("%.0f", pr),
			fmt.Sprintf("%.2f×", ratio), "≥ 0.80×", result)
		t.add("wrk latency p50 at 32 connections", fmtDur(median(r.veloWrkP50)), fmtDur(median(r.peerWrkP50)),
			fmtDiff(median(r.veloWrkP50)-median(r.peerWrkP50)), "", info)
		t.add("wrk latency p99 at 32 connections", fmtDur(median(r.veloWrkP99)), fmtDur(median(r.peerWrkP99)),
			fmtDiff(median(r.veloWrkP99)-median(r.peerWrkP99)), "", info)
		vc, pc := median(r.veloCPU), median(r.peerCPU)
		t.add("server CPU time per request under wrk", fmt.Sprintf("%.0f µs", vc), fmt.Sprintf("%.0f µs", pc),
			fmt.Sprintf("%.2f×", vc/pc), "", info)
		if r.veloBad > 0 || r.peerBad > 0 {
			t.add("non-2xx answers + socket errors under load", fmt.Sprint(r.veloBad), fmt.Sprint(r.peerBad), "", "0", verdict(r.veloBad == 0))
		}
		fmt.Fprintf(&s, "### %s module\n\n%s\n", m.label, t)
		fmt.Fprintf(&s, "Per round — throughput Velo/peer req/s: %s; warm p50 Velo/raw: %s. "+
			"Other processes on the machine used %s of its CPU during the wrk runs (min–max), a measure of the noise.\n\n",
			fmtRatios(r.veloRPS, r.peerRPS), fmtPairs(r.veloP50, r.rawP50), fmtShareRange(r.others))
	}
	return s.String()
}

func fmtRatios(a, b []float64) string {
	var parts []string
	for i := range a {
		parts = append(parts, fmt.Sprintf("%.0f/%.0f", a[i], b[i]))
	}
	return strings.Join(parts, ", ")
}

func fmtPairs(a, b []time.Duration) string {
	var parts []string
	for i := range a {
		parts = append(parts, fmtDur(a[i])+"/"+fmtDur(b[i]))
	}
	return strings.Join(parts, ", ")
}

func fileSize(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return "?"
	}
	return fmt.Sprintf("%d KiB", (fi.Size()+1023)/1024)
}

func fmtShareRange(xs []float64) string {
	if len(xs) == 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f–%.0f %%", 100*slices.Min(xs), 100*slices.Max(xs))
}
