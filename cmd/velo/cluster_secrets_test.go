package main

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestClusterSecrets runs the roles as separate processes on Postgres with
// one VELO_SECRETS_KEY: deploymgr seals, both workers open, and a change
// reaches them through the store's notifications (pg_notify), no redeploy.
func TestClusterSecrets(t *testing.T) {
	t.Parallel()
	c := newCluster(t, secrets.EnvKey+"="+secrets.NewKey())
	dm := c.Start("deploymgr", "deploymgr")
	c.Start("worker-a", "worker", "--name", "a", "--data", t.TempDir())
	c.Start("worker-b", "worker", "--name", "b", "--data", t.TempDir())
	rt := c.Start("router", "router")
	cl := c.Client(dm)
	d, err := cl.Deploy(c.Ctx, "vault", bytes.NewReader(archivetest.TarGz(t, vaultFiles(vaultToml))))
	if err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(c.T, 30*time.Second, "vault live on both workers", func() bool {
		comp, err := cl.Component(c.Ctx, "vault")
		if err != nil || comp.Live == nil || comp.Live.ID != d.ID {
			return false
		}
		ready := 0
		for _, in := range comp.Instances {
			if in.Deployment == d.ID && in.State == "ready" {
				ready++
			}
		}
		return ready == 2
	})
	// Each worker answers with its own name: call until both showed value.
	seen := func(want string) map[string]bool {
		by := map[string]bool{}
		for range 40 {
			res, err := http.Get(rt.URL + "/fn/vault/get?API_KEY")
			if err != nil {
				continue
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == 200 && string(b) == want {
				by[res.Header.Get("X-Velo-Worker")] = true
			}
		}
		return by
	}
	for _, value := range []string{apiKeyValue, "second-" + apiKeyValue} {
		if _, err := cl.SetSecret(c.Ctx, "vault", "API_KEY", value); err != nil {
			t.Fatal(err)
		}
		testsupport.Eventually(c.T, 20*time.Second, "both workers serving "+value, func() bool {
			by := seen(value)
			return by["a"] && by["b"]
		})
	}
	if err := cl.DeleteSecret(c.Ctx, "vault", "API_KEY"); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(c.T, 20*time.Second, "both workers without the secret", func() bool {
		by := seen("(unset)")
		return by["a"] && by["b"]
	})
	// No role logged a value.
	for _, p := range c.Procs() {
		if strings.Contains(p.Out.String(), apiKeyValue) {
			t.Errorf("%s logged a secret value", p.Name)
		}
	}
}
