package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/testsupport"
)

const itemsAPI = `openapi: 3.0.3
info:
  title: Items
  version: "1"
paths:
  /get:
    get:
      summary: read a variable
      parameters:
        - name: PLAIN
          in: query
          required: true
          allowEmptyValue: true
          schema:
            type: string
      responses:
        "200":
          description: its value
  /items/{id}:
    get:
      parameters:
        - name: id
          in: path
          required: true
          schema:
            type: integer
      responses:
        "200":
          description: one item
`

// TestOpenAPI deploys components with OpenAPI documents through the real
// API: a broken document fails the deploy with its line and reason; a good
// one is served with the component's URL as its server; with validate =
// true the router refuses calls that do not match it before the component
// runs, naming the parameter.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &spine{t: t, ctx: ctx, data: t.TempDir()}
	s.start()
	c := client.New(s.n.URL, s.n.Token, nil)
	files := func(toml, doc string) map[string][]byte {
		f := vaultFiles(toml)
		f["openapi.yaml"] = []byte(doc)
		return f
	}
	toml := "name = \"items\"\nmodule = \"secretenv.wasm\"\nopenapi = \"openapi.yaml\"\nvalidate = true\n[env]\nPLAIN = \"plain-value\"\n"
	broken := strings.Replace(itemsAPI, "          description: one item\n", "          content: {}\n", 1)
	_, err := c.Deploy(ctx, "items", bytes.NewReader(archivetest.TarGz(t, files(toml, broken))))
	if err == nil || !strings.Contains(err.Error(), "openapi.yaml: line 20:") || !strings.Contains(err.Error(), "description of the response is required") {
		t.Fatalf("deploy with a broken document: %v", err)
	}
	if _, err := c.Deploy(ctx, "items", bytes.NewReader(archivetest.TarGz(t, files(toml, itemsAPI)))); err != nil {
		t.Fatal(err)
	}
	testsupport.Eventually(t, 30*time.Second, "items live", func() bool {
		res, body := s.get("/fn/items/get?PLAIN")
		return res.StatusCode == 200 && body == "plain-value"
	})
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/fn/items/get", 400, `query parameter "PLAIN"`},
		{"/fn/items/items/seven", 400, `path parameter "id"`},
		{"/fn/items/nothing", 404, "no operation at /nothing"},
	} {
		res, body := s.get(tc.path)
		if res.StatusCode != tc.status || !strings.Contains(body, tc.body) || res.Header.Get("X-Velo-Worker") != "" {
			t.Errorf("%s: %d %q (worker %q), want %d %q from the router", tc.path, res.StatusCode, body, res.Header.Get("X-Velo-Worker"), tc.status, tc.body)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", s.n.URL+"/api/v1/components/items/openapi", nil)
	req.Header.Set("Authorization", "Bearer "+s.n.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var doc struct {
		Servers []struct{ URL string } `json:"servers"`
		Paths   map[string]any         `json:"paths"`
	}
	if err := json.NewDecoder(res.Body).Decode(&doc); err != nil || res.StatusCode != 200 {
		t.Fatalf("GET …/openapi: %d %v", res.StatusCode, err)
	}
	if len(doc.Servers) != 1 || doc.Servers[0].URL != s.n.URL+"/fn/items" || doc.Paths["/items/{id}"] == nil {
		t.Fatalf("served document: %+v", doc)
	}
}
