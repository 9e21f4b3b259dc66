package webui_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestCanaryOnComponentPage: the component page names the canary and its
// share, and shows the live deployment's and the canary's traffic side by
// side.
func TestCanaryOnComponentPage(t *testing.T) {
	v := startVelo(t, nil)
	live := v.deploy("echo", echoFiles(map[string]string{"V": "1"}))
	d, err := v.c.DeployCanary(v.ctx, "echo", bytes.NewReader(archivetest.TarGz(t, echoFiles(map[string]string{"V": "2"}))), 30)
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "the canary ready", func() bool {
		got, err := v.c.Deployment(v.ctx, d.ID)
		return err == nil && got.Status == "ready"
	})
	seen := map[string]bool{}
	for range 20 {
		res, err := http.Get(v.n.URL + "/fn/echo/env")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		seen[res.Header.Get("X-Velo-Deployment")] = true
	}
	if !seen[fmt.Sprint(d.ID)] || !seen[fmt.Sprint(live.ID)] {
		t.Fatalf("calls answered by %v, want both #%d and #%d", seen, live.ID, d.ID)
	}
	b := v.browser()
	b.signInAdmin()
	var body string
	testsupport.EventuallyShow(t, 30*time.Second, "both deployments' traffic on the page", func() bool {
		var code int
		code, body = b.get("/components/echo")
		return code == 200 && strings.Contains(body, `id="by-deployment"`) &&
			strings.Contains(body, fmt.Sprintf(`deployments/%d">#%d</a></td>`, live.ID, live.ID)) &&
			strings.Contains(body, fmt.Sprintf(`deployments/%d">#%d</a></td>`, d.ID, d.ID))
	}, func() string { return body })
	if !strings.Contains(body, `id="canary"`) || !strings.Contains(body, "30 % of the calls") {
		t.Errorf("the page does not name the canary and its share:\n%s", body)
	}
}
