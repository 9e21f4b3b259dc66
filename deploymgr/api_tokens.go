package deploymgr

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/store"
)

// API tokens: a user creates, lists and revokes their own; the admin lists
// and revokes everyone's (and creates only its own: a token always acts as
// the caller). The secret is shown once, in the answer that creates it;
// only its sha256 is stored.

func apiToken(t store.Token) api.Token {
	return api.Token{ID: t.ID(), Name: t.Name, User: t.User, CreatedAt: t.CreatedAt}
}

// createToken serves POST /api/v1/tokens: a new API token acting as the
// caller (so the CLI sees what the caller sees), stored hashed.
func (m *Manager) createToken(c echo.Context) error {
	var req api.TokenRequest
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
	ctx := c.Request().Context()
	have, err := m.store.Tokens(ctx, user)
	if err != nil {
		return err
	}
	if len(have) >= store.MaxTokensPerUser {
		return &ConflictError{Msg: fmt.Sprintf("you already have %d API tokens, the most one user may hold: revoke some (velo tokens rm ID)", len(have))}
	}
	secret := "velo_" + rand.Text() + rand.Text()
	t := store.Token{Hash: HashToken(secret), Name: req.Name, User: user}
	if err := m.store.PutToken(ctx, t); err != nil {
		return err
	}
	if t, err = m.store.TokenByHash(ctx, t.Hash); err != nil {
		return err
	}
	m.log.Info("api token created", "name", req.Name, "user", user, "id", t.ID())
	out := apiToken(t)
	out.Token = secret
	return c.JSON(http.StatusCreated, out)
}

// tokensOwner is whose tokens the caller lists and revokes: their own, or
// everyone's ("") for the admin.
func tokensOwner(c echo.Context) (string, error) {
	user, _ := c.Get(ctxUser).(string)
	switch user {
	case "":
		return "", echo.NewHTTPError(http.StatusForbidden, "no user to list tokens of")
	case AdminUser:
		return "", nil
	}
	return user, nil
}

// listTokens serves GET /api/v1/tokens: the caller's API tokens (the
// admin: every user's), without their secrets.
func (m *Manager) listTokens(c echo.Context) error {
	owner, err := tokensOwner(c)
	if err != nil {
		return err
	}
	ts, err := m.store.Tokens(c.Request().Context(), owner)
	if err != nil {
		return err
	}
	out := make([]api.Token, 0, len(ts))
	for _, t := range ts {
		out = append(out, apiToken(t))
	}
	return c.JSON(http.StatusOK, out)
}

// deleteToken serves DELETE /api/v1/tokens/{id}: revoke one of the
// caller's tokens (the admin: anyone's). It stops working at once, also
// for a log stream it opened.
func (m *Manager) deleteToken(c echo.Context) error {
	owner, err := tokensOwner(c)
	if err != nil {
		return err
	}
	id := c.Param("id")
	err = m.store.DeleteTokenByID(c.Request().Context(), id, owner)
	if errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("no API token %q of yours", id))
	} else if err != nil {
		return err
	}
	m.log.Info("api token revoked", "id", id, "by", c.Get(ctxUser))
	return c.NoContent(http.StatusNoContent)
}
