package deploymgr

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/apidoc"
)

// TestVeloOpenAPIMatchesRoutes: /api/v1/openapi.json documents exactly
// the routes the API registers, so that a new endpoint without its entry
// (or an entry for a removed one) fails here.
func TestVeloOpenAPIMatchesRoutes(t *testing.T) {
	doc, err := apidoc.Load(context.Background(), veloOpenAPI)
	if err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	m, err := New(Config{PublicURL: "http://x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	param := regexp.MustCompile(`:(\w+)`)
	var registered []string
	for _, r := range m.Handler().(*echo.Echo).Routes() {
		path, ok := strings.CutPrefix(r.Path, "/api/v1")
		if !ok || path == "/*" || r.Method == echo.RouteNotFound {
			continue
		}
		registered = append(registered, r.Method+" "+param.ReplaceAllString(path, "{$1}"))
	}
	slices.Sort(documented)
	slices.Sort(registered)
	registered = slices.Compact(registered)
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("%s is served but not in deploymgr/openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("%s is in deploymgr/openapi.json but not served", d)
		}
	}
}
