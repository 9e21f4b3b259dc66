package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/secrets"
)

// secretsCommand is `velo secrets`: write-only secrets, delivered to a
// component's instances as environment variables.
func secretsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Set, list and remove a component's secrets (environment variables whose values are never shown)",
		Long: `Secrets are environment variables of a component whose values are encrypted at
rest and never shown again: not by the API, the dashboard, the logs (a value a
component prints is redacted). Setting or removing one reaches the running
instances within seconds, without a redeploy.`,
	}
	cmd.AddCommand(secretsSetCommand(), secretsLsCommand(), secretsRmCommand(), secretsRotateCommand(), secretsNewKeyCommand())
	return cmd
}

func secretsSetCommand() *cobra.Command {
	var cn conn
	var preview bool
	cmd := &cobra.Command{
		Use:   "set NAME KEY=VALUE…",
		Short: "Set secrets of a component (KEY=- reads the value from stdin)",
		Long: `Set secrets of component NAME. KEY=- reads that value from stdin, which keeps it
out of the shell history and the process list:

  velo secrets set hello API_KEY=-  < api-key.txt
  printf %s "$TOKEN" | velo secrets set hello TOKEN=-

One trailing newline of a value read from stdin is dropped. A name that the
component's velo.toml sets in [env] is refused: keep it in one place.

Previews of pull requests (NAME--pr-N) get none of NAME's secrets unless a
secret is marked for them: --preview marks the secrets set, --preview=false
unmarks them; without the flag a replaced secret keeps its mark. Running
previews restart with the change, as NAME's instances do.

  velo secrets set hello --preview SANDBOX_API_KEY=-  < sandbox-key.txt`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			type pair struct{ key, value string }
			var pairs []pair
			stdin := ""
			for _, arg := range args[1:] {
				key, value, ok := strings.Cut(arg, "=")
				if !ok {
					return fmt.Errorf("%q: want KEY=VALUE, or KEY=- to read the value from stdin", arg)
				}
				if err := secrets.ValidName(key); err != nil {
					return err
				}
				if value == "-" {
					if stdin != "" {
						return fmt.Errorf("%s=- and %s=-: only one value can come from stdin", stdin, key)
					}
					stdin = key
					b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), secrets.MaxValue+2))
					if err != nil {
						return fmt.Errorf("read %s from stdin: %w", key, err)
					}
					value = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
				}
				if err := secrets.ValidValue(key, value); err != nil {
					return err
				}
				pairs = append(pairs, pair{key, value})
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			mark := cmd.Flags().Changed("preview")
			for _, p := range pairs {
				var err error
				if mark {
					_, err = c.SetSecretMarked(cmd.Context(), name, p.key, p.value, preview)
				} else {
					_, err = c.SetSecret(cmd.Context(), name, p.key, p.value)
				}
				if err != nil {
					return fmt.Errorf("set %s: %w", p.key, err)
				}
				switch {
				case mark && preview:
					fmt.Fprintf(cmd.OutOrStdout(), "set %s on %s, for its previews too\n", p.key, name)
				case mark:
					fmt.Fprintf(cmd.OutOrStdout(), "set %s on %s, not for its previews\n", p.key, name)
				default:
					fmt.Fprintf(cmd.OutOrStdout(), "set %s on %s\n", p.key, name)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&preview, "preview", false, "mark the secrets for the component's previews (NAME--pr-N); --preview=false unmarks them")
	cn.addFlags(cmd)
	return cmd
}

func secretsLsCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:     "ls NAME",
		Aliases: []string{"list"},
		Short:   "List a component's secrets: names, whether previews get them and when they were set, never values",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			list, err := c.Secrets(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(list) == 0 {
				fmt.Fprintf(out, "%s has no secrets; set one with: velo secrets set %s KEY=VALUE\n", args[0], args[0])
				return nil
			}
			tw := newTable(out)
			fmt.Fprintln(tw, "NAME\tPREVIEWS\tSET")
			now := time.Now()
			for _, s := range list {
				mark := "-"
				if s.Preview {
					mark = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s (%s)\n", s.Name, mark, ago(now, s.UpdatedAt), s.UpdatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cn.addFlags(cmd)
	return cmd
}

func secretsRmCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:   "rm NAME KEY…",
		Short: "Remove secrets of a component",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			for _, key := range args[1:] {
				if err := c.DeleteSecret(cmd.Context(), args[0], key); err != nil {
					return fmt.Errorf("remove %s: %w", key, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s from %s\n", key, args[0])
			}
			return nil
		},
	}
	cn.addFlags(cmd)
	return cmd
}

func secretsRotateCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Re-encrypt every secret under a new key (admin)",
		Long: `Re-encrypt every secret of every component under the server's sealing key.

With velo up and no VELO_SECRETS_KEY, the server makes a new key in its key file
(<data>/secrets.key), re-encrypts everything and drops the old key.

With VELO_SECRETS_KEY (a cluster), put the new key first on every role that
has the variable (deploymgr, webui, every worker) and restart them:
VELO_SECRETS_KEY=NEW,OLD (make NEW with velo secrets new-key). Then run this,
and once it reports every secret under NEW, set VELO_SECRETS_KEY=NEW everywhere.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			res, err := c.RotateKey(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "re-encrypted %d secret(s) under key %s; keys held: %s\n", res.Resealed, res.Key, strings.Join(res.Keys, ", "))
			if res.ResealedTLS > 0 {
				fmt.Fprintf(out, "re-encrypted %d TLS item(s) (certificates, their keys, the ACME account)\n", res.ResealedTLS)
			}
			for _, f := range res.Failed {
				fmt.Fprintf(out, "not re-encrypted: %s\n", f)
			}
			if res.Note != "" {
				fmt.Fprintln(out, res.Note)
			}
			if len(res.Failed) > 0 {
				return exitError(1)
			}
			return nil
		},
	}
	cn.addFlags(cmd)
	return cmd
}

func secretsNewKeyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "new-key",
		Short: "Print a new random key for " + secrets.EnvKey,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), secrets.NewKey())
			return nil
		},
	}
}
