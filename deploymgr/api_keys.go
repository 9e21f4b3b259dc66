package deploymgr

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
)

// gatewayStore is what the gateway's API (API keys, OpenAPI documents)
// needs from the store.
type gatewayStore interface {
	CreateAPIKey(ctx context.Context, k store.APIKey) error
	APIKeys(ctx context.Context, component string) ([]store.APIKey, error)
	DeleteAPIKey(ctx context.Context, component, id string) error
	SetOpenAPI(ctx context.Context, deployment int64, doc []byte) error
	OpenAPI(ctx context.Context, deployment int64) ([]byte, error)
}

// MaxKeyLabel bounds an API key's label.
const MaxKeyLabel = 64

// keyRoutes registers the API-key API on the /api/v1 group. A key's
// secret comes out once, in the answer that makes it.
func (m *Manager) keyRoutes(g *echo.Group) {
	g.GET("/components/:name/keys", m.listKeys)
	g.POST("/components/:name/keys", m.createKey)
	g.DELETE("/components/:name/keys/:id", m.deleteKey)
}

func apiKeyOf(k store.APIKey) api.APIKey {
	return api.APIKey{ID: k.ID, Label: k.Label, CreatedAt: k.CreatedAt}
}

func (m *Manager) listKeys(c echo.Context) error {
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	keys, err := m.store.APIKeys(c.Request().Context(), comp.Name)
	if err != nil {
		return err
	}
	out := make([]api.APIKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, apiKeyOf(k))
	}
	return c.JSON(http.StatusOK, out)
}

// validLabel: printable ASCII, as it travels in a header (X-Velo-Auth-Key).
func validLabel(l string) error {
	if len(l) > MaxKeyLabel {
		return fmt.Errorf("label is %d characters long; at most %d", len(l), MaxKeyLabel)
	}
	for i := 0; i < len(l); i++ {
		if l[i] < ' ' || l[i] > '~' {
			return fmt.Errorf("label %q: only printable ASCII", l)
		}
	}
	return nil
}

func (m *Manager) createKey(c echo.Context) error {
	ctx := c.Request().Context()
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	var body struct {
		Label string `json:"label"`
	}
	if c.Request().ContentLength != 0 {
		if err := c.Bind(&body); err != nil {
			return inputErr("bad body: want {\"label\": \"…\"}")
		}
	}
	if err := validLabel(body.Label); err != nil {
		return inputErr("%v", err)
	}
	existing, err := m.store.APIKeys(ctx, comp.Name)
	if err != nil {
		return err
	}
	if len(existing) >= store.MaxAPIKeysPerComponent {
		return &ConflictError{Msg: fmt.Sprintf("component %q has %d API keys, the most one may hold; remove one first", comp.Name, len(existing))}
	}
	var secret [32]byte
	var id [6]byte
	_, _ = rand.Read(secret[:])
	_, _ = rand.Read(id[:])
	key := router.APIKeyPrefix + hex.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(key))
	k := store.APIKey{ID: hex.EncodeToString(id[:]), Component: comp.Name, Label: body.Label, Hash: hex.EncodeToString(sum[:])}
	if err := m.store.CreateAPIKey(ctx, k); err != nil {
		return err
	}
	m.keysChanged(ctx, comp.Name)
	m.log.Info("api key created", "component", comp.Name, "key", k.ID, "by", c.Get(ctxUser))
	keys, err := m.store.APIKeys(ctx, comp.Name)
	if err != nil {
		return err
	}
	out := api.NewAPIKey{APIKey: api.APIKey{ID: k.ID, Label: k.Label}, Key: key}
	for _, s := range keys {
		if s.ID == k.ID {
			out.CreatedAt = s.CreatedAt
		}
	}
	return c.JSON(http.StatusCreated, out)
}

func (m *Manager) deleteKey(c echo.Context) error {
	ctx := c.Request().Context()
	comp, err := m.component(c)
	if err != nil {
		return err
	}
	id := c.Param("id")
	if err := m.store.DeleteAPIKey(ctx, comp.Name, id); errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("component %q has no API key %q", comp.Name, id))
	} else if err != nil {
		return err
	}
	m.keysChanged(ctx, comp.Name)
	m.log.Info("api key removed", "component", comp.Name, "key", id, "by", c.Get(ctxUser))
	return c.NoContent(http.StatusNoContent)
}

// keysChanged tells the routers to reload their table, which holds the
// keys' hashes. A lost notification is made up for by their resync.
func (m *Manager) keysChanged(ctx context.Context, component string) {
	if err := m.routesChanged(ctx, component); err != nil {
		m.log.Warn("notify api keys changed failed", "err", err)
	}
}
