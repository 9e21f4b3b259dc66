package deploymgr

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/store"
)

// AdminUser is the user of the admin token and of admin sessions: it sees
// and controls every component.
const AdminUser = "admin"

// Access tells which repositories an API user may reach. deploymgr asks it
// about every user but AdminUser; without an Access every authenticated
// user sees everything.
type Access interface {
	// Repos returns the repositories ("owner/name") user can reach, or
	// all = true when the user sees every component.
	Repos(ctx context.Context, user string) (all bool, repos []string, err error)
}

// SetAccess scopes non-admin users to the components of the repositories a
// reaches for them. Call it before serving.
func (m *Manager) SetAccess(a Access) { m.access = a }

// scope is what one caller may reach.
type scope struct {
	all   bool
	repos map[string]bool // lower-case owner/name
}

// allows reports whether the caller may see and control comp. Components
// uploaded without a repository belong to the admin.
func (s scope) allows(comp store.Component) bool {
	return s.all || (comp.Repo != "" && s.repos[strings.ToLower(comp.Repo)])
}

func (s scope) allowsRepo(repo string) bool {
	return s.all || s.repos[strings.ToLower(repo)]
}

// ctxScope caches the caller's scope for one request.
const ctxScope = "velo.scope"

// callerScope returns what the request's authenticated user may reach.
func (m *Manager) callerScope(c echo.Context) (scope, error) {
	if s, ok := c.Get(ctxScope).(scope); ok {
		return s, nil
	}
	user, _ := c.Get(ctxUser).(string)
	s := scope{all: true}
	if user != AdminUser && m.access != nil {
		all, repos, err := m.access.Repos(c.Request().Context(), user)
		if err != nil {
			return scope{}, fmt.Errorf("repositories of %s: %w", user, err)
		}
		s = scope{all: all, repos: make(map[string]bool, len(repos))}
		for _, r := range repos {
			s.repos[strings.ToLower(r)] = true
		}
	}
	c.Set(ctxScope, s)
	return s, nil
}

// allowed reports whether the caller may reach comp.
func (m *Manager) allowed(c echo.Context, comp store.Component) (bool, error) {
	s, err := m.callerScope(c)
	if err != nil {
		return false, err
	}
	return s.allows(comp), nil
}

// StartRequest is the body of POST /api/v1/components.
type StartRequest struct {
	Repo string `json:"repo"`
}

// startComponent serves POST /api/v1/components: deploy the head of a
// repository's default branch.
func (m *Manager) startComponent(c echo.Context) error {
	var req StartRequest
	if err := json.NewDecoder(io.LimitReader(c.Request().Body, 1<<16)).Decode(&req); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "body: want {\"repo\": \"owner/name\"}: "+err.Error())
	}
	owner, name, ok := strings.Cut(req.Repo, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("repo %q: want owner/name", req.Repo))
	}
	if m.github == nil {
		return echo.NewHTTPError(http.StatusNotFound, "GitHub is not configured on this Velo (see docs/github.md)")
	}
	s, err := m.callerScope(c)
	if err != nil {
		return err
	}
	if !s.allowsRepo(req.Repo) {
		return echo.NewHTTPError(http.StatusNotFound, fmt.Sprintf("the GitHub App is not installed on %s, or your account cannot reach it", req.Repo))
	}
	ctx := c.Request().Context()
	d, err := m.github.Start(ctx, req.Repo)
	if err != nil {
		return err
	}
	comp, err := m.store.Component(ctx, d.Component)
	if err != nil {
		return err
	}
	m.log.Info("repository started", "repo", req.Repo, "component", d.Component, "deployment", d.ID, "by", c.Get(ctxUser))
	return c.JSON(http.StatusAccepted, m.apiDeployment(d, comp))
}

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
