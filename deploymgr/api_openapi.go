package deploymgr

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/apidoc"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// openAPIOf checks the OpenAPI document a component ships (openapi in
// velo.toml) and returns it as JSON, nil without one. A broken document
// is an InputError naming the file, the line and the reason.
func openAPIOf(ctx context.Context, tree fs.FS, man manifest.Manifest) ([]byte, error) {
	if man.OpenAPI == "" {
		return nil, nil
	}
	data, err := fs.ReadFile(tree, man.OpenAPI)
	if err != nil {
		return nil, inputErr("%s: openapi: %q: %v", manifest.FileName, man.OpenAPI, err)
	}
	doc, err := apidoc.Load(ctx, data)
	if err != nil {
		return nil, inputErr("%s: %v", man.OpenAPI, err)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode openapi document: %w", err)
	}
	return out, nil
}

// openAPIRoutes registers the OpenAPI documents: a component's, and
// Velo's own API's.
func (m *Manager) openAPIRoutes(g *echo.Group) {
	g.GET("/components/:name/openapi", m.componentOpenAPI)
	g.GET("/openapi.json", func(c echo.Context) error {
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, veloOpenAPI)
	})
}

// veloOpenAPI is the OpenAPI document of Velo's REST API. A test checks it
// against the routes the API registers, so the two cannot drift apart.
//
//go:embed openapi.json
var veloOpenAPI []byte

// ComponentOpenAPI returns the OpenAPI document of a component's live
// deployment with its servers set to where the component is reached, or
// ErrNotFound when it has none.
func (m *Manager) ComponentOpenAPI(ctx context.Context, comp store.Component) (*openapi3.T, error) {
	if comp.Live == 0 {
		return nil, store.ErrNotFound
	}
	raw, err := m.store.OpenAPI(ctx, comp.Live)
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, store.ErrNotFound
	}
	var doc openapi3.T
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("decode openapi document of %s: %w", comp.Name, err)
	}
	doc.Servers = openapi3.Servers{{URL: strings.TrimSuffix(m.ComponentURL(comp.Name), "/"), Description: "Velo"}}
	return &doc, nil
}

func (m *Manager) componentOpenAPI(c echo.Context) error {
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	doc, err := m.ComponentOpenAPI(c.Request().Context(), comp)
	if errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("component %q has no OpenAPI document (set openapi in %s)", comp.Name, manifest.FileName))
	} else if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, doc)
}
