package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// keysCommand is `velo keys`: API keys of private components.
func keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke the API keys of a private component",
		Long: `A component whose velo.toml says [access] public = false answers only callers
with one of its API keys, sent as "Authorization: Bearer KEY" or "X-Api-Key: KEY".
A key is shown once, when it is created; Velo keeps only its hash. The component
sees the caller as X-Velo-Auth-Subject: key:ID and X-Velo-Auth-Key: LABEL, never
the key itself.`,
	}
	cmd.AddCommand(keysCreateCommand(), keysLsCommand(), keysRmCommand())
	return cmd
}

func keysCreateCommand() *cobra.Command {
	var cn conn
	var label string
	cmd := &cobra.Command{
		Use:   "create NAME [--label L]",
		Short: "Create an API key for a component and print it (shown this once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			k, err := c.CreateAPIKey(cmd.Context(), args[0], label)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), k.Key)
			fmt.Fprintf(cmd.ErrOrStderr(), "API key %s of %s created; it is shown only this once\n", k.ID, args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&label, "label", "", "a name for the key, passed to the component as X-Velo-Auth-Key")
	cn.addFlags(cmd)
	return cmd
}

func keysLsCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:     "ls NAME",
		Aliases: []string{"list"},
		Short:   "List a component's API keys (never the keys themselves)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			list, err := c.APIKeys(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(list) == 0 {
				fmt.Fprintf(out, "%s has no API keys; create one with: velo keys create %s --label NAME\n", args[0], args[0])
				return nil
			}
			tw := newTable(out)
			fmt.Fprintln(tw, "ID\tLABEL\tCREATED")
			now := time.Now()
			for _, k := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.Label, ago(now, k.CreatedAt))
			}
			return tw.Flush()
		},
	}
	cn.addFlags(cmd)
	return cmd
}

func keysRmCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:   "rm NAME ID…",
		Short: "Revoke API keys of a component (at once, on every router)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			for _, id := range args[1:] {
				if err := c.DeleteAPIKey(cmd.Context(), args[0], id); err != nil {
					return fmt.Errorf("revoke %s: %w", id, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked %s of %s\n", id, args[0])
			}
			return nil
		},
	}
	cn.addFlags(cmd)
	return cmd
}
