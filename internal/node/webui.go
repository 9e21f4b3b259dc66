package node

import (
	"context"
	"fmt"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/webui"
)

// WebUIConfig configures `velo webui`, the dashboard.
type WebUIConfig struct {
	Cluster
	// PublicURL is where users reach the routers; component URLs are
	// built on it (VELO_PUBLIC_URL, --public-url; default http://<Addr>).
	PublicURL string
	// DashboardURL is where browsers reach this role: cookies, GitHub's
	// OAuth callback (VELO_DASHBOARD_URL, --dashboard-url; default
	// PublicURL).
	DashboardURL string
	// Domain: components are served at NAME.<Domain> too (VELO_DOMAIN,
	// --domain).
	Domain string
	// GitHub enables GitHub sign-in and onboarding (VELO_GITHUB_*); nil
	// without.
	GitHub *github.Config
}

func (c WebUIConfig) withDefaults() WebUIConfig {
	if c.PublicURL == "" {
		c.PublicURL = "http://" + c.Addr
	}
	if c.DashboardURL == "" {
		c.DashboardURL = c.PublicURL
	}
	return c
}

// NewWebUI builds the dashboard role: the pages, the REST API the pages'
// scripts and actions use (with the dashboard session), sign-in and
// sign-out, on the cluster's store.
func NewWebUI(ctx context.Context, cfg WebUIConfig) (*Role, error) {
	cfg = cfg.withDefaults()
	r, err := openRole(ctx, "webui", cfg.Cluster)
	if err != nil {
		return nil, err
	}
	app, err := githubApp(cfg.GitHub)
	if err != nil {
		return r.fail(fmt.Errorf("webui: %w", err))
	}
	c, err := newControl(r.store, deploymgr.Config{PublicURL: cfg.PublicURL, Domain: cfg.Domain, AdminToken: cfg.AdminToken, Secrets: r.keys, Logger: r.log}, cfg.DashboardURL, app)
	if err != nil {
		return r.fail(err)
	}
	if app != nil {
		// The API's GET /repos and POST /components (onboarding's Start)
		// need the App; the jobs Start queues are run and reported by
		// the deploymgr leader.
		if _, err := c.mgr.EnableGitHub(deploymgr.GitHubConfig{App: app, Store: r.store}); err != nil {
			return r.fail(fmt.Errorf("webui: %w", err))
		}
	}
	dash, err := webui.New(webui.Config{API: c.api, Sessions: c.sessions, PublicURL: cfg.PublicURL, Logger: r.log})
	if err != nil {
		return r.fail(err)
	}
	c.handle(r.mux)
	r.mux.Handle("/", dash.Handler())
	return r, nil
}
