package node

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every role's /metrics (deploymgr, worker, router, webui: all opened by
// openRole, and velo up's) answers only with VELO_METRICS_TOKEN or
// VELO_ADMIN_TOKEN as a bearer token, and is off without either.
func TestRoleMetricsNeedToken(t *testing.T) {
	serve := func(metricsToken, adminToken string) *httptest.Server {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "velo_test_component_hits", Help: "stands for per-component series"}))
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics(reg, metricsToken, adminToken))
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		return srv
	}
	get := func(srv *httptest.Server, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, res.Body)
		return res.StatusCode, b.String()
	}

	off := serve("", "")
	if code, body := get(off, ""); code != http.StatusForbidden || !strings.Contains(body, "VELO_METRICS_TOKEN") {
		t.Errorf("/metrics with no token configured = %d %q, want 403 naming VELO_METRICS_TOKEN", code, body)
	}

	on := serve("prom-secret", "admin-secret")
	for _, tc := range []struct {
		token string
		want  int
	}{{"", 401}, {"wrong", 401}, {"prom-secret", 200}, {"admin-secret", 200}} {
		code, body := get(on, tc.token)
		if code != tc.want || (code == 200) != strings.Contains(body, "velo_test_component_hits") {
			t.Errorf("/metrics with %q = %d, want %d\n%.300s", tc.token, code, tc.want, body)
		}
	}
}
