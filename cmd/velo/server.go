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

	"github.com/velo-run/velo/internal/github"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/internal/store"
)

// serverCommands are the roles: up, deploymgr, worker, router, webui, migrate.
func serverCommands() []*cobra.Command {
	return append([]*cobra.Command{upCmd(), migrateCmd(), githubCommand()}, roleCommands()...)
}

func newLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if err := level.UnmarshalText([]byte(envOr(envLogLevel, "info"))); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func upCmd() *cobra.Command {
	e := newEnv()
	cfg := node.Config{
		Addr:            e.str(envAddr, "127.0.0.1:8080"),
		DataDir:         e.str(envData, defaultDataDir),
		DatabaseURL:     e.get(envDatabaseURL),
		Domain:          e.get(envDomain),
		AdminToken:      e.get(envAdminToken),
		MetricsToken:    e.get(envMetricsToken),
		SecretsKey:      e.get(envSecretsKey),
		Docker:          e.docker(),
		TrustedProxies:  e.trustedProxies(),
		KeepDeployments: e.keepDeployments(),
		TLS:             e.tls(),
	}
	cfg.KeepRecords = e.keepRecords(cfg.KeepDeployments)
	var applyTLS func()
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run all of Velo in one process: router, API, webhook, worker and dashboard",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if e.err != nil {
				return e.err
			}
			cfg.Logger = newLogger(cmd.ErrOrStderr())
			applyTLS()
			var err error
			if cfg.WorkerLimits, err = workerLimits(); err != nil {
				return err
			}
			// The App's settings may come from <data>/github.env, as
			// `velo github setup` wrote them, and so may the public URL.
			getenv, err := githubEnv(cfg.DataDir, os.Getenv)
			if err != nil {
				return err
			}
			if cfg.GitHub, err = githubConfig(getenv); err != nil {
				return err
			}
			cfg.PublicURL = getenv(envPublicURL)
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			defer n.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Velo is up at %s (store: %s)\n", n.URL, n.Store.Engine())
			if n.HTTPSAddr != "" {
				fmt.Fprintf(out, "  https:      %s (plain HTTP redirects there; dashboard at https://%s)\n", n.HTTPSAddr, cfg.Domain)
			}
			fmt.Fprintf(out, "  components: %s/fn/NAME/\n", n.URL)
			fmt.Fprintf(out, "  API token:  %s\n", filepath.Join(cfg.DataDir, tokenFile))
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
	cmd.Flags().StringVar(&cfg.Addr, "addr", cfg.Addr, "address to listen on ("+envAddr+")")
	cmd.Flags().StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory ("+envData+")")
	cmd.Flags().StringVar(&cfg.Domain, "domain", cfg.Domain, "serve the dashboard at the domain and component NAME at NAME.<domain> ("+envDomain+")")
	applyTLS = tlsFlags(cmd, &cfg.TLS)
	return cmd
}

func migrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the database migrations to VELO_DATABASE_URL",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url := os.Getenv(envDatabaseURL)
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
