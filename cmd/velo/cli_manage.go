package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
)

func pauseCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:   "pause NAME",
		Short: "Stop serving a component (requests get 503) without removing it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			comp, err := c.Pause(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "paused %s\n", comp.Name)
			warn(cmd.ErrOrStderr(), comp.Warning)
			return nil
		},
	}
	cn.addFlags(cmd)
	return cmd
}

func resumeCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:   "resume NAME",
		Short: "Serve a paused component again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			comp, err := c.Resume(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "resumed %s (%s) at %s\n", comp.Name, comp.Status, orDash(comp.URL))
			warn(cmd.ErrOrStderr(), comp.Warning)
			return nil
		},
	}
	cn.addFlags(cmd)
	return cmd
}

func rmCommand() *cobra.Command {
	var (
		cn  conn
		yes bool
	)
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a component with all its deployments",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c, err := cn.client()
			if err != nil {
				return err
			}
			if !yes {
				in, ok := cmd.InOrStdin().(*os.File)
				if !ok || !isatty.IsTerminal(in.Fd()) && !isatty.IsCygwinTerminal(in.Fd()) {
					return fmt.Errorf("not deleting %s: confirm with --yes (stdin is not a terminal)", name)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Delete component %s and all its deployments? [y/N] ", name)
				answer, _ := bufio.NewReader(in).ReadString('\n')
				switch strings.ToLower(strings.TrimSpace(answer)) {
				case "y", "yes":
				default:
					return fmt.Errorf("not deleting %s", name)
				}
			}
			if err := c.Delete(cmd.Context(), name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", name)
			return nil
		},
	}
	cn.addFlags(cmd)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// warn prints the server's warning about a change (a router that did not
// confirm serving it), if there is one.
func warn(w io.Writer, warning string) {
	if warning != "" {
		fmt.Fprintf(w, "warning: %s\n", warning)
	}
}
