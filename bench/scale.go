package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/velo-run/velo/internal/archive"
)

// The scale section: what a worker holds as versions and components pile
// up, measured on a `velo up` process (RSS from /proc/PID/status, the data
// dir walked on disk).
//
//  1. Churn: one component redeployed b.ScaleChurn times back to back, a
//     distinct module binary each time (hello.wasm with a custom section
//     holding the counter, so each version has its own compiled module);
//     RSS and data dir after the first keep (10) deploys, the "peer": what
//     N versions need, and after all of them.
//  2. Many components: b.ScaleComponents distinct components (the same
//     variants of hello.wasm) deployed through the API by 8 clients at
//     once; deploys/s, and RSS per idle component, (RSS after − RSS with
//     one component) / count, read after a pause for the idle sweep.
//  3. First call to a long-idle component: components deployed first and
//     never called, whose compiled code was unloaded (the worker keeps
//     wasm.DefaultMaxLoaded in memory), each called once, p50/p99; the
//     peer is the second call to the same components.
const (
	churnKeep     = 10
	scaleClients  = 8
	firstCalls    = 100
	settleForRSS  = 8 * time.Second
	deployTimeout = 2 * time.Minute
)

func scaleSection(ctx context.Context, b *Bench) (string, error) {
	hello, err := os.ReadFile(filepath.Join(b.Root, "bench", "testdata", "hello.wasm"))
	if err != nil {
		return "", err
	}
	t := b.newTable("")
	var notes []string

	// 1. Churn.
	if !b.ScaleSkipChurn {
		note, err := scaleChurn(ctx, b, hello, t)
		if err != nil {
			return "", err
		}
		notes = append(notes, note)
	}
	if b.ScaleOnlyChurn {
		return scaleText(b, t, notes, 0), nil
	}

	// 2. Many components.
	v, err := b.StartVeloProc(ctx, "scale-many")
	if err != nil {
		return "", err
	}
	defer v.Close()
	if err := deployVariant(ctx, b, v, "c0", hello, 0); err != nil {
		return "", err
	}
	time.Sleep(settleForRSS)
	base := vmStatus(v.proc.Pid(), "VmRSS")
	n := b.ScaleComponents
	rates := []float64{}
	var cpus []time.Duration // server CPU time per deploy, per batch
	deployed := 1
	for _, upto := range scaleSteps(n) {
		s, cpu0 := time.Now(), v.proc.CPUTime()
		if err := deployMany(ctx, b, v, hello, deployed, upto); err != nil {
			return "", err
		}
		rate := float64(upto-deployed) / time.Since(s).Seconds()
		cpu := (v.proc.CPUTime() - cpu0) / time.Duration(upto-deployed)
		rates, cpus = append(rates, rate), append(cpus, cpu)
		b.logf("many: %d → %d components at %.1f deploys/s, %s server CPU per deploy", deployed, upto, rate, fmtDur(cpu))
		deployed = upto
		time.Sleep(settleForRSS)
		rss := vmStatus(v.proc.Pid(), "VmRSS")
		per := float64(rss-base) / float64(upto-1)
		t.add(fmt.Sprintf("RSS per idle component at %d components", upto), fmt.Sprintf("%.0f KiB", per/1024),
			"", fmt.Sprintf("%s total (%s with one)", mib(rss), mib(base)), "≤ 64 KiB at 10 000", verdict(per <= 64<<10))
	}
	t.add(fmt.Sprintf("New components deployed per second through the API (%d clients)", scaleClients),
		fmt.Sprintf("%.1f/s", median(rates)), "", "per batch: "+fmtRates(rates), "≥ 100/s", verdict(median(rates) >= 100))
	cpuNames := make([]string, len(cpus))
	for i, c := range cpus {
		cpuNames[i] = fmtDur(c)
	}
	t.add("… server CPU time per deploy (velo up's user+system, all its work for the deploy)", fmtDur(medianDur(cpus)), "",
		"per batch: "+strings.Join(cpuNames, ", ")+fmt.Sprintf("; %d cores / this = %.0f/s were the machine Velo's alone", runtime.NumCPU(),
			float64(runtime.NumCPU())/medianDur(cpus).Seconds()), "", info)

	// 3. First call to a long-idle component.
	hc := newHTTPClient()
	var first, second []time.Duration
	for i := 1; i <= min(firstCalls, deployed-1); i++ {
		url := fmt.Sprintf("%s/fn/c%d/", v.URL, i)
		d1, err := timedGet(ctx, hc, url)
		if err != nil {
			return "", err
		}
		d2, err := timedGet(ctx, hc, url)
		if err != nil {
			return "", err
		}
		first, second = append(first, d1), append(second, d2)
	}
	t.add("First call to a long-idle component (code unloaded), p50", fmtDur(percentile(first, 50)), fmtDur(percentile(second, 50))+" (2nd call)",
		fmtDiff(percentile(first, 50)-percentile(second, 50)), "", info)
	t.add("… p99", fmtDur(percentile(first, 99)), fmtDur(percentile(second, 99)),
		fmtDiff(percentile(first, 99)-percentile(second, 99)), "≤ 5 ms", verdict(percentile(first, 99) <= 5*time.Millisecond))

	return scaleText(b, t, notes, min(firstCalls, deployed-1)), nil
}

// scaleText is the section's text around table t: how it measures what,
// the table, the notes. firsts is how many long-idle components part 3
// called (0: parts 2 and 3 did not run).
func scaleText(b *Bench, t *table, notes []string, firsts int) string {
	var s strings.Builder
	fmt.Fprintf(&s, "## scale — versions and components piling up\n\n%s\n\n", b.Stamp())
	fmt.Fprintf(&s, "`velo up` as its own process (embedded SQLite, hit recording on); RSS is `VmRSS` of /proc/PID/status "+
		"read %s after the last deploy, the data dir is walked on disk. Modules are `bench/testdata/hello.wasm` with a custom "+
		"section holding a counter appended, so that every version and component has its own binary, digest and compiled "+
		"module (no recompile needed).\n\n", settleForRSS)
	fmt.Fprintf(&s, "1. **Churn** — one component redeployed %d times back to back through the API, each deploy waiting until "+
		"live (far faster than the 3 s retirement grace); the peer column is the same process after the first %d deploys "+
		"(`VELO_KEEP_DEPLOYMENTS`, default 10), i.e. what N versions need.\n", b.ScaleChurn, churnKeep)
	if firsts == 0 {
		fmt.Fprintf(&s, "\n%s\n", t)
		for _, n := range notes {
			fmt.Fprintf(&s, "%s\n", n)
		}
		s.WriteString("\n")
		return s.String()
	}
	fmt.Fprintf(&s, "2. **Many components** — a fresh `velo up`; distinct components deployed by %d clients at once, each "+
		"uploading and waiting until live (`GET /deployments/{id}?wait=`, held by the server until the deployment changes); RSS per idle component is (RSS − RSS with one component) / components.\n", scaleClients)
	fmt.Fprintf(&s, "3. **First call to a long-idle component** — the %d components deployed first, never called since, whose "+
		"compiled code was unloaded (the worker keeps %d modules loaded); one call each, then a second one (the peer).\n\n",
		firsts, 256)
	fmt.Fprintf(&s, "%s\n", t)
	for _, n := range notes {
		fmt.Fprintf(&s, "%s\n", n)
	}
	s.WriteString("\n")
	return s.String()
}

// scaleSteps are the component counts measured on the way to n.
func scaleSteps(n int) []int {
	var steps []int
	for _, s := range []int{1000, 2500, 5000} {
		if s < n {
			steps = append(steps, s)
		}
	}
	return append(steps, n)
}

func medianDur(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func fmtRates(rs []float64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%.1f", r)
	}
	return strings.Join(parts, ", ")
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func kib(n int64) string { return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10)) }

// size is n in KiB under 10 MiB, else in MiB.
func size(n int64) string {
	if n < 10<<20 {
		return kib(n)
	}
	return mib(n)
}

// footprint is what a velo up holds at one moment.
type footprint struct {
	rss, data      int64 // data: the whole data dir
	store          int64 // of which the SQLite files (velo.db, its WAL)
	wal            int64 // of which the WAL (velo.db-wal)
	files          int   // files in the data dir
	trees, modules int
}

func (f footprint) String() string {
	return fmt.Sprintf("RSS %s, data dir %s in %d files (store %s, WAL %s), %d unpacked trees, %d compiled modules",
		mib(f.rss), size(f.data), f.files, size(f.store), kib(f.wal), f.trees, f.modules)
}

func measure(pid int, data string) footprint {
	f := footprint{rss: vmStatus(pid, "VmRSS")}
	_ = filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			f.data += fi.Size()
			f.files++
			if strings.HasPrefix(d.Name(), "velo.db") {
				f.store += fi.Size()
			}
			if d.Name() == "velo.db-wal" {
				f.wal += fi.Size()
			}
		}
		if strings.Contains(p, string(filepath.Separator)+"wasm-cache"+string(filepath.Separator)) {
			f.modules++
		}
		return nil
	})
	entries, _ := os.ReadDir(filepath.Join(data, "artifacts"))
	f.trees = len(entries)
	return f
}

// variantWasm is bin with a custom section "velo-bench" holding n.
func variantWasm(bin []byte, n int) []byte {
	name, payload := "velo-bench", fmt.Sprint(n)
	body := append([]byte{byte(len(name))}, name...)
	body = append(body, payload...)
	out := append(append([]byte(nil), bin...), 0, byte(len(body))) // under 128 bytes: a one-byte size
	return append(out, body...)
}

// deployVariant deploys component name serving variant n of module bin and
// waits until it is live.
func deployVariant(ctx context.Context, b *Bench, v *Velo, name string, bin []byte, n int) error {
	dir, err := os.MkdirTemp(b.Tmp, "variant-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "module.wasm"), variantWasm(bin, n), 0o644); err != nil {
		return err
	}
	manifest := fmt.Sprintf("name = %q\nruntime = \"wasm\"\nmodule = \"module.wasm\"\n", name)
	if err := os.WriteFile(filepath.Join(dir, "velo.toml"), []byte(manifest), 0o644); err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := archive.Pack(&buf, dir, "module.wasm"); err != nil {
		return err
	}
	d, err := v.Client.Deploy(ctx, name, &buf)
	if err != nil {
		return fmt.Errorf("deploy %s: %w", name, err)
	}
	deadline := time.Now().Add(deployTimeout)
	for got := d; ; {
		// Held by the server until the deployment changes (as velo
		// deploy does), not polled.
		got, err = v.Client.WaitDeployment(ctx, d.ID, got, 30*time.Second)
		if err != nil {
			return err
		}
		switch {
		case got.Status == "failed":
			return fmt.Errorf("deployment %d of %s failed: %s", d.ID, name, got.Error)
		case got.Status == "ready" && got.Live:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("deployment %d of %s not live after %s", d.ID, name, deployTimeout)
		}
	}
}

// deployMany deploys components c<from> … c<to-1> with scaleClients
// clients at once.
func deployMany(ctx context.Context, b *Bench, v *Velo, bin []byte, from, to int) error {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make([]error, scaleClients)
	for c := range scaleClients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				if err := deployVariant(ctx, b, v, fmt.Sprintf("c%d", i), bin, i); err != nil {
					errs[c] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func timedGet(ctx context.Context, hc *http.Client, url string) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return 0, err
	}
	s := time.Now()
	res, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	var buf [4096]byte
	for {
		if _, err := res.Body.Read(buf[:]); err != nil {
			break
		}
	}
	res.Body.Close()
	d := time.Since(s)
	if res.StatusCode != 200 {
		return 0, fmt.Errorf("GET %s: %d", url, res.StatusCode)
	}
	return d, nil
}

// scaleChurn runs the churn part, adding its rows to t, and returns its note.
func scaleChurn(ctx context.Context, b *Bench, hello []byte, t *table) (string, error) {
	v, err := b.StartVeloProc(ctx, "scale-churn")
	if err != nil {
		return "", err
	}
	data := filepath.Join(b.Tmp, "scale-churn")
	var atN, atK footprint
	start := time.Now()
	var deployTimes []time.Duration
	for i := 0; i < b.ScaleChurn; i++ {
		s := time.Now()
		if err := deployVariant(ctx, b, v, "churn", hello, i); err != nil {
			v.Close()
			return "", err
		}
		deployTimes = append(deployTimes, time.Since(s))
		if i == churnKeep-1 {
			time.Sleep(settleForRSS)
			atN = measure(v.proc.Pid(), data)
			b.logf("churn: after %d deploys: %s", i+1, atN)
		}
	}
	elapsed := time.Since(start)
	time.Sleep(settleForRSS)
	atK = measure(v.proc.Pid(), data)
	b.logf("churn: after %d deploys in %s: %s", b.ScaleChurn, elapsed.Round(time.Second), atK)
	v.Close()
	t.add(fmt.Sprintf("Churn: RSS after %d deploys of one component", b.ScaleChurn), mib(atK.rss),
		mib(atN.rss)+fmt.Sprintf(" after %d", churnKeep), fmt.Sprintf("%.2f×", float64(atK.rss)/float64(atN.rss)),
		"≤ 1.5× what N versions need", verdict(float64(atK.rss) <= 1.5*float64(atN.rss)))
	t.add("… data dir (store, unpacked trees, compiled modules)", size(atK.data), size(atN.data)+fmt.Sprintf(" after %d", churnKeep),
		fmt.Sprintf("%.2f×", float64(atK.data)/float64(atN.data)), "≤ 1.5×", verdict(float64(atK.data) <= 1.5*float64(atN.data)))
	t.add(fmt.Sprintf("… of which the store (velo.db and its WAL: the newest %d deployment records, %d build logs and artifacts)", 10*churnKeep, churnKeep),
		size(atK.store), size(atN.store), fmt.Sprintf("%.2f×", float64(atK.store)/float64(atN.store)), "", info)
	t.add("… … of which the WAL (velo.db-wal, cut to nothing a grace after the last deploy)", kib(atK.wal), kib(atN.wal), "", "", info)
	t.add("… the rest (unpacked trees, compiled modules, keys)", size(atK.data-atK.store), size(atN.data-atN.store),
		fmt.Sprintf("%.2f×", float64(atK.data-atK.store)/float64(atN.data-atN.store)), "≤ 1.5×",
		verdict(float64(atK.data-atK.store) <= 1.5*float64(atN.data-atN.store)))
	t.add("… files in the data dir / unpacked trees / compiled modules on disk", fmt.Sprintf("%d / %d / %d", atK.files, atK.trees, atK.modules),
		fmt.Sprintf("%d / %d / %d", atN.files, atN.trees, atN.modules), "", "the live version's",
		verdict(atK.files <= atN.files && atK.trees <= 2 && atK.modules <= 2))
	return fmt.Sprintf("Churn: %d deploys in %s (each waited until live; p50 %s, p99 %s per deploy).",
		b.ScaleChurn, elapsed.Round(time.Second), fmtDur(percentile(deployTimes, 50)), fmtDur(percentile(deployTimes, 99))), nil
}
