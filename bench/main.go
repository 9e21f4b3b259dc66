// Command bench measures Velo against its peers and writes the figures to
// bench/RESULTS.md, one section per area. Every figure is measured against
// its peer in the same run, interleaved or back to back, and repeated over
// rounds, because the machine is shared and absolute numbers drift.
//
//	go run ./bench                      # every section
//	go run ./bench -only wasm -rounds 5 # one section, the others kept
//	go run ./bench -json bench/results.json # the figures also as JSON
//
// Adding an area is a new file bench/NAME.go with one function of type
// func(context.Context, *Bench) (string, error), listed in sections below.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// section is one area of the benchmark.
type section struct {
	// name selects it with -only and delimits it in RESULTS.md.
	name string
	// run measures the area and returns the section's Markdown: a "##"
	// title, how it was measured and a table (see table). It must bound
	// every load loop in count and time and use loopback only.
	run func(ctx context.Context, b *Bench) (string, error)
}

// sections are the areas, in the order they run and first appear in
// RESULTS.md.
var sections = []section{
	{name: "wasm", run: wasmSection},
	{name: "wasmlimits", run: wasmLimitsSection},
	{name: "docker", run: dockerSection},
	{name: "webhook", run: webhookSection},
	{name: "router", run: routerSection},
	{name: "https", run: httpsSection},
	{name: "gateway", run: gatewaySection},
	{name: "scale", run: scaleSection},
	{name: "files", run: filesSection},
	{name: "outbound", run: outboundSection},
	{name: "secrets", run: secretsSection},
	{name: "restart", run: restartSection},
	{name: "events", run: eventsSection},
	{name: "install", run: installSection},
	{name: "rollout", run: rolloutSection},
}

func main() {
	os.Exit(doMain(os.Args[1:], os.Stderr))
}

func doMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	only := fs.String("only", "", "comma-separated sections to run (default all: "+names()+")")
	duration := fs.Duration("duration", 5*time.Second, "length of each load run (wrk -d)")
	rounds := fs.Int("rounds", 3, "rounds per measurement; the median is reported")
	out := fs.String("out", "bench/RESULTS.md", "results file; the sections run are replaced in place")
	jsonOut := fs.String("json", "", "also write every figure as JSON to this file (value, unit, peer, ratio, target, verdict); the sections run are replaced in place")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the bench process (in-process measurements) to this file")
	keep := fs.Bool("keep", false, "keep the scratch directory (binaries, data dirs, server logs)")
	baseline := fs.String("wasm-baseline", "", "a checkout of an older commit (git worktree add --detach /tmp/velo-old COMMIT) whose velo the wasmlimits section measures against")
	candidate := fs.String("wasm-candidate", "", "a checkout whose velo the wasmlimits section measures against -wasm-baseline (default: this one)")
	scaleN := fs.Int("scale-components", 1000, "components the scale section deploys (1000 to 10000)")
	skipChurn := fs.Bool("scale-skip-churn", false, "scale section: skip the churn part (for iterating on the others; write with -out elsewhere)")
	churnN := fs.Int("scale-churn", 2000, "deploys of one component the scale section's churn part makes (20 to 10000)")
	onlyChurn := fs.Bool("scale-only-churn", false, "scale section: run the churn part alone (write with -out elsewhere)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	selected, err := selectSections(*only)
	if err == nil && (*duration < time.Second || *duration > 10*time.Minute) {
		err = errors.New("-duration: want between 1s and 10m")
	}
	if err == nil && (*rounds < 1 || *rounds > 20) {
		err = errors.New("-rounds: want between 1 and 20")
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := newBench(*duration, *rounds, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	defer b.close(*keep)
	b.Baseline, b.Candidate = *baseline, *candidate
	b.ScaleComponents = min(max(*scaleN, 10), 10000)
	b.ScaleSkipChurn = *skipChurn
	b.ScaleChurn = min(max(*churnN, 2*churnKeep), 10000)
	b.ScaleOnlyChurn = *onlyChurn

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	bodies, figures, failed := b.runSections(ctx, selected)
	if len(bodies) > 0 {
		if err := writeResults(*out, b.header(), bodies, names()); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return 1
		}
		b.logf("wrote %s", *out)
		if *jsonOut != "" {
			if err := writeJSON(*jsonOut, figures, names()); err != nil {
				fmt.Fprintln(stderr, "bench:", err)
				return 1
			}
			b.logf("wrote %s", *jsonOut)
		}
	}
	if failed {
		return 1
	}
	return 0
}

// runSections runs the selected sections one after the other and returns
// the Markdown of those that succeeded, their figures for -json, and
// whether any failed. An interrupted run stops at the failing section.
func (b *Bench) runSections(ctx context.Context, selected []section) (map[string]string, []jsonSection, bool) {
	bodies := map[string]string{}
	var figures []jsonSection
	run := b.run()
	failed := false
	for _, s := range selected {
		b.logf("== section %s", s.name)
		start := time.Now()
		body, err := s.run(ctx, b)
		tables := b.takeTables()
		if err != nil {
			fmt.Fprintf(b.log, "bench: section %s: %v\n", s.name, err)
			failed = true
			if ctx.Err() != nil {
				break
			}
			continue
		}
		b.logf("== section %s done in %s", s.name, time.Since(start).Round(time.Second))
		bodies[s.name] = body
		figures = append(figures, sectionJSON(s.name, run, tables))
	}
	return bodies, figures, failed
}

func names() string {
	var ns []string
	for _, s := range sections {
		ns = append(ns, s.name)
	}
	return strings.Join(ns, ",")
}

func selectSections(only string) ([]section, error) {
	if only == "" {
		return sections, nil
	}
	var out []section
	for n := range strings.SplitSeq(only, ",") {
		n = strings.TrimSpace(n)
		i := slices.IndexFunc(sections, func(s section) bool { return s.name == n })
		if i < 0 {
			return nil, fmt.Errorf("-only: no section %q (have %s)", n, names())
		}
		out = append(out, sections[i])
	}
	return out, nil
}
