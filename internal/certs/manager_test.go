package certs

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHTTPHandler: plain HTTP redirects to the same host over HTTPS,
// never to a host the request did not name; loopback hosts are served.
func TestHTTPHandler(t *testing.T) {
	m := &Manager{cfg: Config{HTTPSPort: 8443}}
	local := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := m.HTTPHandler(local)
	for _, tc := range []struct {
		host, uri string
		status    int
		location  string
	}{
		{"app.example.com", "/a?b=1", http.StatusPermanentRedirect, "https://app.example.com:8443/a?b=1"},
		{"APP.example.com:80", "/", http.StatusPermanentRedirect, "https://app.example.com:8443/"},
		{"[2001:db8::1]:80", "/x", http.StatusPermanentRedirect, "https://[2001:db8::1]:8443/x"},
		{"evil.example/x", "/", http.StatusBadRequest, ""},
		{"a@evil.example", "/", http.StatusBadRequest, ""},
		{"", "/", http.StatusBadRequest, ""},
		{"127.0.0.1:8080", "/", http.StatusTeapot, ""},
		{"localhost:8080", "/", http.StatusTeapot, ""},
		{"[::1]:8080", "/", http.StatusTeapot, ""},
		{"app.example.com", "/.well-known/acme-challenge/nope", http.StatusNotFound, ""},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.uri, nil)
		req.Host = tc.host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.status || w.Header().Get("Location") != tc.location {
			t.Errorf("Host %q %s: %d %q, want %d %q", tc.host, tc.uri, w.Code, w.Header().Get("Location"), tc.status, tc.location)
		}
	}
	w := httptest.NewRecorder()
	HTTPSHandler(local).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Header().Get("Strict-Transport-Security") != HSTS {
		t.Errorf("HTTPS answers carry no HSTS: %v", w.Header())
	}
}
