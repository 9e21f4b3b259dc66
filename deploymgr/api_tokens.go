package deploymgr

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/velo-run/velo/internal/store"
)

// TokenRequest is the body of POST /api/v1/tokens.
type TokenRequest struct {
	Name string `json:"name"`
}

// TokenResponse answers POST /api/v1/tokens; Token is shown only once.
type TokenResponse struct {
	Token string `json:"token"`
	Name  string `json:"name"`
	User  string `json:"user"`
}

// createToken serves POST /api/v1/tokens: a new API token acting as the
// caller (so the CLI sees what the caller sees), stored hashed.
func (m *Manager) createToken(c echo.Context) error {
	var req TokenRequest
	if c.Request().ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(c.Request().Body, 1<<16)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			return echo.NewHTTPError(http.StatusBadRequest, "body: want {\"name\": \"…\"}: "+err.Error())
		}
	}
	user, _ := c.Get(ctxUser).(string)
	if user == "" {
		return echo.NewHTTPError(http.StatusForbidden, "no user to create a token for")
	}
	if req.Name == "" {
		req.Name = "cli"
	}
	if len(req.Name) > 100 {
		return echo.NewHTTPError(http.StatusBadRequest, "name: at most 100 characters")
	}
	secret := "velo_" + rand.Text() + rand.Text()
	if err := m.store.PutToken(c.Request().Context(), store.Token{Hash: HashToken(secret), Name: req.Name, User: user}); err != nil {
		return err
	}
	m.log.Info("api token created", "name", req.Name, "user", user)
	return c.JSON(http.StatusCreated, TokenResponse{Token: secret, Name: req.Name, User: user})
}
