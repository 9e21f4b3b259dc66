package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/auth"
	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/secrets"
	"github.com/velo-run/velo/internal/store"
	"github.com/velo-run/velo/router"
)

// serverCommands are the roles: up, deploymgr, worker, router, webui, migrate.
func serverCommands() []*cobra.Command {
	return append([]*cobra.Command{upCmd(), migrateCmd(), githubCommand()}, roleCommands()...)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(envOr("VELO_LOG_LEVEL", "info"))); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func upCmd() *cobra.Command {
	var addr, data string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run all of Velo in one process: router, API, webhook, worker and dashboard",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			log := newLogger(cmd.ErrOrStderr())
			getenv, err := githubEnv(data, os.Getenv)
			if err != nil {
				return err
			}
			ghCfg, ghOn, err := github.ConfigFromEnv(getenv)
			if err != nil {
				return err
			}
			limits, err := workerLimits()
			if err != nil {
				return err
			}
			trusted, err := router.ParseTrustedProxies(os.Getenv("VELO_TRUSTED_PROXIES"))
			if err != nil {
				return fmt.Errorf("VELO_TRUSTED_PROXIES: %w", err)
			}
			keep, err := keepDeployments()
			if err != nil {
				return err
			}
			cfg := node.Config{
				WorkerLimits:    limits,
				TrustedProxies:  trusted,
				KeepDeployments: keep,
				Addr:            addr,
				DataDir:         data,
				DatabaseURL:     os.Getenv("VELO_DATABASE_URL"),
				PublicURL:       getenv("VELO_PUBLIC_URL"),
				Domain:          os.Getenv("VELO_DOMAIN"),
				SecretsKey:      os.Getenv(secrets.EnvKey),
				// /metrics also takes the admin token.
				MetricsToken: os.Getenv(auth.MetricsTokenEnv),
				Docker:       newDockerRuntime,
				Logger:       log,
			}
			if ghOn {
				cfg.GitHub = &ghCfg
			}
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer n.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Velo is up at %s (store: %s)\n", n.URL, n.Store.Engine())
			fmt.Fprintf(out, "  components: %s/fn/NAME/\n", n.URL)
			fmt.Fprintf(out, "  API token:  %s\n", filepath.Join(data, "admin.token"))
			fmt.Fprintf(out, "  dashboard:  %s (signs you in as admin)\n", n.LoginURL)
			if n.GitHub != nil {
				public := cfg.PublicURL
				if public == "" {
					public = n.URL
				}
				fmt.Fprintf(out, "  GitHub App: webhook at %s%s\n", strings.TrimRight(public, "/"), github.WebhookPath)
			}
			fmt.Fprintf(out, "Deploy the example: velo deploy examples/hello-wasm\n")
			return n.Wait(ctx)
		},
	}
	cmd.Flags().StringVar(&addr, "addr", envOr("VELO_ADDR", "127.0.0.1:8080"), "address to listen on (VELO_ADDR)")
	cmd.Flags().StringVar(&data, "data", envOr("VELO_DATA", ".velo"), "data directory (VELO_DATA)")
	return cmd
}

func migrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the database migrations to VELO_DATABASE_URL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url := os.Getenv("VELO_DATABASE_URL")
			if url == "" {
				return errors.New("VELO_DATABASE_URL is not set: give the Postgres URL to migrate, like postgres://velo@localhost/velo")
			}
			st, err := store.Open(cmd.Context(), url)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.Migrate(cmd.Context()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s schema is up to date\n", st.Engine())
			return nil
		},
	}
}
