package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestRestartServesAtOnce restarts velo up with components deployed in its
// data dir and calls every one of them the moment node.Start returns (the
// listener is open): each call is answered by its component — none 404
// "no component named" (the route table not loaded yet) and none 503 "no
// healthy instance" (the module not prepared again yet); calls wait for
// the preparation under way instead. The router's own 503s (a paused
// component) are counted in the statistics like any answer.
func TestRestartServesAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	const n = 12
	name := func(i int) string { return fmt.Sprintf("r%02d", i) }
	for i := range n {
		toml := fmt.Sprintf("name = %q\nmodule = \"secretenv.wasm\"\n[env]\nPLAIN = %q\n", name(i), name(i))
		if _, err := c.Deploy(ctx, name(i), bytes.NewReader(archivetest.TarGz(t, vaultFiles(toml)))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		testsupport.Eventually(t, 15*time.Second, name(i)+" live", func() bool { res, _ := s.get("/fn/" + name(i) + "/get?PLAIN"); return res.StatusCode == 200 })
	}

	for round := range 2 {
		s.n.Close()
		s.start()
		url := s.n.URL
		var wg sync.WaitGroup
		answers := make([]string, 2*n)
		for i := range 2 * n {
			wg.Go(func() {
				res, err := http.Get(url + "/fn/" + name(i%n) + "/get?PLAIN")
				if err != nil {
					answers[i] = err.Error()
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				answers[i] = fmt.Sprintf("%d %s", res.StatusCode, b)
			})
		}
		wg.Wait()
		bad := 0
		for i, a := range answers {
			if want := "200 " + name(i%n); a != want {
				bad++
				t.Errorf("restart %d: %s answered %q, want %q", round+1, name(i%n), a, want)
			}
		}
		if bad > 0 {
			t.Fatalf("restart %d: %d of %d first calls not served by their component", round+1, bad, len(answers))
		}
	}

	// A 503 of the router's own is a hit and an error in the statistics.
	c = client.New(s.n.URL, s.n.Token, nil)
	s.velo(0, "pause", name(0))
	for range 3 {
		if res, _ := s.get("/fn/" + name(0) + "/get?PLAIN"); res.StatusCode != 503 {
			t.Fatalf("paused %s answered %d", name(0), res.StatusCode)
		}
	}
	testsupport.Eventually(t, 15*time.Second, "the paused component's 503s in its stats", func() bool {
		st, err := c.Stats(ctx, name(0), "1h")
		return err == nil && st.Errors >= 3
	})
}
