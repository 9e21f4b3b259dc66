package deploymgr

import (
	"context"
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
