package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/store"
)

// gatewaySection measures what the gateway costs: one `velo router`
// process, two components on the same static backend, one public and one
// private with an API-key check and a rate limit (high enough never to
// refuse), wrk at 32 connections against each in turn, paired per round.
func gatewaySection(ctx context.Context, b *Bench) (string, error) {
	velo, err := b.GoBuild(ctx, "./cmd/velo")
	if err != nil {
		return "", err
	}
	server, stopPG, err := pgtest.Throwaway()
	if err != nil {
		return "", fmt.Errorf("postgres: %w", err)
	}
	defer stopPG()
	db := strings.Replace(server, "/postgres?", "/velo_gateway?", 1)
	if err := createDatabase(ctx, server, "velo_gateway"); err != nil {
		return "", err
	}
	backendURL, stopBackend, _, err := startNginx(ctx, b.Tmp, "gwbackend",
		`location / { default_type text/plain; return 200 "Hello, world\n"; }`, "")
	if err != nil {
		return "", err
	}
	defer stopBackend()
	if err := seedStaticRoute(ctx, db, backendURL); err != nil {
		return "", err
	}
	const key = "velo_k_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if err := seedGatedRoute(ctx, db, key); err != nil {
		return "", err
	}
	u, stop, pid, err := startVeloRouter(ctx, b, velo, db, "", "")
	if err != nil {
		return "", err
	}
	defer stop()
	type run struct {
		name, path string
		headers    []string
		rps        []float64
		p99        []time.Duration
		cpu        []time.Duration
		bad        int64
	}
	// The same request to both: the public component gets the X-Api-Key
	// header too (and passes it on), so the difference is the gate's
	// work, not the bytes of a header the client chose to send. The run
	// without the header is kept for reference.
	runs := []*run{
		{name: "off (public component)", path: "/fn/bench/", headers: []string{"X-Api-Key: " + key}},
		{name: "on (API key + rate limit)", path: "/fn/gated/", headers: []string{"X-Api-Key: " + key}},
		{name: "off, no X-Api-Key header", path: "/fn/bench/"},
	}
	for _, r := range runs {
		if _, err := b.WrkHeaders(ctx, u+r.path, 2, 32, 2*time.Second, r.headers...); err != nil {
			return "", err
		}
	}
	for round := 1; round <= b.Rounds; round++ {
		for _, r := range runs {
			cpu0 := cpuTime(pid)
			res, err := b.WrkHeaders(ctx, u+r.path, 2, 32, b.Duration, r.headers...)
			if err != nil {
				return "", err
			}
			r.rps, r.p99 = append(r.rps, res.rps), append(r.p99, res.p99)
			if res.requests > 0 {
				r.cpu = append(r.cpu, (cpuTime(pid)-cpu0)/time.Duration(res.requests))
			}
			r.bad += res.non2xx + res.socketErrors
			b.logf("gateway round %d: %-27s %8.0f req/s p99 %v", round, r.name, res.rps, res.p99)
		}
	}
	off, on, bare := runs[0], runs[1], runs[2]
	var cost []float64
	var cpuRatio []float64
	for i := range off.rps {
		cost = append(cost, 100*(off.rps[i]-on.rps[i])/off.rps[i])
		if i < len(off.cpu) && i < len(on.cpu) && off.cpu[i] > 0 {
			cpuRatio = append(cpuRatio, float64(on.cpu[i])/float64(off.cpu[i]))
		}
	}
	t := b.newTable("")
	c := median(cost)
	t.add("throughput cost of an API-key check + rate limit (32 conns)", fmt.Sprintf("%.0f req/s on", median(on.rps)),
		fmt.Sprintf("%.0f off", median(off.rps)), fmt.Sprintf("%.1f %% (rounds %s)", c, spread(cost)), "≤ 5 %", verdict(c <= 5))
	t.add("p99 latency", fmtDur(median(on.p99)), fmtDur(median(off.p99))+" off", fmtDiff(median(on.p99)-median(off.p99)), "", info)
	t.add("router CPU time per call", fmtDur(median(on.cpu)), fmtDur(median(off.cpu))+" off", fmt.Sprintf("%.2f×", median(cpuRatio)), "", info)
	var bareCost []float64
	for i := range bare.rps {
		bareCost = append(bareCost, 100*(bare.rps[i]-on.rps[i])/bare.rps[i])
	}
	t.add("cost against a public call without the X-Api-Key header", fmt.Sprintf("%.0f req/s on", median(on.rps)),
		fmt.Sprintf("%.0f off", median(bare.rps)), fmt.Sprintf("%.1f %% (rounds %s)", median(bareCost), spread(bareCost)), "", info)
	admitNs, err := admitMicroBench(ctx, b)
	if err != nil {
		return "", err
	}
	share := 100 * admitNs / float64(median(off.cpu).Nanoseconds())
	t.add("gate CPU per call in process (BenchmarkAdmit: key lookup + bucket take)", fmt.Sprintf("%.0f ns", admitNs), fmtDur(median(off.cpu))+" router CPU per call",
		fmt.Sprintf("%.1f %% of a call's router CPU", share), "≤ 5 %", verdict(share <= 5))
	var sb strings.Builder
	sb.WriteString("## Gateway\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	sb.WriteString(fmt.Sprintf("One `velo router` process (route table in a throwaway Postgres) and one static backend (nginx, `return 200`); component `bench` is public, component `gated` has `[access] public = false` and `[limits] rate = \"100000000/s\", by = \"key\"` (a limit that never refuses, so every call pays the key lookup — sha256 of the key and a map read — and a token-bucket take). wrk -t2 -c32 sends the same request to both, `X-Api-Key` included (the public component passes it on, the gated one swaps it for `X-Velo-Auth-Subject`/`X-Velo-Auth-Key`; its answers add the three `RateLimit-*` fields), %v per run after a 2 s warm-up, interleaved in each of %d rounds with a third run to `bench` without the header (for reference); the cost is the median of the per-round differences. On a machine this loaded (other benchmarks and test suites running, see the load average) the wrk rounds swing by several times and say little; the in-process figure measures the gate's own CPU per call (process CPU time, not wall time) against the router's CPU per call measured here. Errors (non-2xx, socket) over all runs: %d.\n\n", b.Duration, b.Rounds, off.bad+on.bad))
	sb.WriteString(t.String())
	sb.WriteString("\nPer round — req/s on / off: " + pairs(on.rps, off.rps, func(v float64) string { return fmt.Sprintf("%.0f", v) }) +
		"; off without the header: " + joinRPS(bare.rps) + ".\n")
	return sb.String(), nil
}

// joinRPS writes per-round throughputs.
func joinRPS(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, ", ")
}

// spread writes the lowest and highest of xs.
func spread(xs []float64) string {
	if len(xs) == 0 {
		return "none"
	}
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%.1f to %.1f %%", lo, hi)
}

// seedGatedRoute registers component "gated", private with one API key
// (key) and a rate limit, served by the static backend seedStaticRoute
// registered.
func seedGatedRoute(ctx context.Context, db, key string) error {
	st, err := store.Open(ctx, db)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.CreateComponent(ctx, store.Component{Name: "gated", Runtime: "wasm"}); err != nil {
		return err
	}
	d, err := st.CreateDeployment(ctx, store.Deployment{Component: "gated", Digest: strings.Repeat("0", 64), Runtime: "wasm",
		Manifest: []byte(`{"access":{},"limits":{"count":100000000,"per":1000000000,"burst":100000000,"by":"key"}}`),
		Source:   "upload", Status: store.StatusReady})
	if err != nil {
		return err
	}
	if err := st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "static", State: store.PlacementReady}); err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(key))
	if err := st.CreateAPIKey(ctx, store.APIKey{ID: "bench", Component: "gated", Label: "wrk", Hash: hex.EncodeToString(sum[:])}); err != nil {
		return err
	}
	return st.Promote(ctx, "gated", d.ID)
}

// admitMicroBench runs BenchmarkAdmit and returns its CPU time per call.
func admitMicroBench(ctx context.Context, b *Bench) (float64, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkAdmit$", "-benchtime", "1s", "./router")
	cmd.Dir = b.Root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("go test -bench BenchmarkAdmit: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if i := slices.Index(f, "cpu-ns/op"); i > 0 && strings.HasPrefix(f[0], "BenchmarkAdmit") {
			return strconv.ParseFloat(f[i-1], 64)
		}
	}
	return 0, fmt.Errorf("BenchmarkAdmit: unexpected output\n%s", out)
}
