package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what the benchmark reads from wrk's output.
type wrkResult struct {
	rps          float64
	requests     int64
	p50, p99     time.Duration
	non2xx       int64
	socketErrors int64
	// wrkCPU is the CPU time wrk itself used; machineBusy the CPU time
	// the whole machine was busy (all processes) during the run.
	wrkCPU, machineBusy time.Duration
	wall                time.Duration // how long wrk ran
}

// Wrk runs `wrk -t threads -c conns -d duration --latency url` and parses
// its report. It fails if wrk saw no requests; errors and non-2xx answers
// are in the result for the caller to judge.
func (b *Bench) Wrk(ctx context.Context, url string, threads, conns int, d time.Duration) (wrkResult, error) {
	return b.WrkHeaders(ctx, url, threads, conns, d)
}

// WrkHeaders is Wrk with request headers ("Name: value") on every call.
func (b *Bench) WrkHeaders(ctx context.Context, url string, threads, conns int, d time.Duration, headers ...string) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	args := []string{"-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns),
		"-d" + strconv.Itoa(int(d.Round(time.Second)/time.Second)) + "s", "--timeout", "10s", "--latency"}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	cmd := exec.CommandContext(ctx, "wrk", append(args, url)...)
	busy, start := machineBusy(), time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %v\n%s", url, err, out)
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, fmt.Errorf("wrk %s: %v\n%s", url, err, out)
	}
	r.machineBusy = machineBusy() - busy
	r.wall = wall
	r.wrkCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var err error
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			r.rps, err = strconv.ParseFloat(f[1], 64)
		case len(f) == 2 && f[0] == "50%":
			r.p50, err = parseWrkDuration(f[1])
		case len(f) == 2 && f[0] == "99%":
			r.p99, err = parseWrkDuration(f[1])
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.requests, err = strconv.ParseInt(f[0], 10, 64)
		case len(f) == 5 && f[0] == "Non-2xx":
			r.non2xx, err = strconv.ParseInt(f[4], 10, 64)
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			for i := 2; i+1 < len(f); i += 2 {
				n, perr := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				if perr != nil {
					err = perr
				}
				r.socketErrors += n
			}
		}
		if err != nil {
			return r, fmt.Errorf("parse %q: %w", sc.Text(), err)
		}
	}
	if r.requests == 0 || r.rps == 0 {
		return r, fmt.Errorf("no requests completed")
	}
	return r, nil
}

// parseWrkDuration reads wrk's "812.00us", "5.50ms", "1.02s", "2.00m".
func parseWrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"m", time.Minute}, {"s", time.Second}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("unknown duration %q", s)
}

// machineBusy is the CPU time all CPUs have spent not idle since boot, from
// /proc/stat; 0 if it cannot be read.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	const hz = 100 // USER_HZ
	return time.Duration(busy) * time.Second / hz
}
