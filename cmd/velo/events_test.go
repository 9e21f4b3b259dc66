package main

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/internal/testsupport/testmods"
)

// flakyWasm answers 503 to a queued call until its attempt reaches ?ok=N.
var flakyWasm = testmods.Flaky

// TestEventsCLI: velo events lists a component's queued calls, --dead the
// dead ones; velo status counts them; replay runs one again, discard drops
// it.
func TestEventsCLI(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	toml := "name = \"flaky\"\nmodule = \"flaky.wasm\"\n[events]\nmax_attempts = 2\nbackoff = \"20ms\"\n"
	files := map[string][]byte{"velo.toml": []byte(toml), "flaky.wasm": flakyWasm}
	if _, err := c.Deploy(ctx, "flaky", bytes.NewReader(archivetest.TarGz(t, files))); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "flaky live", func() bool { res, _ := s.get("/fn/flaky/up"); return res.StatusCode == 200 })

	post := func(path string) string {
		req, _ := http.NewRequest("POST", s.n.URL+path, strings.NewReader("{}"))
		req.Header.Set("Prefer", "respond-async")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 202 {
			t.Fatalf("POST %s: %d", path, res.StatusCode)
		}
		return res.Header.Get("X-Velo-Invocation")
	}
	good, bad := post("/fn/flaky/good?ok=1"), post("/fn/flaky/bad")
	testsupport.EventuallyShow(t, 60*time.Second, "one dead call", func() bool {
		return strings.Contains(s.velo(0, "events", "flaky", "--dead"), bad+" ")
	}, func() string { return s.velo(0, "events", "flaky") })
	out := s.velo(0, "events", "flaky")
	if !regexp.MustCompile(bad+` +dead +async +POST /fn/flaky/bad +2/2 +HTTP 503`).MatchString(out) ||
		!regexp.MustCompile(good+` +succeeded +async +POST /fn/flaky/good +1/2 +ok`).MatchString(out) {
		t.Errorf("velo events flaky:\n%s", out)
	}
	if out := s.velo(0, "events", "flaky", "--dead"); strings.Contains(out, good+" ") {
		t.Errorf("--dead lists the succeeded call:\n%s", out)
	}
	if out := s.velo(0, "status", "flaky"); !strings.Contains(out, "0 queued, 0 running, 1 dead") {
		t.Errorf("velo status:\n%s", out)
	}
	if out := s.velo(0, "events", "replay", bad); !strings.Contains(out, "replaying invocation "+bad) {
		t.Errorf("replay: %s", out)
	}
	testsupport.Eventually(t, 60*time.Second, "the replay's third attempt", func() bool {
		return regexp.MustCompile(bad + ` +dead .* 3/3`).MatchString(s.velo(0, "events", "flaky", "--dead"))
	})
	s.velo(0, "events", "discard", bad)
	if out := s.velo(0, "events", "flaky", "--dead"); !strings.Contains(out, "no dead calls queued for flaky") {
		t.Errorf("after discard: %s", out)
	}
	if out := s.velo(1, "events", "discard", bad); !strings.Contains(out, "no such invocation") {
		t.Errorf("discarding again: %s", out)
	}
	s.velo(1, "events", "replay", "nope")
}
