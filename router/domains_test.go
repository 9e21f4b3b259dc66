package router

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/velo-run/velo/internal/store"
)

// TestCustomDomains: a component's custom domain is routed (both the
// net/http path and the fast path's byte matcher, any letter case) when
// the component holds it in the store and its live manifest lists it;
// Serves, which decides which names get certificates, says the same.
func TestCustomDomains(t *testing.T) {
	f := newFixture(t, Config{Domain: "apps.example.test"})
	ctx := context.Background()
	st := f.st.Store
	if err := st.CreateComponent(ctx, store.Component{Name: "hello", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	d, err := st.CreateDeployment(ctx, store.Deployment{Component: "hello", Digest: fmt.Sprintf("%064d", 1), Runtime: "wasm",
		Manifest: []byte(`{"domains":["api.custom.test","unclaimed.custom.test"]}`), Source: "upload", Status: store.StatusReady})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: "w1", State: store.PlacementReady}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetTarget(ctx, "hello", d.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.Promote(ctx, "hello", d.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.ClaimDomains(ctx, "hello", []string{"api.custom.test", "claimed.not-listed.test"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	next := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := f.r.Hosts(next)
	for host, want := range map[string]int{
		"api.custom.test":              200,
		"API.Custom.Test:443":          200,
		"unclaimed.custom.test":        http.StatusTeapot, // listed, not held
		"claimed.not-listed.test":      http.StatusTeapot, // held, not listed by the live manifest
		"hello.apps.example.test":      200,
		"elsewhere.example":            http.StatusTeapot,
		"api.custom.test.evil.example": http.StatusTeapot,
	} {
		req := httptest.NewRequest("GET", "/x", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %s: %d, want %d", host, rec.Code, want)
		}
	}
	for host, want := range map[string]bool{
		"api.custom.test": true, "API.custom.test": true, "unclaimed.custom.test": false, "claimed.not-listed.test": false,
		"hello.apps.example.test": true, "nobody.apps.example.test": false, "a.hello.apps.example.test": false, "apps.example.test": false,
	} {
		if got := f.r.Serves(host); got != want {
			t.Errorf("Serves(%s) = %v, want %v", host, got, want)
		}
	}
	for host, want := range map[string]string{"api.custom.test": "hello", "Api.Custom.TEST:8443": "hello", "unclaimed.custom.test": ""} {
		name, mount, ok := f.r.componentOf([]byte(host), []byte("/x"))
		if string(name) != want || ok != (want != "") || mount != nil {
			t.Errorf("componentOf(%s) = %q %q %v, want %q", host, name, mount, ok, want)
		}
	}
}
