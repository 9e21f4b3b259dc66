package auth

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// MetricsTokenEnv names the bearer token Prometheus sends to /metrics.
const MetricsTokenEnv = "VELO_METRICS_TOKEN"

// RequireMetricsToken serves next (a role's /metrics) only to requests with
// Authorization: Bearer and one of tokens (the empty ones ignored):
// /metrics names every component and counts its hits, which is not for
// anyone who can reach the port. Without any token configured it answers
// 403 and says how to turn metrics on.
func RequireMetricsToken(next http.Handler, tokens ...string) http.Handler {
	var want [][]byte
	for _, t := range tokens {
		if t != "" {
			want = append(want, []byte(t))
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(want) == 0 {
			http.Error(w, "metrics are off: set "+MetricsTokenEnv+" and have Prometheus send it as a bearer token", http.StatusForbidden)
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok {
			for _, t := range want {
				if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), t) == 1 {
					next.ServeHTTP(w, r)
					return
				}
			}
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="velo metrics"`)
		http.Error(w, "metrics need Authorization: Bearer $"+MetricsTokenEnv+" (or the admin token)", http.StatusUnauthorized)
	})
}
