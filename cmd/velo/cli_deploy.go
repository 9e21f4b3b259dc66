package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/manifest"
)

// Deployment progress.
const (
	pollInterval   = 200 * time.Millisecond
	deployWait     = 30 * time.Second // the server's hold of one request
	defaultTimeout = 5 * time.Minute
	buildLogTail   = 20 // lines of a failed deployment's build log shown
)

func deployCommand() *cobra.Command {
	var (
		cn      conn
		name    string
		only    string
		noBuild bool
		timeout time.Duration
		canary  int
	)
	cmd := &cobra.Command{
		Use:   "deploy [DIR]",
		Short: "Build, pack and upload a component, then wait until it is live",
		Long: `Deploy runs the build command of DIR's velo.toml (DIR defaults to the current
directory), packs DIR into an archive, uploads it and waits until the new
version serves requests, then prints its URL. With --canary PERCENT the new
version takes that share of the calls once ready, the live one the rest,
until velo promote NAME (all calls) or velo rollback NAME (none).

When DIR's velo.toml lists components ([[component]] path = "…" or
components = ["services/*"]), each listed directory is deployed in turn, or
only the one named by --only.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			if canary < 0 || canary > 99 {
				return fmt.Errorf("bad --canary %d: want 1 to 99 (percent of the calls)", canary)
			}
			d := deployer{c: c, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr(), canary: canary}
			dirs, several, err := manifest.ComponentDirs(os.DirFS(dir))
			switch {
			case err != nil:
				return err
			case several:
				if name != "" {
					return errors.New("--name names one component; this velo.toml lists several (choose one with --only)")
				}
				return d.deployAll(cmd.Context(), dir, dirs, only, !noBuild, timeout)
			case only != "":
				return fmt.Errorf("--only %s: %s lists no components", only, filepath.Join(dir, manifest.FileName))
			}
			return d.deploy(cmd.Context(), dir, name, !noBuild, timeout)
		},
	}
	cn.addFlags(cmd)
	cmd.Flags().StringVar(&name, "name", "", "component name (default: the manifest's, else the directory's)")
	cmd.Flags().StringVar(&only, "only", "", "of the components a velo.toml lists, deploy only this one (by name or directory)")
	cmd.Flags().BoolVar(&noBuild, "no-build", false, "skip the manifest's build command")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long to wait for the upload and for the new version to go live")
	cmd.Flags().IntVar(&canary, "canary", 0, "send this percent (1-99) of the calls to the new version, the rest to the live one")
	return cmd
}

// deployer runs velo deploy and rollback, printing progress.
type deployer struct {
	c      *client.Client
	out    io.Writer // progress
	errOut io.Writer // build output and failure details
	canary int       // percent of the calls for a canary deploy (0: none)
}

// deploy builds, packs and uploads dir, then waits until it is live.
func (d deployer) deploy(ctx context.Context, dir, name string, build bool, timeout time.Duration) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("deploy %s: %w", dir, err)
	}
	if fi, err := os.Stat(abs); err != nil {
		return fmt.Errorf("deploy: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("deploy %s: not a directory", dir)
	}
	fsys := os.DirFS(abs)

	// The build may create what Load checks for (the module, even the
	// runtime inferred from a .wasm file), so read its command first.
	if build {
		cmdline, err := buildCommand(fsys)
		if err != nil {
			return err
		}
		if cmdline != "" {
			fmt.Fprintf(d.out, "building: %s\n", cmdline)
			if err := d.runBuild(ctx, abs, cmdline); err != nil {
				return err
			}
		}
	}
	m, err := manifest.Load(fsys, filepath.Base(abs))
	if err != nil {
		return err
	}
	if name == "" {
		name = m.Name
	}

	fmt.Fprintf(d.out, "packing %s\n", dir)
	var buf bytes.Buffer
	var keep []string
	if m.Module != "" {
		keep = append(keep, m.Module) // build output, often git-ignored
	}
	// The files the module mounts are packed even when ignored: they are
	// often generated too (a built site, compiled assets).
	files, err := manifest.ResolveFiles(fsys, m.Files)
	if err != nil {
		return err
	}
	for _, f := range files {
		keep = append(keep, f.Path)
	}
	if err := archive.Pack(&buf, abs, keep...); err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	fmt.Fprintf(d.out, "uploading %d KiB\n", (buf.Len()+1023)/1024)

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var dep api.Deployment
	if d.canary > 0 {
		dep, err = d.c.DeployCanary(ctx, name, &buf, d.canary)
	} else {
		dep, err = d.c.Deploy(ctx, name, &buf)
	}
	if err != nil {
		return timedOut(ctx, err, fmt.Sprintf("upload not answered within %s", timeout))
	}
	fmt.Fprintf(d.out, "deployment #%d: preparing…\n", dep.ID)
	return d.waitLive(ctx, dep, "preparing", timeout)
}

// deployAll deploys the components root's velo.toml lists (dirs), one
// after the other, or only the one named only. It goes on past a failure
// and fails if any did.
func (d deployer) deployAll(ctx context.Context, root string, dirs []string, only string, build bool, timeout time.Duration) error {
	type comp struct{ dir, name string }
	var all, chosen []comp
	for _, dir := range dirs {
		c := comp{dir: dir, name: componentName(filepath.Join(root, dir))}
		all = append(all, c)
		if only == "" || only == c.name || filepath.Clean(only) == filepath.Clean(dir) {
			chosen = append(chosen, c)
		}
	}
	if len(chosen) == 0 {
		var names []string
		for _, c := range all {
			names = append(names, c.name)
		}
		return fmt.Errorf("--only %s: no such component; %s lists %s", only, manifest.FileName, strings.Join(names, ", "))
	}
	var failed []string
	for _, c := range chosen {
		fmt.Fprintf(d.out, "== %s (%s)\n", c.name, c.dir)
		if err := d.deploy(ctx, filepath.Join(root, c.dir), "", build, timeout); err != nil {
			fmt.Fprintf(d.errOut, "%s: %v\n", c.name, err)
			failed = append(failed, c.name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d components failed: %s", len(failed), len(chosen), strings.Join(failed, ", "))
	}
	return nil
}

// componentName is the name velo.toml in dir gives, else the directory's
// (sanitized), as Load would name it.
func componentName(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	if data, err := os.ReadFile(filepath.Join(abs, manifest.FileName)); err == nil {
		if m, err := manifest.Parse(data); err == nil && m.Name != "" {
			return m.Name
		}
	}
	return manifest.Sanitize(filepath.Base(abs))
}

// buildCommand reads the build command from velo.toml, if there is one.
func buildCommand(fsys fs.FS) (string, error) {
	data, err := fs.ReadFile(fsys, manifest.FileName)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", manifest.FileName, err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		return "", err
	}
	return m.Build, nil
}

// runBuild runs cmdline with sh in dir, streaming its output. A failing
// build ends velo with the build's own exit status.
func (d deployer) runBuild(ctx context.Context, dir, cmdline string) error {
	cmd := exec.CommandContext(ctx, "sh", "-c", cmdline)
	cmd.Dir = dir
	cmd.Stdout = d.out
	cmd.Stderr = d.errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() > 0 && ctx.Err() == nil {
		fmt.Fprintf(d.errOut, "velo: build failed: exit status %d\n", exit.ExitCode())
		return exitError(exit.ExitCode())
	}
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	return nil
}

// waitLive follows deployment dep until it is ready and live, or failed,
// or ctx ends; it prints each status change. status is the one already
// shown. Each request waits on the server for the next change
// (Client.WaitDeployment); an answer with no change (a server without
// the wait, or its end) is followed by a pause of pollInterval.
func (d deployer) waitLive(ctx context.Context, dep api.Deployment, status string, timeout time.Duration) error {
	seen := dep
	for first := true; ; first = false {
		var got api.Deployment
		var err error
		if first {
			got, err = d.c.Deployment(ctx, dep.ID)
		} else {
			got, err = d.c.WaitDeployment(ctx, dep.ID, seen, deployWait)
		}
		if err != nil {
			return timedOut(ctx, err, fmt.Sprintf("deployment #%d is not live after %s (last status: %s)", dep.ID, timeout, status))
		}
		switch {
		case got.Status == "failed":
			d.printLogTail(got.BuildLog)
			reason := got.Error
			if reason == "" {
				reason = "no reason given"
			}
			return fmt.Errorf("deployment #%d failed: %s", got.ID, reason)
		case got.Status == "ready" && d.canary > 0:
			comp, err := d.c.Component(ctx, got.Component)
			if err != nil {
				return err
			}
			if comp.Canary == nil || comp.Canary.ID != got.ID {
				return fmt.Errorf("deployment #%d is ready but no longer the canary", got.ID)
			}
			live := "the live one"
			if comp.Live != nil {
				live = fmt.Sprintf("#%d", comp.Live.ID)
			}
			fmt.Fprintf(d.out, "canary #%d takes %d %% of the calls, %s the rest, at %s\n", got.ID, comp.CanaryWeight, live, comp.URL)
			fmt.Fprintf(d.out, "velo promote %s: all calls to it; velo rollback %s: none\n", got.Component, got.Component)
			return nil
		case got.Status == "ready" && got.Live:
			url := got.URL
			if url == "" {
				if comp, err := d.c.Component(ctx, got.Component); err == nil {
					url = comp.URL
				}
			}
			for _, l := range strings.Split(got.BuildLog, "\n") {
				if strings.HasPrefix(l, "routers: ") {
					// Live, but a router did not confirm it serves it.
					fmt.Fprintf(d.errOut, "warning: %s\n", strings.TrimPrefix(l, "routers: "))
				}
			}
			fmt.Fprintf(d.out, "live at %s\n", url)
			return nil
		case got.Status != status && got.Status != "pending":
			// pending (queued) and preparing read the same to a user.
			status = got.Status
			fmt.Fprintf(d.out, "deployment #%d: %s…\n", got.ID, status)
		}
		if first || got.Status != seen.Status || got.Live != seen.Live {
			seen = got
			continue
		}
		select {
		case <-ctx.Done():
			return timedOut(ctx, ctx.Err(), fmt.Sprintf("deployment #%d is not live after %s (last status: %s)", dep.ID, timeout, status))
		case <-time.After(pollInterval):
		}
	}
}

// timedOut replaces err by msg when ctx's own deadline ended it.
func timedOut(ctx context.Context, err error, msg string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && errors.Is(err, context.DeadlineExceeded) {
		return errors.New(msg)
	}
	return err
}

// printLogTail shows the end of a failed deployment's build log.
func (d deployer) printLogTail(log string) {
	log = strings.TrimRight(log, "\n")
	if log == "" {
		return
	}
	lines := strings.Split(log, "\n")
	if len(lines) > buildLogTail {
		fmt.Fprintf(d.errOut, "build log (last %d of %d lines):\n", buildLogTail, len(lines))
		lines = lines[len(lines)-buildLogTail:]
	} else {
		fmt.Fprintln(d.errOut, "build log:")
	}
	for _, l := range lines {
		fmt.Fprintf(d.errOut, "  | %s\n", l)
	}
}

func rollbackCommand() *cobra.Command {
	var (
		cn      conn
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rollback NAME [DEPLOYMENT]",
		Short: "End a canary, or make an earlier deployment live again (default: the one before the live one)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var id int64
			if len(args) == 2 {
				n, err := strconv.ParseInt(strings.TrimPrefix(args[1], "#"), 10, 64)
				if err != nil || n <= 0 {
					return fmt.Errorf("bad deployment %q: want its number, e.g. 12", args[1])
				}
				id = n
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if id == 0 {
				// A canary is rolled back first: it takes no calls any more.
				comp, err := c.Component(ctx, args[0])
				if err != nil {
					return err
				}
				if comp.Canary != nil {
					ended, err := c.Promote(ctx, args[0], comp.Canary.ID, 0)
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "canary #%d of %s ended: the live deployment takes every call\n", comp.Canary.ID, args[0])
					warn(cmd.ErrOrStderr(), ended.Warning)
					return nil
				}
			}
			dep, err := c.Rollback(ctx, args[0], id)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolling back %s to deployment #%d\n", args[0], dep.ID)
			d := deployer{c: c, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
			return d.waitLive(ctx, dep, dep.Status, timeout)
		},
	}
	cn.addFlags(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long to wait for the deployment to go live")
	return cmd
}

func promoteCommand() *cobra.Command {
	var (
		cn      conn
		timeout time.Duration
		weight  int
	)
	cmd := &cobra.Command{
		Use:   "promote NAME [DEPLOYMENT]",
		Short: "Send all calls (or --weight PERCENT) to a component's canary",
		Long: `Promote makes the component's canary (velo deploy --canary) live: it takes
every call from now on. With --weight it changes the canary's share instead.
DEPLOYMENT makes another deployment the canary, or live.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if weight < 0 || weight > 100 {
				return fmt.Errorf("bad --weight %d: want 0 to 100", weight)
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var id int64
			if len(args) == 2 {
				n, err := strconv.ParseInt(strings.TrimPrefix(args[1], "#"), 10, 64)
				if err != nil || n <= 0 {
					return fmt.Errorf("bad deployment %q: want its number, e.g. 12", args[1])
				}
				id = n
			} else {
				comp, err := c.Component(ctx, args[0])
				if err != nil {
					return err
				}
				if comp.Canary == nil {
					return fmt.Errorf("component %s has no canary (deploy one with velo deploy --canary PERCENT)", args[0])
				}
				id = comp.Canary.ID
			}
			dep, err := c.Promote(ctx, args[0], id, weight)
			if err != nil {
				return err
			}
			if weight < 100 {
				fmt.Fprintf(cmd.OutOrStdout(), "deployment #%d of %s takes %d %% of the calls\n", id, args[0], weight)
				warn(cmd.ErrOrStderr(), dep.Warning)
				return nil
			}
			warn(cmd.ErrOrStderr(), dep.Warning)
			fmt.Fprintf(cmd.OutOrStdout(), "promoting deployment #%d of %s\n", id, args[0])
			d := deployer{c: c, out: cmd.OutOrStdout(), errOut: cmd.ErrOrStderr()}
			return d.waitLive(ctx, dep, dep.Status, timeout)
		},
	}
	cn.addFlags(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", defaultTimeout, "how long to wait for the deployment to go live")
	cmd.Flags().IntVar(&weight, "weight", 100, "percent of the calls it takes (100: all, live)")
	return cmd
}
