package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/velo-run/velo/internal/install"
)

// version is the release this binary is, set at link time
// (-ldflags "-X main.version=v1.2.3"); without it, the VCS revision the
// binary was built from.
var version string

func veloVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "devel"
	}
	return "devel-" + rev[:min(12, len(rev))] + dirty
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print velo's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), veloVersion())
			return nil
		},
	}
}

// hostsFile lists the hosts velo install set up last, for velo hosts.
const hostsFile = "hosts.json"

type hostsEntry struct {
	Host  string   `json:"host"` // ssh://user@host[:port]
	Roles []string `json:"roles"`
}

func sshFlags(cmd *cobra.Command, s *install.SSH) {
	cmd.Flags().StringVar(&s.Identity, "identity", "", "SSH private key file (default: the SSH agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa)")
	cmd.Flags().StringVar(&s.KnownHosts, "known-hosts", "", "known_hosts file the hosts' keys are checked against (default ~/.ssh/known_hosts)")
}

func installCommand() *cobra.Command {
	var (
		o     install.Options
		roles []string
	)
	cmd := &cobra.Command{
		Use:   "install ssh://user@host[:port]…",
		Short: "Install (or upgrade) a Velo cluster on Linux hosts over SSH: one systemd unit per role",
		Long: `Install Velo on each host over SSH, or upgrade it in place when it is there:
ships this velo binary (or, when a host's OS or architecture differs, one
cross-compiled from the source checkout velo runs in), creates the velo user,
/var/lib/velo and /etc/velo/velo.env (0600), writes one systemd unit per role,
starts each and waits until its /healthz answers. Hosts are done one at a
time, the first first, and within a host one role at a time, so routers and
workers never all restart at once; a role that does not come up with a new
binary gets the previous one back, and the run stops there.

--roles says what a host runs, once per host in the order of the hosts
(all, or some of deploymgr,worker,router,webui); hosts without one run a
worker, except the first, which runs all.

Host keys are checked against ~/.ssh/known_hosts: an unknown host is refused
unless --accept-new-host-key (which adds its key), a changed key always.
The user needs root or passwordless sudo. Running it again keeps the
cluster's tokens, keys and database.`,
		Example: `  velo install ssh://root@10.0.0.2 ssh://root@10.0.0.3 ssh://root@10.0.0.4 --with-postgres
  velo install ssh://admin@a ssh://admin@b --roles all --roles worker,router --postgres postgres://velo:pw@db:5432/velo`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for i, a := range args {
				t, err := install.ParseTarget(a)
				if err != nil {
					return err
				}
				h := install.Host{Target: t, Roles: []string{"worker"}}
				if i == 0 {
					h.Roles = install.Roles()
				}
				if i < len(roles) {
					if h.Roles, err = install.ParseRoles(roles[i]); err != nil {
						return err
					}
				}
				o.Hosts = append(o.Hosts, h)
			}
			if len(roles) > len(args) {
				return fmt.Errorf("%d --roles for %d hosts: give one per host, in order", len(roles), len(args))
			}
			tmp, err := os.MkdirTemp("", "velo-install-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			o.Binaries = install.SelfOrBuilt(tmp, veloVersion())
			o.Progress = cmd.OutOrStdout()
			start := time.Now()
			res, err := install.Install(cmd.Context(), o)
			if err != nil {
				return err
			}
			if err := writeHosts(o.Hosts); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "\nVelo %s is running on %d hosts (%.0fs).\n", veloVersion(), len(o.Hosts), time.Since(start).Seconds())
			fmt.Fprintf(w, "  API:        %s\n", res.APIURL)
			fmt.Fprintf(w, "  components: %s/fn/NAME/\n", res.PublicURL)
			if res.DashboardURL != "" {
				fmt.Fprintf(w, "  dashboard:  %s\n", res.DashboardURL)
			}
			fmt.Fprintf(w, "  admin token: %s\n\n", res.AdminToken)
			fmt.Fprintf(w, "  export %s=%s %s=%s\n  velo deploy examples/hello-wasm\n", envServer, res.APIURL, envToken, res.AdminToken)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&roles, "roles", nil, "roles of a host: all, or some of deploymgr,worker,router,webui; once per host, in order (default: all on the first, worker on the rest)")
	cmd.Flags().StringVar(&o.PostgresURL, "postgres", "", "Postgres every role uses (postgres://user:password@host:5432/db)")
	cmd.Flags().BoolVar(&o.WithPostgres, "with-postgres", false, "install the distribution's PostgreSQL on the first host, create the velo database and a password, and use it")
	cmd.Flags().StringVar(&o.Domain, "domain", "", "serve component NAME at NAME.<domain> too; the public URL becomes http://<domain>:8080 (no TLS is set up: see --public-url)")
	cmd.Flags().StringVar(&o.PublicURL, "public-url", "", "where users call components, when a load balancer or TLS proxy in front of the routers makes it other than http://<domain or first router>:8080")
	cmd.Flags().BoolVar(&o.SSH.AcceptNewHostKey, "accept-new-host-key", false, "trust and record the key of a host known_hosts does not list (a changed key is refused regardless)")
	cmd.Flags().DurationVar(&o.HealthTimeout, "health-timeout", install.DefaultHealthTimeout, "how long a started role has to answer /healthz")
	sshFlags(cmd, &o.SSH)
	return cmd
}

func hostsPath() string { return filepath.Join(envOr(envData, defaultDataDir), hostsFile) }

func writeHosts(hosts []install.Host) error {
	var entries []hostsEntry
	for _, h := range hosts {
		entries = append(entries, hostsEntry{Host: h.Target.String(), Roles: h.Roles})
	}
	b, _ := json.MarshalIndent(entries, "", "  ")
	if err := os.MkdirAll(filepath.Dir(hostsPath()), 0o700); err != nil {
		return err
	}
	return os.WriteFile(hostsPath(), append(b, '\n'), 0o600)
}

func hostsCommand() *cobra.Command {
	var s install.SSH
	cmd := &cobra.Command{
		Use:   "hosts [ssh://user@host[:port]…]",
		Short: "List the hosts velo install set up: roles, version and health of each",
		Long: `List each host of the cluster velo install set up last (from
<VELO_DATA or ./.velo>/hosts.json, or the hosts given) with the roles it runs,
its velo version and each role's health (/healthz, asked on the host over SSH).
Exits 1 when a host is unreachable or a role unhealthy.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				b, err := os.ReadFile(hostsPath())
				if errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("no %s: run velo install first, or name the hosts", hostsPath())
				}
				if err != nil {
					return err
				}
				var entries []hostsEntry
				if err := json.Unmarshal(b, &entries); err != nil {
					return fmt.Errorf("%s: %w", hostsPath(), err)
				}
				for _, e := range entries {
					args = append(args, e.Host)
				}
			}
			var targets []install.Target
			for _, a := range args {
				t, err := install.ParseTarget(a)
				if err != nil {
					return err
				}
				targets = append(targets, t)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tROLES\tVERSION\tHEALTH")
			bad := false
			for _, st := range install.Inspect(ctx, s, targets) {
				if st.Err != nil {
					bad = true
					fmt.Fprintf(tw, "%s\t-\t-\tunreachable: %v\n", st.Target.Host, st.Err)
					continue
				}
				var health []string
				for _, r := range st.Roles {
					if st.Health[r] != "ok" {
						bad = true
					}
					health = append(health, r+" "+st.Health[r])
				}
				if len(st.Roles) == 0 {
					bad = true
					health = append(health, "no velo role installed")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", st.Target.Host, strings.Join(st.Roles, ","), st.Version, strings.Join(health, ", "))
			}
			tw.Flush()
			if bad {
				return exitError(1)
			}
			return nil
		},
	}
	sshFlags(cmd, &s)
	return cmd
}
