package deploymgr

import (
	"context"
	"errors"
	"fmt"
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
	names []string        // the same, as GitHub spells them
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
	s, err := m.scopeOf(c.Request().Context(), user)
	if err != nil {
		return scope{}, err
	}
	c.Set(ctxScope, s)
	return s, nil
}

// scopeOf asks what user may reach.
func (m *Manager) scopeOf(ctx context.Context, user string) (scope, error) {
	if user == AdminUser || m.access == nil {
		return scope{all: true}, nil
	}
	all, repos, err := m.access.Repos(ctx, user)
	if err != nil {
		return scope{}, fmt.Errorf("repositories of %s: %w", user, err)
	}
	s := scope{all: all, repos: make(map[string]bool, len(repos)), names: repos}
	for _, r := range repos {
		s.repos[strings.ToLower(r)] = true
	}
	return s, nil
}

// stillAllowed tells whether the request that opened a stream on comp may
// still see it: its credential still stands for the same user (the session
// was not ended, the token not revoked) and that user still reaches comp
// (their GitHub access was not taken away, within Access's memory of it).
func (m *Manager) stillAllowed(c echo.Context, comp store.Component) (bool, error) {
	ctx := c.Request().Context()
	user, err := m.authenticate(c.Request())
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if user != c.Get(ctxUser) {
		return false, nil
	}
	s, err := m.scopeOf(ctx, user)
	if err != nil {
		return false, err
	}
	cur, err := m.store.Component(ctx, comp.Name)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	return s.allows(cur), nil
}

// allowed reports whether the caller may reach comp.
func (m *Manager) allowed(c echo.Context, comp store.Component) (bool, error) {
	s, err := m.callerScope(c)
	if err != nil {
		return false, err
	}
	return s.allows(comp), nil
}
