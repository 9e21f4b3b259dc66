package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/wasm"
)

// outboundSection measures an outbound HTTP call made by a WASM component
// (wasi_experimental_http) against the same call made by a native Go
// http.Client, both to one local server.
func outboundSection(ctx context.Context, b *Bench) (string, error) {
	const warm, n, block = 200, 2000, 50
	body := strings.Repeat("x", 256)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	origin := "http://" + ln.Addr().String()

	rt, err := wasm.New(wasm.Config{})
	if err != nil {
		return "", err
	}
	defer rt.Close(context.Background())
	prep := func(env map[string]string) (worker.Instance, error) {
		return rt.Prepare(ctx, worker.Spec{
			Component: "outbound", Dir: filepath.Join(b.Root, "bench", "testdata"),
			Manifest: manifest.Manifest{Name: "outbound", Runtime: manifest.WASM, Module: "outbound.wasm",
				Timeout: 10 * time.Second, Memory: 16 << 20, Env: env, AllowedHosts: []string{origin}},
		})
	}
	withCall, err := prep(map[string]string{"TARGET": origin + "/x"})
	if err != nil {
		return "", err
	}
	defer withCall.Close(context.Background())
	noCall, err := prep(map[string]string{"TARGET": origin + "/x", "NOCALL": "1"})
	if err != nil {
		return "", err
	}
	defer noCall.Close(context.Background())

	// The native peer: its own client, tuned as Velo's transport is.
	native := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}
	nativeCall := func() (time.Duration, error) {
		start := time.Now()
		res, err := native.Get(origin + "/x")
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 {
			return 0, fmt.Errorf("native call: %d %v", res.StatusCode, err)
		}
		return time.Since(start), nil
	}
	// wasmCall runs one request; it returns the whole request's time and
	// the call's as the module timed it.
	wasmCall := func(in worker.Instance) (total, call time.Duration, err error) {
		r := httptest.NewRequest("GET", "/fn/outbound/", nil)
		w := httptest.NewRecorder()
		start := time.Now()
		in.Serve(w, r, "/fn/outbound")
		total = time.Since(start)
		out := w.Body.String()
		i := strings.Index(out, "ns=")
		if w.Code != 200 || i < 0 {
			return 0, 0, fmt.Errorf("wasm call: %d %q", w.Code, out)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(out[i+3:]), 10, 64)
		return total, time.Duration(ns), err
	}

	type round struct{ native, inModule, withCall, noCall []time.Duration }
	var rounds []round
	for r := 0; r < b.Rounds; r++ {
		var rd round
		for i := 0; i < warm; i++ {
			if _, err := nativeCall(); err != nil {
				return "", err
			}
			if _, _, err := wasmCall(withCall); err != nil {
				return "", err
			}
			if _, _, err := wasmCall(noCall); err != nil {
				return "", err
			}
		}
		for done := 0; done < n; done += block {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			// The order of the variants rotates every block.
			for v := 0; v < 3; v++ {
				switch (v + done/block) % 3 {
				case 0:
					for i := 0; i < block; i++ {
						d, err := nativeCall()
						if err != nil {
							return "", err
						}
						rd.native = append(rd.native, d)
					}
				case 1:
					for i := 0; i < block; i++ {
						total, call, err := wasmCall(withCall)
						if err != nil {
							return "", err
						}
						rd.withCall, rd.inModule = append(rd.withCall, total), append(rd.inModule, call)
					}
				case 2:
					for i := 0; i < block; i++ {
						total, _, err := wasmCall(noCall)
						if err != nil {
							return "", err
						}
						rd.noCall = append(rd.noCall, total)
					}
				}
			}
		}
		rounds = append(rounds, rd)
		b.logf("outbound round %d: native p50 %s, in-module call p50 %s, request with call %s, without %s", r+1,
			fmtDur(percentile(rd.native, 50)), fmtDur(percentile(rd.inModule, 50)),
			fmtDur(percentile(rd.withCall, 50)), fmtDur(percentile(rd.noCall, 50)))
	}

	per := func(f func(round) time.Duration) []time.Duration {
		out := make([]time.Duration, len(rounds))
		for i, rd := range rounds {
			out[i] = f(rd)
		}
		return out
	}
	p := func(s func(round) []time.Duration, q float64) func(round) time.Duration {
		return func(rd round) time.Duration { return percentile(s(rd), q) }
	}
	nat := func(rd round) []time.Duration { return rd.native }
	inMod := func(rd round) []time.Duration { return rd.inModule }
	with := func(rd round) []time.Duration { return rd.withCall }
	without := func(rd round) []time.Duration { return rd.noCall }
	added := per(func(rd round) time.Duration { return percentile(rd.inModule, 50) - percentile(rd.native, 50) })
	addedReq := per(func(rd round) time.Duration {
		return percentile(rd.withCall, 50) - percentile(rd.noCall, 50) - percentile(rd.native, 50)
	})
	spread := func(ds []time.Duration) string {
		lo, hi := ds[0], ds[0]
		for _, d := range ds {
			lo, hi = min(lo, d), max(hi, d)
		}
		return fmtDiff(lo) + " to " + fmtDiff(hi)
	}

	t := b.newTable("")
	natP50, natP99 := median(per(p(nat, 50))), median(per(p(nat, 99)))
	t.add("call p50, timed in the module vs native", fmtDur(median(per(p(inMod, 50)))), fmtDur(natP50),
		fmtDiff(median(added)), "≤ native + 100 µs", verdict(median(added) <= 100*time.Microsecond))
	t.add("call p99, timed in the module vs native", fmtDur(median(per(p(inMod, 99)))), fmtDur(natP99),
		fmtDiff(median(per(p(inMod, 99)))-natP99), "", info)
	t.add("whole request with the call minus without, p50 vs native", fmtDur(median(per(p(with, 50)))-median(per(p(without, 50)))),
		fmtDur(natP50), fmtDiff(median(addedReq)), "", info)
	t.add("whole request without the call (instance, CGI), p50", fmtDur(median(per(p(without, 50)))), "", "", "", info)

	var s strings.Builder
	fmt.Fprintf(&s, "## outbound — an HTTP call from a WASM component vs the same call from native Go\n\n")
	fmt.Fprintf(&s, "%s\n\n", b.Stamp())
	fmt.Fprintf(&s, "Module: `bench/testdata/outbound.c` (clang -O2 + wasi-libc): one `GET` through `wasi_experimental_http` "+
		"(`req`, `body_read` until the end, `close`) to a local `net/http` server answering 256 bytes, timed inside the module "+
		"with `CLOCK_MONOTONIC` around those three calls and printed; with `NOCALL` set it answers without calling. "+
		"It runs in `worker/wasm` in the bench process (`Runtime.Prepare`, `Instance.Serve`; no router), "+
		"`allowed_hosts` naming the server's `http://127.0.0.1:PORT`.\n\n")
	fmt.Fprintf(&s, "Peer: a native Go `http.Client` (its own keep-alive `http.Transport`, compression off as Velo's) making the same `GET` and reading the body.\n\n")
	fmt.Fprintf(&s, "How it was measured: per round %d warm-up then %d timed calls of each variant (native, WASM with the call, WASM without), "+
		"interleaved in blocks of %d, the order rotating every block; %d rounds. The table shows the median over rounds of each "+
		"round's percentile; *Velo vs peer* is the median of the per-round differences.\n\n", warm, n, block, b.Rounds)
	s.WriteString(t.String())
	fmt.Fprintf(&s, "\nPer round — call p50 in the module / native: %s; added p50 ranged %s over the rounds "+
		"(whole request with minus without the call, minus native: %s).\n",
		pairs(durFloats(per(p(inMod, 50))), durFloats(per(p(nat, 50))), func(f float64) string { return fmtDur(time.Duration(f)) }),
		spread(added), spread(addedReq))
	return s.String(), nil
}
