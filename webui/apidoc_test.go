package webui_test

import (
	"strings"
	"testing"
)

// TestAPIPage: a component's OpenAPI document is rendered on the server
// as a page with its real base URL, its operations and their parameters,
// escaped; a component without one gets a 404 page.
func TestAPIPage(t *testing.T) {
	v := startVelo(t, nil)
	files := echoFiles(nil)
	files["velo.toml"] = []byte("module = \"echo.wasm\"\nopenapi = \"openapi.yaml\"\n")
	files["openapi.yaml"] = []byte(`openapi: 3.0.3
info:
  title: Orders <b>API</b>
  version: "2.1"
paths:
  /orders/{id}:
    get:
      summary: Read one order
      parameters:
        - name: id
          in: path
          required: true
          schema:
            type: integer
      responses:
        "200":
          description: the order
        "404":
          description: no such order
`)
	v.deploy("orders", files)
	v.deploy("plain", echoFiles(nil))
	b := v.browser()
	b.signInAdmin()
	code, body := b.get("/components/orders/api")
	for _, want := range []string{"Orders &lt;b&gt;API&lt;/b&gt;", "2.1", "<code>" + v.n.URL + "/fn/orders</code>",
		"GET /orders/{id}", "Read one order", "<code>id</code>", "integer", "no such order"} {
		if !strings.Contains(body, want) {
			t.Errorf("API page (%d) lacks %q", code, want)
		}
	}
	if code != 200 {
		t.Fatalf("API page: %d", code)
	}
	if code, _ := b.get("/components/plain/api"); code != 404 {
		t.Errorf("API page of a component without a document: %d, want 404", code)
	}
}
