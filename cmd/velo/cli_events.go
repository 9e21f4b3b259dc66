package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/client"
)

// eventsCommand is velo events: a component's queued calls (async calls,
// inbound events, schedule ticks), and replaying or dropping one.
func eventsCommand() *cobra.Command {
	var (
		cn    conn
		dead  bool
		state string
	)
	cmd := &cobra.Command{
		Use:   "events NAME [--dead | --state STATE]",
		Short: "List a component's queued calls (async calls, events, schedule ticks)",
		Long: `List a component's newest queued calls with their state, attempts and last status.
--dead lists only the dead ones (out of attempts); "velo events replay ID" runs one
again, "velo events discard ID" drops it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			if dead {
				if state != "" && state != "dead" {
					return errors.New("--dead and --state " + state + " contradict each other")
				}
				state = "dead"
			}
			list, err := c.Invocations(cmd.Context(), args[0], state)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(list) == 0 {
				fmt.Fprintf(out, "no %scalls queued for %s\n", map[bool]string{true: state + " ", false: ""}[state != ""], args[0])
				return nil
			}
			printInvocations(cmd, list, time.Now())
			return nil
		},
	}
	cmd.Flags().BoolVar(&dead, "dead", false, "only the dead calls (out of attempts)")
	cmd.Flags().StringVar(&state, "state", "", "only calls in this state: queued, running, succeeded, failed, dead")
	cn.addFlags(cmd)
	cmd.AddCommand(eventsReplayCommand(), eventsDiscardCommand())
	return cmd
}

func printInvocations(cmd *cobra.Command, list []api.Invocation, now time.Time) {
	tw := newTable(cmd.OutOrStdout())
	fmt.Fprintln(tw, "ID\tSTATE\tSOURCE\tCALL\tATTEMPTS\tLAST\tCREATED")
	for _, inv := range list {
		last := orDash(inv.LastError)
		if inv.State == "succeeded" {
			last = "ok"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s %s\t%d/%d\t%s\t%s\n", inv.ID, inv.State, inv.Source, inv.Method, inv.Path,
			inv.Attempt, inv.MaxAttempts, last, ago(now, inv.CreatedAt))
	}
	_ = tw.Flush()
}

func invocationArg(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not an invocation id (see velo events NAME)", s)
	}
	return id, nil
}

func eventsReplayCommand() *cobra.Command {
	return invocationCommand("replay ID", "Run a queued call again (a dead one gets one more attempt)",
		func(cmd *cobra.Command, c *client.Client, id int64) error {
			inv, err := c.Replay(cmd.Context(), id)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "replaying invocation %d of %s (%s %s): %s\n", inv.ID, inv.Component, inv.Method, inv.Path, inv.State)
			return nil
		})
}

func eventsDiscardCommand() *cobra.Command {
	return invocationCommand("discard ID", "Drop a queued call",
		func(cmd *cobra.Command, c *client.Client, id int64) error {
			if err := c.Discard(cmd.Context(), id); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "discarded invocation %d\n", id)
			return nil
		})
}

// invocationCommand is a command that acts on one invocation, named by the
// id its only argument gives.
func invocationCommand(use, short string, run func(*cobra.Command, *client.Client, int64) error) *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := invocationArg(args[0])
			if err != nil {
				return err
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			return run(cmd, c, id)
		},
	}
	cn.addFlags(cmd)
	return cmd
}
