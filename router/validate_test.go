package router

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/velo-run/velo/internal/store"
)

// itemsDoc is an OpenAPI document with one operation: GET /items/{id},
// id an integer.
const itemsDoc = `{"openapi":"3.0.3","info":{"title":"items","version":"1"},
"paths":{"/items/{id}":{"get":{"parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"integer"}}],
"responses":{"200":{"description":"one item"}}}}}}`

// TestValidateCanary: validate = true holds for a canary's share of the
// calls too, checked against the canary's own document: with the canary
// at 50 %, no call that breaks the document reaches either deployment,
// and good calls reach both.
func TestValidateCanary(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	validated := []byte(`{"openapi":"openapi.yaml","validate":true}`)
	newDep := func(n int, workers ...string) int64 {
		d, err := f.st.CreateDeployment(ctx, store.Deployment{Component: "items", Digest: fmt.Sprintf("%064d", n), Runtime: "wasm", Manifest: validated, Source: "upload", Status: store.StatusReady})
		if err != nil {
			t.Fatal(err)
		}
		if err := f.st.SetOpenAPI(ctx, d.ID, []byte(itemsDoc)); err != nil {
			t.Fatal(err)
		}
		for _, w := range workers {
			if err := f.st.PutPlacement(ctx, store.Placement{Deployment: d.ID, Worker: w, State: store.PlacementReady}); err != nil {
				t.Fatal(err)
			}
		}
		return d.ID
	}
	if err := f.st.CreateComponent(ctx, store.Component{Name: "items", Runtime: "wasm"}); err != nil {
		t.Fatal(err)
	}
	live := newDep(1, "w1")
	if err := f.st.SetTarget(ctx, "items", live); err != nil {
		t.Fatal(err)
	}
	if err := f.st.Promote(ctx, "items", live); err != nil {
		t.Fatal(err)
	}
	canary := newDep(2, "w2")
	if err := f.st.SetCanary(ctx, "items", canary, 50); err != nil {
		t.Fatal(err)
	}
	f.refresh()
	for i := range 20 {
		res := f.get("/fn/items/items/seven")
		if b := body(t, res); res.StatusCode != 400 || !strings.Contains(b, `path parameter "id"`) {
			t.Fatalf("bad call %d: %d %q (deployment %s), want 400 from the router", i, res.StatusCode, b, res.Header.Get("X-Velo-Deployment"))
		}
	}
	if n1, n2 := f.backends["w1"].calls.Load(), f.backends["w2"].calls.Load(); n1 != 0 || n2 != 0 {
		t.Fatalf("calls that break the document reached the live deployment %d times, the canary %d times", n1, n2)
	}
	byDep := map[string]int{}
	for range 20 {
		res := f.get("/fn/items/items/7")
		if res.StatusCode != 200 {
			t.Fatalf("good call: %d %q", res.StatusCode, body(t, res))
		}
		byDep[res.Header.Get("X-Velo-Deployment")]++
	}
	if byDep[fmt.Sprint(live)] != 10 || byDep[fmt.Sprint(canary)] != 10 {
		t.Errorf("good calls by deployment: %v, want 10 each", byDep)
	}
}
