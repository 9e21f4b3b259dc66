package main

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/clustertest"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestEventsKillPostgres and TestEventsKillSQLite: velo up is killed (-9)
// while a queued call runs; started again on the same data, it retries
// the call (well before River's default hour for stuck jobs) and the call
// succeeds; a call accepted while it was up and not yet run is not lost
// either.
func TestEventsKillPostgres(t *testing.T) {
	t.Parallel()
	testEventsKill(t)
}

func TestEventsKillSQLite(t *testing.T) {
	t.Parallel()
	testEventsKill(t, "VELO_DATABASE_URL=")
}

func testEventsKill(t *testing.T, env ...string) {
	c := newCluster(t, env...)
	data, addr := t.TempDir(), clustertest.FreeAddr(t)
	up := c.StartAt("up", addr, "up", "--data", data)
	cl := client.New(up.URL, c.Admin, nil)
	toml := "name = \"flaky\"\nmodule = \"flaky.wasm\"\ntimeout = \"4s\"\n[events]\nmax_attempts = 5\nbackoff = \"100ms\"\nconcurrency = 1\n"
	files := map[string][]byte{"velo.toml": []byte(toml), "flaky.wasm": flakyWasm}
	if _, err := cl.Deploy(c.Ctx, "flaky", bytes.NewReader(archivetest.TarGz(t, files))); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 60*time.Second, "flaky live", func() bool {
		res, err := http.Get(up.URL + "/fn/flaky/up")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	post := func(path string) int64 {
		req, _ := http.NewRequest("POST", up.URL+path, strings.NewReader("payload"))
		req.Header.Set("Prefer", "respond-async")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		id, err := strconv.ParseInt(res.Header.Get("X-Velo-Invocation"), 10, 64)
		if res.StatusCode != 202 || err != nil {
			t.Fatalf("POST %s: %d", path, res.StatusCode)
		}
		return id
	}
	// A slow call (3 s of work), then one queued behind it (concurrency 1).
	slow := post("/fn/flaky/slow?ok=1&ms=3000")
	behind := post("/fn/flaky/behind?ok=1")
	testsupport.Eventually(t, 60*time.Second, "the slow call running", func() bool {
		inv, err := cl.Invocation(c.Ctx, slow)
		return err == nil && inv.State == "running"
	})
	up.Kill()

	killed := time.Now()
	up = c.StartAt("up again", addr, "up", "--data", data)
	var inv api.Invocation
	for _, id := range []int64{slow, behind} {
		testsupport.EventuallyShow(t, 90*time.Second, "the call succeeded after the restart", func() bool {
			var err error
			inv, err = cl.Invocation(c.Ctx, id)
			return err == nil && inv.State == "succeeded"
		}, func() string { return inv.State + " " + inv.LastError })
	}
	t.Logf("both calls succeeded %v after the kill", time.Since(killed).Round(100*time.Millisecond))
	inv, _ = cl.Invocation(c.Ctx, slow)
	if inv.Attempt < 2 || !strings.Contains(inv.Attempts[0].Error, "cut off") || inv.Answer == nil ||
		!strings.HasPrefix(string(inv.Answer.Body), "attempt="+strconv.Itoa(inv.Attempt)+" method=POST path=/slow body=payload") {
		t.Errorf("the killed call: %+v", inv)
	}
}
