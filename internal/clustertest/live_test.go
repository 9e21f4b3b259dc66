package clustertest

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestLiveThroughStandby: with two deploymgrs, the one that does not
// schedule (the standby, whose API took the deploy) calls a deployment
// live only once both routers serve it, as the leader does; and a pause or
// resume through either API is answered once both routers act on it. Each
// round calls both routers the moment the API answered.
func TestLiveThroughStandby(t *testing.T) {
	c := New(t)
	leader := c.Start("deploymgr-1", "deploymgr")
	testsupport.Eventually(t, 30*time.Second, "deploymgr-1 leading", func() bool {
		return strings.Contains(leader.Out.String(), "leading: this deploymgr schedules")
	})
	standby := c.Start("deploymgr-2", "deploymgr")
	c.Start("worker", "worker", "--name", "w", "--data", t.TempDir())
	routers := []*Proc{c.Start("router-1", "router"), c.Start("router-2", "router")}
	first := c.Deploy(standby, "hello", "v0")

	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	// answers calls every router at once and returns what each answered:
	// the deployment, or the status and body.
	answers := func() []string {
		out := make([]string, len(routers))
		done := make(chan struct{}, len(routers))
		for i, rt := range routers {
			go func() {
				defer func() { done <- struct{}{} }()
				res, err := hc.Get(rt.URL + "/fn/hello/x")
				if err != nil {
					out[i] = rt.Name + ": " + err.Error()
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					out[i] = rt.Name + ": deployment " + res.Header.Get("X-Velo-Deployment")
				} else {
					out[i] = fmt.Sprintf("%s: %d %s", rt.Name, res.StatusCode, strings.TrimSpace(string(b)))
				}
			}()
		}
		for range routers {
			<-done
		}
		return out
	}
	all := func(want string) func() bool {
		return func() bool {
			for _, a := range answers() {
				if !strings.HasSuffix(a, want) {
					return false
				}
			}
			return true
		}
	}
	testsupport.Eventually(t, 30*time.Second, "both routers serving the first version", all(": deployment "+strconv.FormatInt(first, 10)))

	var stale []string
	check := func(round, want string) {
		for _, a := range answers() {
			if !strings.HasSuffix(a, want) {
				stale = append(stale, fmt.Sprintf("%s: %s, want …%s", round, a, want))
			}
		}
	}
	const rounds = 5
	for i := 1; i <= rounds; i++ {
		archive := archivetest.TarGz(t, map[string]string{
			"hello.wasm": string(HelloWasm(t)),
			"velo.toml":  fmt.Sprintf("name = \"hello\"\nruntime = \"wasm\"\nmodule = \"hello.wasm\"\n[env]\nGREETING = \"v%d\"\n", i),
		})
		d, err := c.Client(standby).Deploy(c.Ctx, "hello", strings.NewReader(string(archive)))
		if err != nil {
			t.Fatalf("deploy round %d: %v", i, err)
		}
		c.PollLive(standby, d.ID, fmt.Sprintf("round %d", i))
		check(fmt.Sprintf("round %d, deployment %d live per the standby", i, d.ID), ": deployment "+strconv.FormatInt(d.ID, 10))

		// Pause and resume, through the standby and the leader in turn.
		dm := []*Proc{standby, leader}[i%2]
		if _, err := c.Client(dm).Pause(c.Ctx, "hello"); err != nil {
			t.Fatalf("pause through %s: %v", dm.Name, err)
		}
		check(fmt.Sprintf("round %d, paused through %s", i, dm.Name), `: 503 component "hello" is paused`)
		if _, err := c.Client(dm).Resume(c.Ctx, "hello"); err != nil {
			t.Fatalf("resume through %s: %v", dm.Name, err)
		}
		check(fmt.Sprintf("round %d, resumed through %s", i, dm.Name), ": deployment "+strconv.FormatInt(d.ID, 10))
	}
	if len(stale) > 0 {
		t.Fatalf("%d of %d calls made as the API answered did not see the change:\n%s",
			len(stale), rounds*3*len(routers), strings.Join(stale, "\n"))
	}
}
