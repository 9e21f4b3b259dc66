package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/worker"
)

// recentDeployments is how many deployments velo status lists.
const recentDeployments = 10

// newTable returns a tabwriter for aligned columns; Flush it when done.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// deploymentRef is "#ID", or "-" without a deployment.
func deploymentRef(d *api.Deployment) string {
	if d == nil {
		return "-"
	}
	return "#" + strconv.FormatInt(d.ID, 10)
}

// orDash shows an empty cell as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func lsCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List components",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			comps, err := c.Components(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(comps) == 0 {
				fmt.Fprintln(out, `no components yet: deploy one with "velo deploy"`)
				return nil
			}
			slices.SortFunc(comps, func(a, b api.Component) int { return cmp.Compare(a.Name, b.Name) })
			tw := newTable(out)
			fmt.Fprintln(tw, "NAME\tRUNTIME\tSTATUS\tDEPLOYMENT\tURL")
			for _, comp := range comps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", comp.Name, orDash(comp.Runtime), comp.Status, deploymentRef(comp.Live), orDash(comp.URL))
			}
			return tw.Flush()
		},
	}
	cn.addFlags(cmd)
	return cmd
}

func statusCommand() *cobra.Command {
	var cn conn
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a component: status, URL, instances and recent deployments",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cn.client()
			if err != nil {
				return err
			}
			comp, err := c.Component(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			deps, err := c.Deployments(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			printStatus(cmd.OutOrStdout(), comp, deps, time.Now())
			return nil
		},
	}
	cn.addFlags(cmd)
	return cmd
}

// printStatus writes velo status's report.
func printStatus(w io.Writer, comp api.Component, deps []api.Deployment, now time.Time) {
	tw := newTable(w)
	fmt.Fprintf(tw, "name:\t%s\n", comp.Name)
	fmt.Fprintf(tw, "runtime:\t%s\n", orDash(comp.Runtime))
	fmt.Fprintf(tw, "status:\t%s\n", comp.Status)
	fmt.Fprintf(tw, "url:\t%s\n", orDash(comp.URL))
	if comp.Repo != "" {
		fmt.Fprintf(tw, "repo:\t%s\n", comp.Repo)
	}
	if d := comp.Live; d != nil {
		fmt.Fprintf(tw, "live:\t%s\n", describe(*d, now))
	}
	if d := comp.Target; d != nil {
		fmt.Fprintf(tw, "rolling out:\t%s (%s)\n", describe(*d, now), d.Status)
	}
	for _, sc := range comp.Schedules {
		line := fmt.Sprintf("%s %s %s", sc.Cron, sc.Method, sc.Path)
		if sc.Timezone != "" {
			line += " (" + sc.Timezone + ")"
		}
		if sc.NextRun != nil {
			line += ", next " + sc.NextRun.Local().Format("2006-01-02 15:04:05")
		}
		if l := sc.Last; l != nil {
			line += fmt.Sprintf(", last %s: %s", ago(now, l.Tick), l.State)
			if l.Status != 0 {
				line += fmt.Sprintf(" (%d)", l.Status)
			}
		} else {
			line += ", not run yet"
		}
		fmt.Fprintf(tw, "schedule:\t%s\n", line)
	}
	if e := comp.Events; e != nil {
		fmt.Fprintf(tw, "queued calls:\t%d queued, %d running, %d dead (velo events %s)\n", e.Queued, e.Running, e.Dead, comp.Name)
	}
	if d := comp.Canary; d != nil {
		fmt.Fprintf(tw, "canary:\t%s (%s), %d %% of the calls\n", describe(*d, now), d.Status, comp.CanaryWeight)
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	if len(comp.Instances) == 0 {
		fmt.Fprintln(w, "instances: none")
	} else {
		fmt.Fprintln(w, "instances:")
		tw = newTable(w)
		fmt.Fprintln(tw, "  WORKER\tDEPLOYMENT\tSTATE\tERROR")
		for _, in := range comp.Instances {
			fmt.Fprintf(tw, "  %s\t#%d\t%s\t%s\n", in.Worker, in.Deployment, in.State, orDash(in.Error))
		}
		_ = tw.Flush()
	}

	fmt.Fprintln(w)
	if len(deps) == 0 {
		fmt.Fprintln(w, "deployments: none")
		return
	}
	deps = slices.Clone(deps)
	slices.SortFunc(deps, func(a, b api.Deployment) int { return cmp.Compare(b.ID, a.ID) })
	if len(deps) > recentDeployments {
		fmt.Fprintf(w, "deployments (latest %d of %d):\n", recentDeployments, len(deps))
		deps = deps[:recentDeployments]
	} else {
		fmt.Fprintln(w, "deployments:")
	}
	tw = newTable(w)
	fmt.Fprintln(tw, "  ID\tSTATUS\tSOURCE\tCREATED\tDETAIL")
	for _, d := range deps {
		status := d.Status
		if d.Live {
			status += " (live)"
		}
		detail := d.Error
		if detail == "" {
			detail = commitLine(d)
		}
		fmt.Fprintf(tw, "  #%d\t%s\t%s\t%s\t%s\n", d.ID, status, orDash(d.Source), ago(now, d.CreatedAt), orDash(detail))
	}
	_ = tw.Flush()
}

// describe is a one-line summary of a deployment.
func describe(d api.Deployment, now time.Time) string {
	parts := []string{deploymentRef(&d)}
	if d.Source != "" {
		parts = append(parts, d.Source)
	}
	if c := commitLine(d); c != "" {
		parts = append(parts, c)
	}
	parts = append(parts, ago(now, d.CreatedAt))
	return strings.Join(parts, ", ")
}

// commitLine is "abc1234 first line of message" for a GitHub deployment.
func commitLine(d api.Deployment) string {
	if d.Commit == "" {
		return ""
	}
	sha := d.Commit[:min(7, len(d.Commit))]
	msg, _, _ := strings.Cut(d.Message, "\n")
	return strings.TrimSpace(sha + " " + msg)
}

// ago is how long before now t was, roughly.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func logsCommand() *cobra.Command {
	var (
		cn     conn
		follow bool
		tail   int
	)
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Show a component's logs (stdout, stderr and Velo's own lines)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail < 0 {
				return fmt.Errorf("bad --tail %d: want 0 or more", tail)
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !follow {
				lines, err := c.Logs(cmd.Context(), args[0], tail)
				if err != nil {
					return err
				}
				for _, l := range lines {
					printLogLine(out, l)
				}
				return nil
			}
			err = c.FollowLogs(cmd.Context(), args[0], tail, func(l api.LogLine) error {
				printLogLine(out, l)
				return nil
			})
			if errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
				return nil // interrupted: the normal way to stop following
			}
			return err
		},
	}
	cn.addFlags(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines as they are written")
	cmd.Flags().IntVar(&tail, "tail", 100, "number of recent lines to show first")
	return cmd
}

// printLogLine writes one log line: time, deployment, stream, text. The
// server stores lines escaped (worker.EscapeControls); escaping again here
// covers lines stored by an older server, and changes nothing else.
func printLogLine(w io.Writer, l api.LogLine) {
	fmt.Fprintf(w, "%s #%d %-6s %s\n", l.Time.Local().Format("2006-01-02 15:04:05.000"), l.Deployment, l.Stream, worker.EscapeControls(l.Line, false))
}

func statsCommand() *cobra.Command {
	var (
		cn    conn
		since string
	)
	cmd := &cobra.Command{
		Use:   "stats NAME",
		Short: "Show a component's requests per minute: hits, errors, latency",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if d, err := time.ParseDuration(since); err != nil || d <= 0 {
				return fmt.Errorf("bad --since %q: want a duration such as 30m or 24h", since)
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			st, err := c.Stats(cmd.Context(), args[0], since)
			if err != nil {
				return err
			}
			printStats(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cn.addFlags(cmd)
	cmd.Flags().StringVar(&since, "since", "1h", "how far back to look")
	return cmd
}

// printStats writes a table of the minutes that saw requests, a sparkline
// of hits over the whole window, and the totals.
func printStats(w io.Writer, st api.Stats) {
	since := cmp.Or(st.Since, "the window")
	if st.Hits == 0 && st.Outbound == 0 {
		fmt.Fprintf(w, "%s: no requests in the last %s\n", st.Component, since)
		return
	}
	// Outbound calls get their columns only where a component made some.
	outbound := st.Outbound > 0
	tw := newTable(w)
	if outbound {
		fmt.Fprintln(tw, "MINUTE\tHITS\tERRORS\tP50\tP99\tOUTBOUND\tREFUSED/FAILED")
	} else {
		fmt.Fprintln(tw, "MINUTE\tHITS\tERRORS\tP50\tP99")
	}
	for _, b := range st.Buckets {
		if b.Hits == 0 && b.Errors == 0 && b.Outbound == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s", b.Minute.Local().Format("2006-01-02 15:04"), b.Hits, b.Errors, millis(b.P50ms), millis(b.P99ms))
		if outbound {
			fmt.Fprintf(tw, "\t%d\t%d", b.Outbound, b.OutboundErrors)
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	hits := make([]int64, len(st.Buckets))
	for i, b := range st.Buckets {
		hits[i] = b.Hits
	}
	fmt.Fprintf(w, "\nhits/min  %s\n", sparkline(hits))
	fmt.Fprintf(w, "total     %d hits, %d errors (%.1f%%) in the last %s\n", st.Hits, st.Errors, 100*float64(st.Errors)/float64(max(st.Hits, 1)), since)
	if outbound {
		fmt.Fprintf(w, "outbound  %d HTTP calls, %d refused or failed\n", st.Outbound, st.OutboundErrors)
	}
	if len(st.Deployments) > 1 {
		// The live deployment and its canary (or predecessor), side by side.
		fmt.Fprintln(w, "\nby deployment:")
		tw := newTable(w)
		fmt.Fprintln(tw, "  DEPLOYMENT\tHITS\tSHARE\tERRORS\tP50\tP99")
		for _, d := range st.Deployments {
			fmt.Fprintf(tw, "  #%d\t%d\t%s\t%d (%s)\t%s\t%s\n", d.Deployment, d.Hits, share(d.Hits, st.Hits), d.Errors, share(d.Errors, d.Hits), millis(d.P50ms), millis(d.P99ms))
		}
		_ = tw.Flush()
	}
}

// share is part of total in percent, "-" when total is 0.
func share(part, total int64) string {
	if total == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(part)/float64(total), 'f', 1, 64) + "%"
}

// millis formats a latency in milliseconds.
func millis(ms float64) string {
	switch {
	case ms == 0:
		return "-"
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	default:
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	}
}

// sparkline draws values as block characters, the largest full height;
// zero stays at the baseline.
func sparkline(values []int64) string {
	const blocks = "▁▂▃▄▅▆▇█"
	levels := []rune(blocks)
	top := slices.Max(append([]int64{0}, values...))
	var b strings.Builder
	for _, v := range values {
		i := 0
		if top > 0 && v > 0 {
			i = 1 + int(v*int64(len(levels)-2)/top) // nonzero shows above the baseline
		}
		b.WriteRune(levels[i])
	}
	return b.String()
}
