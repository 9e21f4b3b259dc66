package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/velo-run/velo/internal/archive"
)

// Rollout section sizes.
const (
	rolloutConns       = 32    // connections of load during the redeploys
	rolloutCanaryCalls = 10000 // calls per round of the canary share
	rolloutCanaryShare = 10    // percent
)

// rolloutSection measures health-gated redeploys under load and a canary's
// share. A `velo up` process (embedded SQLite) serves two components of
// the same C module (cmd/velo/testdata/rollout.c): "plain" without a
// health check and "gated" with health = "/healthz". Under 32 connections
// of load on both, each round redeploys plain, gated, and gated with a
// check that fails (it answers 503): the failed calls (any answer but 200)
// are counted over all of it, and push → live (upload start until the API
// says live) is compared with and without the gate. Then a canary at 10 %
// takes 10 000 calls per round, counted by X-Velo-Deployment.
func rolloutSection(ctx context.Context, b *Bench) (string, error) {
	v, err := b.StartVeloProc(ctx, "velo-rollout")
	if err != nil {
		return "", err
	}
	defer v.Close()
	module, err := os.ReadFile(filepath.Join(b.Root, "cmd", "velo", "testdata", "rollout.wasm"))
	if err != nil {
		return "", err
	}
	seq := 0
	deploy := func(name, extra, env string, canary int) (int64, time.Duration, error) {
		seq++
		dir := filepath.Join(b.Tmp, "rollout", fmt.Sprintf("%s-%d", name, seq))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, 0, err
		}
		toml := fmt.Sprintf("name = %q\nmodule = \"rollout.wasm\"\n%s\n[env]\nVERSION = \"%s-%d\"\n%s\n", name, extra, name, seq, env)
		if err := os.WriteFile(filepath.Join(dir, "velo.toml"), []byte(toml), 0o644); err != nil {
			return 0, 0, err
		}
		if err := os.WriteFile(filepath.Join(dir, "rollout.wasm"), module, 0o644); err != nil {
			return 0, 0, err
		}
		var buf bytes.Buffer
		if err := archive.Pack(&buf, dir, "rollout.wasm"); err != nil {
			return 0, 0, err
		}
		start := time.Now()
		var d struct{ ID int64 }
		if canary > 0 {
			dep, err := v.Client.DeployCanary(ctx, name, &buf, canary)
			if err != nil {
				return 0, 0, err
			}
			d.ID = dep.ID
		} else {
			dep, err := v.Client.Deploy(ctx, name, &buf)
			if err != nil {
				return 0, 0, err
			}
			d.ID = dep.ID
		}
		for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
			got, err := v.Client.Deployment(ctx, d.ID)
			if err != nil {
				return 0, 0, err
			}
			switch {
			case got.Status == "failed":
				return d.ID, time.Since(start), fmt.Errorf("deployment %d failed: %s", d.ID, got.Error)
			case got.Status == "ready" && (got.Live || canary > 0):
				return d.ID, time.Since(start), nil
			}
			select {
			case <-ctx.Done():
				return 0, 0, ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
		return 0, 0, fmt.Errorf("deployment %d not live after 2 minutes", d.ID)
	}
	const gate = `health = "/healthz"`
	if _, _, err := deploy("plain", "", "", 0); err != nil {
		return "", err
	}
	if _, _, err := deploy("gated", gate, "", 0); err != nil {
		return "", err
	}

	// Load on both components until stop, counting what fails.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: rolloutConns, DisableCompression: true}}
	defer client.CloseIdleConnections()
	var calls, failed atomic.Int64
	var failMu sync.Mutex
	fails := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range rolloutConns {
		url := v.URL + "/fn/plain/"
		if i%2 == 1 {
			url = v.URL + "/fn/gated/"
		}
		wg.Go(func() {
			for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); {
				select {
				case <-stop:
					return
				default:
				}
				res, err := client.Get(url)
				what := ""
				if err != nil {
					what = "error"
				} else {
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						what = strconv.Itoa(res.StatusCode)
					}
				}
				calls.Add(1)
				if what != "" {
					failed.Add(1)
					failMu.Lock()
					fails[what]++
					failMu.Unlock()
				}
			}
		})
	}
	var plain, gated []time.Duration
	refused := 0
	redeploys := 3 * b.Rounds // push → live is noisy on a shared machine
	for round := 1; round <= redeploys && err == nil; round++ {
		var d time.Duration
		if _, d, err = deploy("plain", "", "", 0); err != nil {
			break
		}
		plain = append(plain, d)
		if _, d, err = deploy("gated", gate, "", 0); err != nil {
			break
		}
		gated = append(gated, d)
		if round > b.Rounds {
			continue
		}
		_, _, ferr := deploy("gated", "[health]\npath = \"/healthz\"\ntimeout = \"1s\"", `HEALTH = "503"`, 0)
		switch {
		case ferr == nil:
			err = fmt.Errorf("a deployment whose health check fails went live")
		case strings.Contains(ferr.Error(), "health check GET /healthz"):
			refused++
		default:
			err = ferr
		}
		b.logf("rollout round %d: push→live plain %v, gated %v; %d calls, %d failed", round, plain[len(plain)-1], gated[len(gated)-1], calls.Load(), failed.Load())
	}
	close(stop)
	wg.Wait()
	if err != nil {
		return "", err
	}

	// The canary's share.
	if _, _, err := deploy("split", "", "", 0); err != nil {
		return "", err
	}
	canaryID, _, err := deploy("split", "", "", rolloutCanaryShare)
	if err != nil {
		return "", err
	}
	var shares []float64
	for round := 1; round <= b.Rounds; round++ {
		var n, to atomic.Int64
		var cwg sync.WaitGroup
		want := strconv.FormatInt(canaryID, 10)
		for range rolloutConns {
			cwg.Go(func() {
				for n.Add(1) <= rolloutCanaryCalls {
					res, err := client.Get(v.URL + "/fn/split/")
					if err != nil {
						continue
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.Header.Get("X-Velo-Deployment") == want {
						to.Add(1)
					}
				}
			})
		}
		cwg.Wait()
		shares = append(shares, 100*float64(to.Load())/rolloutCanaryCalls)
	}

	added := median(gated) - median(plain)
	what := []string{}
	for s, n := range fails {
		what = append(what, fmt.Sprintf("%d × %s", n, s))
	}
	t := b.newTable("")
	t.add(fmt.Sprintf("failed calls during %d redeploys without and %d with the gate, %d refused by a failing check (%d connections)", len(plain), len(gated), refused, rolloutConns),
		fmt.Sprintf("%d of %d", failed.Load(), calls.Load()), "—", strings.Join(what, ", "), "0", verdict(failed.Load() == 0))
	t.add("failing health check: deployments refused, previous version serving", fmt.Sprintf("%d of %d", refused, b.Rounds), "—", "", fmt.Sprint(b.Rounds), verdict(refused == b.Rounds))
	t.add("push → live p50, with the health gate (peer: without)", fmtDur(median(gated)), fmtDur(median(plain)),
		fmt.Sprintf("%s added; rounds gated %s, plain %s", fmtDiff(added), joinDurs(gated), joinDurs(plain)), "≤ +50 ms", verdict(added <= 50*time.Millisecond))
	sharesText := make([]string, len(shares))
	worst := 0.0
	for i, s := range shares {
		sharesText[i] = strconv.FormatFloat(s, 'f', 2, 64) + " %"
		worst = max(worst, abs(s-rolloutCanaryShare))
	}
	t.add(fmt.Sprintf("canary share at weight %d over %d calls (%d connections)", rolloutCanaryShare, rolloutCanaryCalls, rolloutConns),
		sharesText[len(shares)/2], "—", fmt.Sprintf("+%.2f %% off %d %% in the worst round; rounds %s", worst, rolloutCanaryShare, strings.Join(sharesText, ", ")),
		"≤ +1.5 % off 10 %", verdict(worst <= 1.5))

	var sb strings.Builder
	sb.WriteString("## rollout — health-gated redeploys under load, and a canary's share\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	fmt.Fprintf(&sb, "`velo up` (a separate process, embedded SQLite) serves two components of the C module `cmd/velo/testdata/rollout.c`: `plain` without a health check and `gated` with `health = \"/healthz\"`. Under %d connections of load (half on each, keep-alive), each of %d rounds redeploys `plain`, then `gated`, and the first %d rounds then `gated` with a check that answers 503 (timeout 1 s): every answer but 200 counts as failed, over all of it. Push → live is from the upload's start until `GET /deployments/{id}` says ready and live (polled every 2 ms), with the gate against without, in the same rounds. Then a canary (`?canary=%d`) of a third component takes %d calls per round on %d connections, counted by `X-Velo-Deployment`. No peer for the failures and the share: the targets are absolute.\n\n",
		rolloutConns, redeploys, b.Rounds, rolloutCanaryShare, rolloutCanaryCalls, rolloutConns)
	sb.WriteString(t.String())
	return sb.String(), nil
}

func joinDurs(ds []time.Duration) string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = fmtDur(d)
	}
	return strings.Join(out, ", ")
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
