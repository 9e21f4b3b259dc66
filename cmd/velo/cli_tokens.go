package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// tokensCommand is `velo tokens`: create, list and revoke API tokens. A
// token acts as whoever created it; a user sees and revokes their own, the
// admin everyone's.
func tokensCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Create, list and revoke API tokens",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(tokensCreateCommand(), tokensLsCommand(), tokensRmCommand())
	return cmd
}

func tokensCreateCommand() *cobra.Command {
	var (
		cn   conn
		name string
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create an API token acting as you; its secret is printed once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			t, err := c.CreateToken(cmd.Context(), name)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "created token %s (%s) for %s; it is not shown again:\n", t.ID, t.Name, t.User)
			fmt.Fprintln(cmd.OutOrStdout(), t.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "cli", "what the token is for, shown in velo tokens ls")
	cn.addFlags(cmd)
	return cmd
}

func tokensLsCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List API tokens (yours; the admin sees everyone's)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			ts, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(ts) == 0 {
				fmt.Fprintln(out, `no API tokens: create one with "velo tokens create"`)
				return nil
			}
			tw := newTable(out)
			fmt.Fprintln(tw, "ID\tNAME\tUSER\tCREATED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Name, t.User, t.CreatedAt.UTC().Format("2006-01-02 15:04 UTC"))
			}
			return tw.Flush()
		},
	}
	cn.addFlags(cmd)
	return cmd
}

func tokensRmCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:   "rm ID",
		Short: "Revoke an API token (it stops working at once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s\n", args[0])
			return nil
		},
	}
	cn.addFlags(cmd)
	return cmd
}
