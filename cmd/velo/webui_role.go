package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/velo-run/velo/deploymgr"
	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/webui"
)

// webuiConfig is what the webui role needs besides roleConfig.
type webuiConfig struct {
	// PublicURL is where users reach the routers (component URLs), as
	// for deploymgr.
	PublicURL string
	// DashboardURL is where browsers reach this role (cookies, GitHub's
	// OAuth callback).
	DashboardURL string
	Domain       string
	AdminToken   string
}

// dashboardMux serves the dashboard role: the pages, the REST API the
// pages' scripts and actions use (with the dashboard session), sign-in and
// sign-out, on the shared store.
func dashboardMux(mux *http.ServeMux, st *store.Store, cfg webuiConfig, log *slog.Logger) error {
	keys, err := secrets.Load(os.Getenv(secrets.EnvKey), "")
	if err != nil {
		return fmt.Errorf("webui: %w", err)
	}
	mgr, err := deploymgr.New(deploymgr.Config{PublicURL: cfg.PublicURL, Domain: cfg.Domain, AdminToken: cfg.AdminToken, Secrets: keys, Logger: log}, st)
	if err != nil {
		return err
	}
	ghCfg, ghOn, err := github.ConfigFromEnv(os.Getenv)
	if err != nil {
		return fmt.Errorf("webui: %w", err)
	}
	var app *github.App
	if ghOn {
		if app, err = github.NewApp(ghCfg, &http.Client{Timeout: time.Minute}); err != nil {
			return fmt.Errorf("webui: %w", err)
		}
	}
	sessions, err := auth.New(auth.Config{Store: st, PublicURL: cfg.DashboardURL, AdminToken: cfg.AdminToken, App: app, Logger: log})
	if err != nil {
		return err
	}
	mgr.AddAuthenticator(sessions.Authenticator())
	if app != nil {
		mgr.SetAccess(sessions.Access())
		// The API's GET /repos and POST /components (onboarding's
		// Start) need the App; the jobs Start queues are run and
		// reported by the deploymgr leader.
		if _, err := mgr.EnableGitHub(deploymgr.GitHubConfig{App: app, Store: st}); err != nil {
			return fmt.Errorf("webui: %w", err)
		}
	}
	dash, err := webui.New(webui.Config{API: mgr.Handler(), Sessions: sessions, PublicURL: cfg.PublicURL, Logger: log})
	if err != nil {
		return err
	}
	mux.Handle("/api/", mgr.Handler())
	mux.Handle(auth.LoginPath, sessions.Handler())
	mux.Handle("/auth/", sessions.Handler())
	mux.Handle("/", dash.Handler())
	return nil
}
