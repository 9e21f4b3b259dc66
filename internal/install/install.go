// Package install sets Velo up on bare Linux hosts over SSH (velo install):
// it ships the velo binary to each host, writes one systemd unit per role
// and the cluster's configuration, optionally installs PostgreSQL on the
// first host, starts every role and waits for its /healthz. Run again with
// another binary, it upgrades in place one host and one role at a time,
// restoring the previous binary on a host where a role does not come back.
//
// It owns what it writes on the hosts: the velo user, /usr/local/bin/velo,
// /etc/velo/velo.env, /var/lib/velo and the velo-*.service and
// velo-*.socket units. It must not touch anything else there beyond
// installing and configuring PostgreSQL when asked to.
package install

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/secrets"
)

// The roles, in the order a host starts them: deploymgr first, since it
// applies the migrations the others expect.
var roleOrder = []string{"deploymgr", "worker", "router", "webui"}

// Roles returns every role in start order.
func Roles() []string { return slices.Clone(roleOrder) }

// Ports the roles listen on, on every interface of their host.
var rolePort = map[string]string{"router": "8080", "deploymgr": "8081", "worker": "8082", "webui": "8083"}

// Port returns the TCP port role listens on.
func Port(role string) string { return rolePort[role] }

// socketRoles are served through a systemd socket unit: their port keeps
// accepting while they restart. Workers are not: a router that finds a
// worker's port closed sends the call to another worker at once.
var socketRoles = map[string]bool{"router": true, "deploymgr": true, "webui": true}

// Paths on the hosts.
const (
	BinPath  = "/usr/local/bin/velo"
	EnvPath  = "/etc/velo/velo.env"
	DataDir  = "/var/lib/velo"
	unitDir  = "/etc/systemd/system"
	oldBin   = BinPath + ".old"
	newBin   = BinPath + ".new"
	pgPort   = "5432"
	userName = "velo"
)

// DefaultHealthTimeout is how long a started role has to answer /healthz.
const DefaultHealthTimeout = 90 * time.Second

// Host is one host and the roles it runs.
type Host struct {
	Target Target
	Roles  []string
}

// ParseRoles reads --roles: "all" or a comma-separated list of roles.
func ParseRoles(s string) ([]string, error) {
	if s == "all" {
		return Roles(), nil
	}
	var out []string
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		if _, ok := rolePort[r]; !ok {
			return nil, fmt.Errorf("--roles %q: unknown role %q (want all, or some of %s)", s, r, strings.Join(roleOrder, ","))
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	// Start order, whatever the order given.
	slices.SortFunc(out, func(a, b string) int { return slices.Index(roleOrder, a) - slices.Index(roleOrder, b) })
	return out, nil
}

// Binaries gives the velo executable for a platform (GOOS, GOARCH) and
// says where it came from, for the progress line.
type Binaries func(ctx context.Context, goos, goarch string) (path, origin string, err error)

// Options is one velo install run.
type Options struct {
	Hosts []Host
	SSH   SSH
	// PostgresURL points every role at this database; WithPostgres
	// installs PostgreSQL on the first host instead. Neither: the URL a
	// previous install wrote is kept.
	PostgresURL  string
	WithPostgres bool
	// Domain serves components at NAME.<domain> too.
	Domain string
	// PublicURL is where users call components when something in front
	// of the routers (a load balancer, a TLS proxy) makes it other than
	// http://<domain or first router>:8080.
	PublicURL string
	Binaries  Binaries
	// Progress gets one line per host and step.
	Progress io.Writer
	// HealthTimeout defaults to DefaultHealthTimeout.
	HealthTimeout time.Duration
}

// Result is what the user needs afterwards.
type Result struct {
	AdminToken   string
	APIURL       string // a deploymgr
	PublicURL    string // where components are called
	DashboardURL string // "" without a webui
}

// host is a connected host during a run.
type host struct {
	Host
	conn     *Conn
	goos     string
	goarch   string
	bin      string // local path of the binary it gets
	origin   string
	sum      string // sha256 of bin
	progress func(format string, args ...any)
}

// Install runs o: connects to every host first (so that a refused host key
// stops the run before anything changed), then sets up the hosts one at a
// time, the first one first.
func Install(ctx context.Context, o Options) (Result, error) {
	if err := validate(o); err != nil {
		return Result{}, err
	}
	if o.HealthTimeout == 0 {
		o.HealthTimeout = DefaultHealthTimeout
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	var hosts []*host
	defer func() {
		for _, h := range hosts {
			h.conn.Close()
		}
	}()
	for _, hh := range o.Hosts {
		h := &host{Host: hh}
		h.progress = func(format string, args ...any) {
			fmt.Fprintf(o.Progress, "%s: %s\n", h.Target.Host, fmt.Sprintf(format, args...))
		}
		c, err := o.SSH.Dial(ctx, h.Target)
		if err != nil {
			return Result{}, err
		}
		h.conn = c
		hosts = append(hosts, h)
		if err := h.platform(ctx); err != nil {
			return Result{}, err
		}
		h.progress("connected as %s (%s/%s)", h.Target.User, h.goos, h.goarch)
	}
	bins := map[string]*host{}
	for _, h := range hosts {
		key := h.goos + "/" + h.goarch
		if same, ok := bins[key]; ok {
			h.bin, h.origin, h.sum = same.bin, same.origin, same.sum
			continue
		}
		path, origin, err := o.Binaries(ctx, h.goos, h.goarch)
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", h.Target.Host, err)
		}
		sum, err := fileSum(path)
		if err != nil {
			return Result{}, err
		}
		h.bin, h.origin, h.sum = path, origin, sum
		bins[key] = h
	}

	env, err := clusterEnv(ctx, o, hosts)
	if err != nil {
		return Result{}, err
	}
	if o.WithPostgres {
		if err := installPostgres(ctx, hosts[0], env, hbaLines(hosts)); err != nil {
			return Result{}, err
		}
	}
	for _, h := range hosts {
		if err := h.install(ctx, env, o.HealthTimeout); err != nil {
			return Result{}, err
		}
	}
	res := Result{AdminToken: env.get("VELO_ADMIN_TOKEN"), PublicURL: env.get("VELO_PUBLIC_URL"), DashboardURL: env.get("VELO_DASHBOARD_URL")}
	if h := firstWith(hosts, "deploymgr"); h != nil {
		res.APIURL = "http://" + net.JoinHostPort(h.Target.Host, Port("deploymgr"))
	}
	return res, nil
}

func validate(o Options) error {
	if len(o.Hosts) == 0 {
		return errors.New("no host: give ssh://user@host[:port] for each")
	}
	if o.PostgresURL != "" && o.WithPostgres {
		return errors.New("--postgres and --with-postgres: give one")
	}
	if o.PostgresURL != "" && !strings.HasPrefix(o.PostgresURL, "postgres://") && !strings.HasPrefix(o.PostgresURL, "postgresql://") {
		return fmt.Errorf("--postgres %q: want postgres://user:password@host:5432/db", o.PostgresURL)
	}
	if o.PublicURL != "" {
		if u, err := url.Parse(o.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--public-url %q: want http(s)://host[:port]", o.PublicURL)
		}
	}
	if o.Domain != "" && (strings.ContainsAny(o.Domain, "/:@ ") || !strings.Contains(o.Domain, ".")) {
		return fmt.Errorf("--domain %q: want a DNS name such as apps.example.com", o.Domain)
	}
	seen := map[string]bool{}
	for _, h := range o.Hosts {
		if seen[h.Target.Host] {
			return fmt.Errorf("host %s named twice", h.Target.Host)
		}
		seen[h.Target.Host] = true
	}
	return nil
}

// validateNew checks what a new cluster needs: a host for each role it
// cannot do without. (A run on some hosts of an existing cluster, an
// upgrade of part of it, need not name them all.)
func validateNew(hosts []*host) error {
	for _, r := range []string{"deploymgr", "worker", "router"} {
		if firstWith(hosts, r) == nil {
			return fmt.Errorf("no host runs the %s role: a cluster needs at least one (see --roles)", r)
		}
	}
	return nil
}

func firstWith(hosts []*host, role string) *host {
	for _, h := range hosts {
		if slices.Contains(h.Roles, role) {
			return h
		}
	}
	return nil
}

// goPlatform maps uname -s and -m to GOOS and GOARCH.
func goPlatform(sys, machine string) (string, string, error) {
	var goos string
	switch sys {
	case "Linux":
		goos = "linux"
	default:
		return "", "", fmt.Errorf("%s hosts are not supported: velo install sets up systemd units on Linux", sys)
	}
	switch machine {
	case "i386", "i486", "i586", "i686", "armv6l", "armv7l", "armv8l":
		// riversqlite (the embedded queue's driver) does not build for
		// 32-bit platforms.
		return "", "", fmt.Errorf("machine %q is a 32-bit platform: Velo builds for 64-bit hosts only (x86_64, aarch64, riscv64, ppc64le, s390x)", machine)
	}
	arch := map[string]string{"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x"}[machine]
	if arch == "" {
		return "", "", fmt.Errorf("machine %q is not a platform Go builds for", machine)
	}
	return goos, arch, nil
}

func (h *host) platform(ctx context.Context) error {
	out, err := h.conn.Run(ctx, "uname -s; uname -m; command -v systemctl >/dev/null || echo no-systemd", nil)
	if err != nil {
		if h.conn.sudo && strings.Contains(out, "sudo") {
			return fmt.Errorf("%s: %s needs passwordless sudo (sudo -n) to install: %w", h.Target, h.Target.User, err)
		}
		return fmt.Errorf("%s: uname: %w", h.Target, err)
	}
	f := strings.Fields(out)
	if len(f) < 2 {
		return fmt.Errorf("%s: uname said %q", h.Target, out)
	}
	if slices.Contains(f, "no-systemd") {
		return fmt.Errorf("%s: no systemctl: velo install needs a host that runs systemd", h.Target)
	}
	h.goos, h.goarch, err = goPlatform(f[0], f[1])
	if err != nil {
		return fmt.Errorf("%s: %w", h.Target, err)
	}
	return nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	s := sha256.New()
	if _, err := io.Copy(s, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(s.Sum(nil)), nil
}

// envFile is /etc/velo/velo.env: KEY=VALUE lines, in order.
type envFile struct {
	keys []string
	vals map[string]string
}

func parseEnv(s string) *envFile {
	e := &envFile{vals: map[string]string{}}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			e.set(k, v)
		}
	}
	return e
}

func (e *envFile) get(k string) string { return e.vals[k] }

func (e *envFile) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.keys = append(e.keys, k)
	}
	e.vals[k] = v
}

// setDefault sets k to def() unless it has a value.
func (e *envFile) setDefault(k string, def func() string) {
	if e.vals[k] == "" {
		e.set(k, def())
	}
}

func (e *envFile) String() string {
	var b strings.Builder
	b.WriteString("# Written by velo install; the same on every host of the cluster.\n")
	for _, k := range e.keys {
		fmt.Fprintf(&b, "%s=%s\n", k, e.vals[k])
	}
	return b.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// clusterEnv is the configuration every host gets: what a previous
// install wrote (its tokens and keys are kept, so that a re-run changes
// nothing the cluster relies on), with what this run says on top.
func clusterEnv(ctx context.Context, o Options, hosts []*host) (*envFile, error) {
	env := parseEnv("")
	for _, h := range hosts {
		s, ok, err := h.conn.ReadFile(ctx, EnvPath)
		if err != nil {
			return nil, err
		}
		if ok {
			env = parseEnv(s)
			h.progress("kept the cluster's configuration from %s (tokens, keys, database)", EnvPath)
			break
		}
	}
	if len(env.keys) == 0 {
		if err := validateNew(hosts); err != nil {
			return nil, err
		}
	}
	first := hosts[0].Target.Host
	switch {
	case o.PostgresURL != "":
		env.set("VELO_DATABASE_URL", o.PostgresURL)
	case o.WithPostgres:
		pass := ""
		if u, err := url.Parse(env.get("VELO_DATABASE_URL")); err == nil && u.User != nil && u.Hostname() == first {
			pass, _ = u.User.Password()
		}
		if pass == "" {
			pass = randomHex(24)
		}
		u := url.URL{Scheme: "postgres", User: url.UserPassword(userName, pass), Host: net.JoinHostPort(first, pgPort), Path: "/velo"}
		env.set("VELO_DATABASE_URL", u.String())
	case env.get("VELO_DATABASE_URL") == "":
		return nil, errors.New("no database: give --postgres URL, or --with-postgres to install PostgreSQL on the first host")
	}
	env.setDefault("VELO_CLUSTER_TOKEN", func() string { return randomHex(32) })
	env.setDefault("VELO_ADMIN_TOKEN", func() string { return randomHex(32) })
	env.setDefault("VELO_SECRETS_KEY", secrets.NewKey)
	if o.Domain != "" {
		env.set("VELO_DOMAIN", o.Domain)
	}
	if u := publicURL(o, env.get("VELO_DOMAIN"), firstWith(hosts, "router")); u != "" {
		env.set("VELO_PUBLIC_URL", u)
	}
	if w := firstWith(hosts, "webui"); w != nil {
		env.set("VELO_DASHBOARD_URL", "http://"+net.JoinHostPort(w.Target.Host, Port("webui")))
	}
	return env, nil
}

// publicURL is where components are called: o.PublicURL when given (a
// load balancer in front, perhaps terminating TLS), else the domain's
// name at the routers' port — velo install sets up no TLS, so it is not
// https:// unless said —, else the first router's address; "" keeps what
// the configuration says.
func publicURL(o Options, domain string, router *host) string {
	switch {
	case o.PublicURL != "":
		return strings.TrimSuffix(o.PublicURL, "/")
	case domain != "":
		return "http://" + net.JoinHostPort(domain, Port("router"))
	case router != nil:
		return "http://" + net.JoinHostPort(router.Target.Host, Port("router"))
	}
	return ""
}

// hbaLines are the pg_hba.conf lines that let the hosts' roles reach the
// velo database with its password: one per host named by address, or any
// address when a host is named by a name (pg_hba's own name matching needs
// reverse DNS).
func hbaLines(hosts []*host) []string {
	var lines []string
	for _, h := range hosts {
		ip := net.ParseIP(h.Target.Host)
		if ip == nil {
			return []string{"host velo velo 0.0.0.0/0 scram-sha-256", "host velo velo ::/0 scram-sha-256"}
		}
		bits := "/32"
		if ip.To4() == nil {
			bits = "/128"
		}
		lines = append(lines, "host velo velo "+ip.String()+bits+" scram-sha-256")
	}
	return lines
}

// installPostgres installs Debian's PostgreSQL on h when missing, makes it
// listen on the network for the velo database only, from the hosts in hba
// (password authentication; lines are added, never removed, so that a run
// on some hosts does not lock the others out), and creates the velo role
// and database.
func installPostgres(ctx context.Context, h *host, env *envFile, hba []string) error {
	u, _ := url.Parse(env.get("VELO_DATABASE_URL"))
	pass, _ := u.User.Password()
	h.progress("postgres: installing (apt) when missing, configuring")
	script := `set -e
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q postgresql >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; }
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
[ -n "$ver" ] || { echo "no PostgreSQL server in /usr/lib/postgresql" >&2; exit 1; }
[ -d /etc/postgresql/$ver/main ] || pg_createcluster $ver main >/dev/null
conf=/etc/postgresql/$ver/main
changed=
grep -q "^listen_addresses = '\*'" $conf/postgresql.conf || { echo "listen_addresses = '*'  # velo install" >> $conf/postgresql.conf; changed=1; }
reload=
for line in ` + strings.Join(quoteAll(hba), " ") + `; do grep -qxF "$line" $conf/pg_hba.conf || { echo "$line" >> $conf/pg_hba.conf; reload=1; }; done
systemctl enable --quiet postgresql@$ver-main 2>/dev/null || true
if [ -n "$changed" ]; then systemctl restart postgresql@$ver-main; else systemctl start postgresql@$ver-main; fi
[ -z "$reload" ] || [ -n "$changed" ] || systemctl reload postgresql@$ver-main
i=0; until pg_isready -q -p ` + pgPort + `; do i=$((i+1)); [ $i -lt 120 ] || { echo "PostgreSQL did not come up" >&2; exit 1; }; sleep 0.5; done
echo $ver
`
	out, err := h.conn.Run(ctx, script, nil)
	if err != nil {
		return fmt.Errorf("%s: postgres: %w", h.Target.Host, err)
	}
	// The password goes through standard input, never a command line.
	sql := fmt.Sprintf(`SELECT 'CREATE ROLE velo LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'velo')\gexec
ALTER ROLE velo LOGIN PASSWORD '%s';
SELECT 'CREATE DATABASE velo OWNER velo' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'velo')\gexec
`, pass)
	if _, err := h.conn.Run(ctx, "cd / && runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p "+pgPort+" -d postgres", strings.NewReader(sql)); err != nil {
		return fmt.Errorf("%s: postgres: create role and database: %w", h.Target.Host, err)
	}
	h.progress("postgres: PostgreSQL %s serving database velo on port %s", strings.TrimSpace(out), pgPort)
	return nil
}

// unit returns the systemd service unit of role on h.
func (h *host) unit(role string) string {
	args := []string{BinPath, role, "--addr", net.JoinHostPort("0.0.0.0", Port(role))}
	if role == "worker" {
		args = append(args, "--name", h.Target.Host, "--advertise", "http://"+net.JoinHostPort(h.Target.Host, Port(role)), "--data", DataDir+"/worker")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by velo install.\n[Unit]\nDescription=Velo %s\nAfter=network-online.target\nWants=network-online.target\n", role)
	if socketRoles[role] {
		fmt.Fprintf(&b, "Requires=velo-%s.socket\nAfter=velo-%s.socket\n", role, role)
	}
	fmt.Fprintf(&b, `
[Service]
User=%s
Group=%s
EnvironmentFile=%s
WorkingDirectory=%s
ExecStart=%s
Restart=on-failure
RestartSec=1
TimeoutStopSec=30
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
`, userName, userName, EnvPath, DataDir, strings.Join(args, " "))
	return b.String()
}

// socket returns the socket unit of a socketRoles role: systemd holds the
// listening socket, so connections made while the role restarts wait in
// its queue for the new process.
func socket(role string) string {
	return fmt.Sprintf(`# Written by velo install.
[Unit]
Description=Velo %s socket

[Socket]
ListenStream=%s
Backlog=4096
ReusePort=no

[Install]
WantedBy=sockets.target
`, role, Port(role))
}

// file is one file install writes on a host.
type file struct {
	path string
	mode os.FileMode
	data string
}

func (h *host) files(env *envFile) []file {
	fs := []file{{EnvPath, 0o600, env.String()}}
	for _, r := range h.Roles {
		fs = append(fs, file{unitDir + "/velo-" + r + ".service", 0o644, h.unit(r)})
		if socketRoles[r] {
			fs = append(fs, file{unitDir + "/velo-" + r + ".socket", 0o644, socket(r)})
		}
	}
	return fs
}

// install sets h up or upgrades it: the velo user and directories, the
// binary, the configuration and units, then each role (re)started in turn
// and waited for; if one does not come up with a new binary, the previous
// one is put back and the roles restarted with it.
func (h *host) install(ctx context.Context, env *envFile, healthTimeout time.Duration) error {
	prep := `set -e
id -u ` + userName + ` >/dev/null 2>&1 || useradd --system --user-group --home-dir ` + DataDir + ` --shell /usr/sbin/nologin ` + userName + `
install -d -m 0750 -o ` + userName + ` -g ` + userName + ` ` + DataDir + `
install -d -m 0755 /etc/velo
# A host with Docker: its worker runs Docker components too.
if getent group docker >/dev/null && ! id -nG ` + userName + ` | grep -qw docker; then usermod -aG docker ` + userName + `; fi
[ -e ` + BinPath + ` ] && sha256sum ` + BinPath + ` || true
`
	out, err := h.conn.Run(ctx, prep, nil)
	if err != nil {
		return fmt.Errorf("%s: prepare: %w", h.Target.Host, err)
	}
	old, _, _ := strings.Cut(strings.TrimSpace(out), " ")
	h.progress("velo user, %s, /etc/velo ready", DataDir)

	newBinary := old != h.sum
	hadBinary := old != ""
	if newBinary {
		f, err := os.Open(h.bin)
		if err != nil {
			return err
		}
		fi, _ := f.Stat()
		err = h.conn.WriteFile(ctx, newBin, 0o755, f)
		f.Close()
		if err != nil {
			return err
		}
		swap := "set -e; "
		if hadBinary {
			swap += "cp -p " + BinPath + " " + oldBin + "; "
		}
		swap += "mv -f " + newBin + " " + BinPath
		if _, err := h.conn.Run(ctx, swap, nil); err != nil {
			return fmt.Errorf("%s: binary: %w", h.Target.Host, err)
		}
		h.progress("binary shipped: %s, %.1f MB (%s)", h.version(ctx), float64(fi.Size())/1e6, h.origin)
	} else {
		h.progress("binary up to date: %s", h.version(ctx))
	}

	// What the files were before, to put back if the roles do not come up
	// with the new ones (held in memory only: the env file has secrets).
	var previous []previousFile
	for _, f := range h.files(env) {
		cur, ok, err := h.conn.ReadFile(ctx, f.path)
		if err != nil {
			return err
		}
		if ok && cur == f.data {
			continue
		}
		previous = append(previous, previousFile{file{f.path, f.mode, cur}, ok})
		if err := h.conn.WriteFile(ctx, f.path, f.mode, strings.NewReader(f.data)); err != nil {
			return err
		}
	}
	changedFiles := len(previous) > 0
	// Roles this host no longer runs stop.
	var stale []string
	for _, r := range roleOrder {
		if !slices.Contains(h.Roles, r) {
			stale = append(stale, "velo-"+r+".service", "velo-"+r+".socket")
		}
	}
	script := "set -e\n"
	if changedFiles {
		script += "systemctl daemon-reload\n"
	}
	script += "for u in " + strings.Join(stale, " ") + "; do if [ -e " + unitDir + "/$u ]; then systemctl disable --now --quiet $u || true; rm -f " + unitDir + "/$u; echo $u; fi; done\n"
	out, err = h.conn.Run(ctx, script, nil)
	if err != nil {
		return fmt.Errorf("%s: units: %w", h.Target.Host, err)
	}
	if changedFiles {
		h.progress("configuration and units written (%s, velo-{%s}.service)", EnvPath, strings.Join(h.Roles, ","))
	} else {
		h.progress("configuration and units up to date")
	}
	if removed := strings.Fields(out); len(removed) > 0 {
		h.progress("removed the units of roles it no longer runs: %s", strings.Join(removed, " "))
	}

	var restarted []string
	for _, r := range h.Roles {
		act, err := h.conn.Run(ctx, "systemctl is-active velo-"+r+".service || true", nil)
		if err != nil {
			return fmt.Errorf("%s: %w", h.Target.Host, err)
		}
		active := strings.TrimSpace(act) == "active"
		if active && !newBinary && !changedFiles {
			h.progress("%s: running, up to date", r)
			continue
		}
		start := time.Now()
		err = h.start(ctx, r)
		if err == nil {
			err = h.waitHealthy(ctx, r, healthTimeout)
		}
		if err != nil {
			if hadBinary && (newBinary || changedFiles) {
				// An upgrade or a reconfiguration of a running host: back
				// to what ran before.
				what := "the new configuration"
				if newBinary {
					what = "the new binary"
				}
				h.progress("%s: did not come up with %s, restoring the previous one", r, what)
				return h.restore(ctx, newBinary, previous, append(restarted, r), healthTimeout, err)
			}
			return fmt.Errorf("%s: %s: %w", h.Target.Host, r, err)
		}
		restarted = append(restarted, r)
		verb := "started"
		if active {
			verb = "restarted"
		}
		h.progress("%s: %s, /healthz ok on :%s (%.1fs)", r, verb, Port(r), time.Since(start).Seconds())
	}
	return nil
}

// start enables and (re)starts role's units.
func (h *host) start(ctx context.Context, role string) error {
	script := "set -e\n"
	if socketRoles[role] {
		script += "systemctl enable --quiet velo-" + role + ".socket\nsystemctl start velo-" + role + ".socket\n"
	}
	script += "systemctl enable --quiet velo-" + role + ".service\nsystemctl restart velo-" + role + ".service\n"
	_, err := h.conn.Run(ctx, script, nil)
	return err
}

// waitHealthy waits until role answers /healthz on its host, or fails
// with the last lines of its log.
func (h *host) waitHealthy(ctx context.Context, role string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	check := fmt.Sprintf("%s healthcheck http://127.0.0.1:%s/healthz", BinPath, Port(role))
	for {
		_, err := h.conn.Run(ctx, check, nil)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			logs, _ := h.conn.Run(context.Background(), "journalctl -u velo-"+role+".service -n 20 --no-pager 2>&1 || true", nil)
			return fmt.Errorf("no answer on /healthz after %s (%v); its log:\n%s", d, err, logs)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// previousFile is a file as it was before this run wrote it.
type previousFile struct {
	file
	existed bool
}

// restore puts back the previous binary (when a new one was shipped) and
// the previous configuration and units (those this run changed), then
// restarts roles with them.
func (h *host) restore(ctx context.Context, binary bool, files []previousFile, roles []string, healthTimeout time.Duration, cause error) error {
	if binary {
		if _, err := h.conn.Run(ctx, "set -e; mv -f "+oldBin+" "+BinPath, nil); err != nil {
			return fmt.Errorf("%s: %v; restoring the previous binary failed too: %w", h.Target.Host, cause, err)
		}
	}
	var gone []string
	for _, f := range files {
		if !f.existed {
			gone = append(gone, f.path)
			continue
		}
		if err := h.conn.WriteFile(ctx, f.path, f.mode, strings.NewReader(f.data)); err != nil {
			return fmt.Errorf("%s: %v; restoring %s failed too: %w", h.Target.Host, cause, f.path, err)
		}
	}
	if len(files) > 0 {
		script := "set -e\n"
		if len(gone) > 0 {
			script += "rm -f " + strings.Join(quoteAll(gone), " ") + "\n"
		}
		script += "systemctl daemon-reload\n"
		if _, err := h.conn.Run(ctx, script, nil); err != nil {
			return fmt.Errorf("%s: %v; restoring the previous configuration failed too: %w", h.Target.Host, cause, err)
		}
	}
	for _, r := range roles {
		err := h.start(ctx, r)
		if err == nil {
			err = h.waitHealthy(ctx, r, healthTimeout)
		}
		if err != nil {
			return fmt.Errorf("%s: %v; %s did not come back with the previous binary either: %w", h.Target.Host, cause, r, err)
		}
	}
	var what []string
	if binary {
		what = append(what, "binary")
	}
	if len(files) > 0 {
		what = append(what, "configuration")
	}
	h.progress("previous %s restored and running (%s)", strings.Join(what, " and "), h.version(ctx))
	return fmt.Errorf("%s: upgrade refused, previous %s restored: %w", h.Target.Host, strings.Join(what, " and "), cause)
}

// version is what the host's velo says it is.
func (h *host) version(ctx context.Context) string {
	out, err := h.conn.Run(ctx, BinPath+" version", nil)
	if err != nil {
		return "unknown version"
	}
	return strings.TrimSpace(out)
}

// Status is one host as velo hosts shows it.
type Status struct {
	Target  Target
	Roles   []string
	Version string
	Health  map[string]string // role → "ok", or what is wrong
	Err     error             // the host could not be reached
}

// Inspect reports each host's roles (its velo units), velo version and
// the health of each role (/healthz answered from the host itself).
func Inspect(ctx context.Context, s SSH, targets []Target) []Status {
	out := make([]Status, len(targets))
	for i, t := range targets {
		st := Status{Target: t, Health: map[string]string{}}
		c, err := s.Dial(ctx, t)
		if err != nil {
			st.Err = err
			out[i] = st
			continue
		}
		var script bytes.Buffer
		script.WriteString(BinPath + " version 2>/dev/null || echo none\n")
		for _, r := range roleOrder {
			fmt.Fprintf(&script, "if [ -e %s/velo-%s.service ]; then if %s healthcheck http://127.0.0.1:%s/healthz >/dev/null 2>&1; then echo %s ok; else echo %s $(systemctl is-active velo-%s.service); fi; fi\n", unitDir, r, BinPath, Port(r), r, r, r)
		}
		res, err := c.Run(ctx, script.String(), nil)
		c.Close()
		if err != nil {
			st.Err = err
			out[i] = st
			continue
		}
		lines := strings.Split(strings.TrimSpace(res), "\n")
		st.Version = strings.TrimSpace(lines[0])
		for _, l := range lines[1:] {
			role, health, _ := strings.Cut(strings.TrimSpace(l), " ")
			if health != "ok" {
				health = "not answering (" + health + ")"
			}
			st.Roles = append(st.Roles, role)
			st.Health[role] = health
		}
		out[i] = st
	}
	return out
}
