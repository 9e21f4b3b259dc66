package deploymgr

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/velo-run/velo/internal/api"
)

// listRepos serves GET /api/v1/repos: the repositories where the GitHub App
// is installed that the caller reaches (the admin: all of them), sorted,
// each with the component deployed from it; what the dashboard's
// onboarding offers to start. 404 when GitHub is not configured.
func (m *Manager) listRepos(c echo.Context) error {
	if m.github == nil {
		return echo.NewHTTPError(http.StatusNotFound, "GitHub is not configured on this Velo (see docs/github.md)")
	}
	ctx := c.Request().Context()
	s, err := m.callerScope(c)
	if err != nil {
		return err
	}
	names := slices.Clone(s.names)
	if s.all {
		ins, err := m.github.app.Installations(ctx)
		if err != nil {
			return err
		}
		for _, in := range ins {
			rs, err := m.github.app.InstallationRepos(ctx, in.ID)
			if err != nil {
				return err
			}
			for _, r := range rs {
				names = append(names, r.FullName)
			}
		}
	}
	comps, err := m.store.Components(ctx)
	if err != nil {
		return err
	}
	byRepo := map[string]string{}
	for _, comp := range comps {
		if comp.Repo != "" && !isPreview(comp.Name) && s.allows(comp) {
			byRepo[strings.ToLower(comp.Repo)] = comp.Name
		}
	}
	slices.Sort(names)
	out := make([]api.Repo, 0, len(names))
	for _, n := range slices.Compact(names) {
		out = append(out, api.Repo{FullName: n, Component: byRepo[strings.ToLower(n)]})
	}
	return c.JSON(http.StatusOK, out)
}
