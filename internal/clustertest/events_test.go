package clustertest

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/testsupport"
)

// outboundWasm is the wasi_experimental_http test module of worker/wasm:
// it calls the URL in the request's X-Url header and prints the answer
// ("status=200", …).
func outboundWasm(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "worker", "wasm", "testdata", "outbound-c.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// holds is a backend that the component calls while it runs: it counts
// the calls in it at once, so the count is the component's concurrency.
type holds struct {
	mu         sync.Mutex
	cur, peak  int
	done       int
	after      time.Time // when set, calls that start later are counted apart
	curAfter   int
	peakAfter  int
	hold       time.Duration
	release    chan struct{} // when non-nil, calls wait for it (at most 60s)
	releaseOne sync.Once
}

func (h *holds) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	late := !h.after.IsZero()
	h.cur++
	h.peak = max(h.peak, h.cur)
	if late {
		h.curAfter++
		h.peakAfter = max(h.peakAfter, h.curAfter)
	}
	release := h.release
	h.mu.Unlock()
	select {
	case <-time.After(h.hold):
	case <-r.Context().Done():
	}
	if release != nil {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(60 * time.Second):
		}
	}
	h.mu.Lock()
	h.cur--
	h.done++
	if late {
		h.curAfter--
	}
	h.mu.Unlock()
	w.Write([]byte("held\n"))
}

func (h *holds) state() (cur, peak, done, peakAfter int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur, h.peak, h.done, h.peakAfter
}

// postAsync queues a call of path on router rt and returns its invocation.
func postAsync(t *testing.T, hc *http.Client, rt *Proc, path string, header map[string]string) int64 {
	t.Helper()
	req, err := http.NewRequest("POST", rt.URL+path, strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Prefer", "respond-async")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s to %s: %v", path, rt.Name, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	id, err := strconv.ParseInt(res.Header.Get("X-Velo-Invocation"), 10, 64)
	if res.StatusCode != http.StatusAccepted || err != nil {
		t.Fatalf("POST %s to %s: %d, invocation %q", path, rt.Name, res.StatusCode, res.Header.Get("X-Velo-Invocation"))
	}
	return id
}

// waitServing waits until router rt answers a direct call of name.
func waitServing(t *testing.T, hc *http.Client, rt *Proc, name string) {
	t.Helper()
	testsupport.Eventually(t, 60*time.Second, rt.Name+" serving "+name, func() bool {
		res, err := hc.Get(rt.URL + "/fn/" + name + "/")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
}

// routed is router rt's count of calls of component name (its /metrics).
func (c *Cluster) routed(rt *Proc, name string) int {
	req, _ := http.NewRequest("GET", rt.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+c.Admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	prefix := `velo_router_requests_total{component="` + name + `"} `
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return 0
}

// succeeded waits until every invocation in ids succeeded and returns
// them as the API has them.
func (c *Cluster) succeeded(dm *Proc, ids []int64, within time.Duration) []api.Invocation {
	c.T.Helper()
	out := make([]api.Invocation, len(ids))
	var last string
	testsupport.EventuallyShow(c.T, within, fmt.Sprintf("all %d calls succeeded", len(ids)), func() bool {
		states := map[string]int{}
		for i, id := range ids {
			if out[i].State == "succeeded" {
				states["succeeded"]++
				continue
			}
			inv, err := c.Client(dm).Invocation(c.Ctx, id)
			if err != nil {
				states["error: "+err.Error()]++
				continue
			}
			out[i] = inv
			states[inv.State]++
		}
		last = fmt.Sprint(states)
		return states["succeeded"] == len(ids)
	}, func() string { return last })
	return out
}

// TestEventsConcurrencyAcrossExecutors: two routers (the executors, separate
// processes on one Postgres) work the queue of a component with [events]
// concurrency = 2 holding 60 calls; each call holds a request to the
// test's backend for 300 ms, which counts how many are in it at once:
// never more than 2, though each router alone would run 2. Then one
// router is killed (-9) with its lease on a slot: once the lease expires
// the other runs 2 at once again, and every accepted call succeeds.
func TestEventsConcurrencyAcrossExecutors(t *testing.T) {
	h := &holds{hold: 300 * time.Millisecond}
	backend := httptest.NewServer(h)
	defer backend.Close()

	c := New(t)
	dm := c.Start("deploymgr", "deploymgr")
	c.Start("worker", "worker", "--name", "w", "--data", t.TempDir())
	r1, r2 := c.Start("router-1", "router"), c.Start("router-2", "router")
	toml := fmt.Sprintf("name = \"conc\"\nmodule = \"outbound.wasm\"\ntimeout = \"5s\"\nallowed_hosts = [%q]\n"+
		"[events]\nconcurrency = 2\nbackoff = \"200ms\"\n", backend.URL)
	c.DeployFiles(dm, "conc", map[string][]byte{"velo.toml": []byte(toml), "outbound.wasm": outboundWasm(t)})
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	for _, rt := range []*Proc{r1, r2} {
		waitServing(t, hc, rt, "conc")
	}
	before := []int{c.routed(r1, "conc"), c.routed(r2, "conc")}

	const calls = 60
	hdr := map[string]string{"X-Url": backend.URL + "/hold"}
	var ids []int64
	for i := range calls {
		rt := r1
		if i%2 == 1 {
			rt = r2
		}
		ids = append(ids, postAsync(t, hc, rt, "/fn/conc/call", hdr))
	}
	// Both routers run calls (each counts the calls it routes), and the
	// backlog is not through yet.
	testsupport.EventuallyShow(t, 60*time.Second, "both routers running calls", func() bool {
		return c.routed(r1, "conc") > before[0]+2 && c.routed(r2, "conc") > before[1]+2
	}, func() string {
		return fmt.Sprintf("router-1 routed %d, router-2 %d (before: %v)", c.routed(r1, "conc"), c.routed(r2, "conc"), before)
	})
	if _, _, done, _ := h.state(); done > calls-30 {
		t.Fatalf("%d of %d calls done before the kill: too few left to see the slots come back", done, calls)
	}
	r1.Kill()
	h.mu.Lock()
	h.after = time.Now()
	h.mu.Unlock()

	invs := c.succeeded(dm, ids, 120*time.Second)
	for i, inv := range invs {
		if inv.Answer == nil || !strings.Contains(string(inv.Answer.Body), "status=200") {
			t.Errorf("call %d: its answer did not come through the backend: %+v", ids[i], inv.Answer)
		}
	}
	_, peak, done, peakAfter := h.state()
	t.Logf("%d calls through the backend (%d accepted; at least once), at most %d at once; after router-1's kill at most %d at once",
		done, calls, peak, peakAfter)
	if peak > 2 {
		t.Errorf("the backend saw %d calls of the component at once; [events] concurrency is 2 across the cluster", peak)
	}
	if peakAfter < 2 {
		t.Errorf("after router-1 was killed the other ran at most %d call at once: the dead router's slot never came back", peakAfter)
	}
}

// TestEventsWorkerKilledMidCall: calls queued for a component placed on
// two workers run through the router, two on each worker, each held at
// the test's backend; worker a is killed (-9) with its two mid-call. Every
// accepted call succeeds — those cut off on another attempt, on worker b
// — and the cut-off attempt is recorded with its error.
func TestEventsWorkerKilledMidCall(t *testing.T) {
	h := &holds{release: make(chan struct{})}
	backend := httptest.NewServer(h)
	defer backend.Close()
	defer h.releaseOne.Do(func() { close(h.release) })

	c := New(t, "VELO_WORKER_TIMEOUT=3s", "VELO_WASM_REPLICAS=2")
	dm := c.Start("deploymgr", "deploymgr")
	wa := c.Start("worker-a", "worker", "--name", "a", "--data", t.TempDir())
	c.Start("worker-b", "worker", "--name", "b", "--data", t.TempDir())
	rt := c.Start("router", "router")
	toml := fmt.Sprintf("name = \"mid\"\nmodule = \"outbound.wasm\"\ntimeout = \"20s\"\nallowed_hosts = [%q]\n"+
		"[events]\nconcurrency = 4\nmax_attempts = 5\nbackoff = \"200ms\"\n", backend.URL)
	c.DeployFiles(dm, "mid", map[string][]byte{"velo.toml": []byte(toml), "outbound.wasm": outboundWasm(t)})
	testsupport.Eventually(t, 60*time.Second, "mid ready on a and b", func() bool {
		ws, err := c.ReadyOn(dm, "mid")
		return err == nil && strings.Join(ws, ",") == "a,b"
	})
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	waitServing(t, hc, rt, "mid")
	testsupport.Eventually(t, 30*time.Second, "the router sending calls to both workers", func() bool {
		seen := map[string]bool{}
		for range 4 {
			res, err := hc.Get(rt.URL + "/fn/mid/")
			if err != nil {
				return false
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			seen[res.Header.Get("X-Velo-Worker")] = true
		}
		return seen["a"] && seen["b"]
	})

	// POST: not idempotent, so a call cut off mid-way is not resent by
	// the router itself; the queue has to retry it.
	const calls = 12
	hdr := map[string]string{"X-Url": backend.URL + "/hold"}
	var ids []int64
	for range calls {
		ids = append(ids, postAsync(t, hc, rt, "/fn/mid/work", hdr))
	}
	// Four calls (the concurrency) in the component, two per worker
	// (round-robin), all held at the backend.
	testsupport.EventuallyShow(t, 60*time.Second, "4 calls in the component at once", func() bool {
		cur, _, _, _ := h.state()
		return cur == 4
	}, func() string { cur, _, done, _ := h.state(); return fmt.Sprintf("%d in, %d done", cur, done) })
	wa.Kill()
	h.releaseOne.Do(func() { close(h.release) })

	invs := c.succeeded(dm, ids, 120*time.Second)
	var cut []string
	for i, inv := range invs {
		if inv.Answer == nil || !strings.Contains(string(inv.Answer.Body), "status=200") {
			t.Errorf("call %d: its answer did not come through the backend: %+v", ids[i], inv.Answer)
			continue
		}
		if len(inv.Attempts) == 0 || len(inv.Attempts) != inv.Attempt {
			t.Errorf("call %d: %d attempts made, %d recorded", ids[i], inv.Attempt, len(inv.Attempts))
			continue
		}
		if inv.Attempt == 1 {
			continue
		}
		first := inv.Attempts[0]
		if first.Error == "" || first.Status < 500 {
			t.Errorf("call %d took %d attempts but its first is not recorded as failed: %+v", ids[i], inv.Attempt, first)
		}
		if w := inv.Answer.Headers["X-Velo-Worker"]; len(w) != 1 || w[0] != "b" {
			t.Errorf("call %d: retried after worker a died, answered by %v", ids[i], w)
		}
		cut = append(cut, fmt.Sprintf("%d (%d attempts; first: %d %s)", ids[i], inv.Attempt, first.Status, first.Error))
	}
	if len(cut) == 0 {
		t.Fatal("no call was cut off by the kill of worker a: the test saw nothing")
	}
	t.Logf("%d of %d calls were cut off mid-call by the kill of worker a and succeeded on b: %s", len(cut), calls, strings.Join(cut, "; "))
}
