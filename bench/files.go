package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// filesSize is the size of the static file both servers serve: a page of
// HTML, the size of a typical small asset.
const filesSize = 4 << 10

// filesSection measures a static file served from a component's `files` by
// a small C file server module (worker/wasm/testdata/fileserver.c, the
// same job as deislabs/wagi-fileserver) through `velo up`, against nginx
// serving the same file from disk, with wrk at 32 connections, the two
// back to back in every round.
func filesSection(ctx context.Context, b *Bench) (string, error) {
	page := strings.Repeat("<p>Velo serves this page from files.</p>\n", filesSize/41+1)[:filesSize]

	// The component: the module, velo.toml and the page under static/.
	comp := &wasmComponent{name: "files", dir: filepath.Join(b.Tmp, "components", "files")}
	module, err := os.ReadFile(filepath.Join(b.Root, "worker", "wasm", "testdata", "fileserver.wasm"))
	if err != nil {
		return "", err
	}
	for name, body := range map[string]string{
		"module.wasm":      string(module),
		"velo.toml":        "name = \"files\"\nmodule = \"module.wasm\"\nfiles = [\"static/**\"]\n",
		"static/page.html": page,
	} {
		if err := writeFile(filepath.Join(comp.dir, name), body); err != nil {
			return "", err
		}
	}
	// nginx's tree: the same page at the same URL path, and the path
	// startNginx polls. Outside b.Tmp (0700), which nginx's worker,
	// running as an unprivileged user, cannot enter.
	www, err := os.MkdirTemp("", "velo-bench-www-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(www)
	if err := os.Chmod(www, 0o755); err != nil {
		return "", err
	}
	for name, body := range map[string]string{"fn/files/static/page.html": page, "fn/bench/index.html": "ok\n"} {
		if err := writeFile(filepath.Join(www, name), body); err != nil {
			return "", err
		}
	}

	v, err := b.StartVeloProc(ctx, "velo-files")
	if err != nil {
		return "", err
	}
	defer v.Close()
	if _, err := v.Deploy(ctx, comp); err != nil {
		return "", err
	}
	// The control: the same Velo running the wasm section's small C
	// module, which opens no file, so that the table shows what serving
	// from files adds to a WASM call.
	hello, err := b.newWasmComponent("hello", filepath.Join(b.Root, "bench", "testdata", "hello.wasm"))
	if err != nil {
		return "", err
	}
	if _, err := v.Deploy(ctx, hello); err != nil {
		return "", err
	}
	nginxURL, stopNginx, nginxPid, err := startNginx(ctx, b.Tmp, "nginx-files",
		fmt.Sprintf("location / { root %s; sendfile on; tcp_nopush on; }", www), "")
	if err != nil {
		return "", err
	}
	defer stopNginx()

	const path = "/fn/files/static/page.html"
	targets := []*filesTarget{{name: "velo", url: v.URL + path, pid: v.proc.Pid()}, {name: "nginx", url: nginxURL + path, pid: nginxPid},
		{name: "hello", url: v.URL + "/fn/hello/bench", pid: v.proc.Pid()}}
	for _, t := range targets {
		if t.name != "hello" {
			if err := checkPage(t.url, page); err != nil {
				return "", fmt.Errorf("%s: %w", t.name, err)
			}
		}
		if _, err := b.Wrk(ctx, t.url, 2, 32, 2*time.Second); err != nil { // warm-up
			return "", fmt.Errorf("%s: %w", t.name, err)
		}
	}
	for round := 1; round <= b.Rounds; round++ {
		order := targets
		if round%2 == 0 {
			order = []*filesTarget{targets[1], targets[0], targets[2]}
		}
		for _, t := range order {
			cpu0 := cpuTime(t.pid)
			r, err := b.Wrk(ctx, t.url, 2, 32, b.Duration)
			if err != nil {
				return "", fmt.Errorf("%s: %w", t.name, err)
			}
			t.rps, t.p50, t.p99 = append(t.rps, r.rps), append(t.p50, r.p50), append(t.p99, r.p99)
			if t.pid != 0 && r.requests > 0 {
				t.cpu = append(t.cpu, (cpuTime(t.pid)-cpu0)/time.Duration(r.requests))
			}
			t.bad += r.non2xx + r.socketErrors
			b.logf("files round %d: %-6s %8.0f req/s p50 %v p99 %v", round, t.name, r.rps, r.p50, r.p99)
		}
	}
	vl, ng, hl := targets[0], targets[1], targets[2]
	var ratios []float64
	var p50d, p99d []time.Duration
	for i := range vl.rps {
		ratios = append(ratios, vl.rps[i]/ng.rps[i])
		p50d = append(p50d, vl.p50[i]-ng.p50[i])
		p99d = append(p99d, vl.p99[i]-ng.p99[i])
	}
	ratio := median(ratios)
	t := b.newTable("")
	t.add("throughput (req/s, 32 conns)", fmt.Sprintf("%.0f", median(vl.rps)), fmt.Sprintf("%.0f nginx", median(ng.rps)),
		fmt.Sprintf("%.2f× (rounds %.2f–%.2f×)", ratio, minOf(ratios), maxOf(ratios)), "≥ 0.5× nginx", verdict(ratio >= 0.5))
	t.add("p50 latency", fmtDur(median(vl.p50)), fmtDur(median(ng.p50)), fmtDiff(median(p50d)), "", info)
	t.add("p99 latency", fmtDur(median(vl.p99)), fmtDur(median(ng.p99)), fmtDiff(median(p99d)), "reported", info)
	t.add("server CPU time per request", fmtDur(median(vl.cpu)), fmtDur(median(ng.cpu))+" nginx",
		fmt.Sprintf("%.1f×", float64(median(vl.cpu))/float64(median(ng.cpu))), "", info)
	var helloRatios []float64
	for i := range vl.rps {
		helloRatios = append(helloRatios, vl.rps[i]/hl.rps[i])
	}
	t.add("control: Velo's small C module (no file), same run", fmt.Sprintf("%.0f req/s, %s CPU", median(vl.rps), fmtDur(median(vl.cpu))),
		fmt.Sprintf("%.0f req/s, %s CPU hello", median(hl.rps), fmtDur(median(hl.cpu))),
		fmt.Sprintf("%.2f× the control's req/s", median(helloRatios)), "", info)

	var sb strings.Builder
	sb.WriteString("## files — a static file from `files` through Velo vs nginx\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	fmt.Fprintf(&sb, "The file: a %d-byte HTML page. **Velo**: `velo up` (a separate process, embedded SQLite, hit recording on) serving a component whose `velo.toml` says `files = [\"static/**\"]`, its module `worker/wasm/testdata/fileserver.wasm` (%d KiB, C with wasi-libc: the job of deislabs/wagi-fileserver — PATH_INFO names a file under the preopened `/`, read with `read` and written to stdout with a media type and `Cache-Control`), so every request runs the module on a pristine instance (a reused one, its memory and globals put back as after instantiation, worker/wasm/warm.go) that opens, reads and closes the file through the read-only mount (the worker reads the page from the disk once and then answers those calls from memory, worker/wasm/files_held.go). **nginx**: Debian's nginx, one worker process, `root` on a directory holding the same page at the same URL path, `sendfile on`. "+
		"Both called at `GET /fn/files/static/page.html` (each answer checked byte for byte first) with `wrk -t2 -c32 -d%v --latency` after a 2 s warm-up each, back to back in each of %d rounds, the order alternating, then the control (Velo serving `bench/testdata/hello.wasm`, the wasm section's module, at `/fn/hello/bench`); the table gives medians, and in *Velo vs peer* the median of the per-round ratios or differences. *Server CPU time per request* is the serving process's user+system time during each run (from /proc; nginx's worker) over the requests wrk made. wrk and the servers share the machine's CPUs. Errors (non-2xx, socket) over all runs: Velo %d, nginx %d.\n\n",
		filesSize, (len(module)+1023)/1024, b.Duration, b.Rounds, vl.bad, ng.bad)
	sb.WriteString(t.String())
	sb.WriteString("\nPer round — req/s Velo / nginx: " + pairs(vl.rps, ng.rps, func(v float64) string { return fmt.Sprintf("%.0f", v) }) +
		"; p99: " + pairs(durFloats(vl.p99), durFloats(ng.p99), func(v float64) string { return fmtDur(time.Duration(v)) }) +
		"; control (Velo, C module, no file) req/s: " + strings.Join(mapf(hl.rps, func(v float64) string { return fmt.Sprintf("%.0f", v) }), ", ") + ".\n")
	return sb.String(), nil
}

// filesTarget is one server of the files section and its figures.
type filesTarget struct {
	name, url string
	pid       int
	rps       []float64
	p50, p99  []time.Duration
	cpu       []time.Duration
	bad       int64
}

// checkPage fetches url and compares the answer with want.
func checkPage(url, want string) error {
	res, err := http.Get(url)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != 200 || string(b) != want {
		return fmt.Errorf("GET %s: %s, %d bytes, not the page", url, res.Status, len(b))
	}
	return nil
}

func writeFile(path, body string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(body), 0o644)
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs[1:] {
		m = min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs[1:] {
		m = max(m, x)
	}
	return m
}
