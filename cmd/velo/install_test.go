package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/debiantest"
	"github.com/velo-run/velo/internal/install"
	"github.com/velo-run/velo/internal/install/installtest"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

// buildVersion builds velo (static, as velo install ships it) into dir,
// calling itself version.
func buildVersion(t *testing.T, dir, version string) string {
	t.Helper()
	out := filepath.Join(dir, version, "velo")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", out, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, msg)
	}
	return out
}

// veloRun runs bin with args in the environment env (VELO_DATA and the
// like), with a deadline, and returns its output and error.
func veloRun(t *testing.T, bin string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestInstall installs a three-host cluster with velo install over SSH on
// Debian containers running systemd and sshd (PostgreSQL installed by
// --with-postgres on the first), deploys a component through it and calls
// it, re-runs the install (nothing restarts), kills a host, upgrades the
// other two to a newer binary under load (no call fails), and ships a
// binary that does not come up (the previous one is restored and serves).
func TestInstall(t *testing.T) {
	cli := dockertest.Engine(t)
	img := debiantest.Image(t, installtest.Packages()...)
	dir := t.TempDir()
	// The cluster tests' velo (built once per test process) is the old
	// version; the new one is the same code calling itself install-test-2.
	v1 := veloBinary(t)
	ver1, err := veloRun(t, v1, nil, "version")
	if err != nil {
		t.Fatalf("velo version: %v: %s", err, ver1)
	}
	ver1 = strings.TrimSpace(ver1)
	v2 := buildVersion(t, dir, "install-test-2")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	hs, err := installtest.New(ctx, cli, img, installtest.RandomName("velo-install"), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hs.Close(); err != nil {
			t.Error(err)
		}
	})
	env := []string{"VELO_DATA=" + filepath.Join(dir, "data"), "SSH_AUTH_SOCK="}
	sshArgs := []string{"--identity", hs.Identity, "--known-hosts", hs.KnownHosts}
	all := []string{"install", hs.Hosts[0].Target(), hs.Hosts[1].Target(), hs.Hosts[2].Target(), "--with-postgres"}

	// An unknown host key is refused, and nothing is installed.
	out, err := veloRun(t, v1, env, append(all, sshArgs...)...)
	if err == nil || !strings.Contains(out, "unknown host key") || !strings.Contains(out, "--accept-new-host-key") {
		t.Fatalf("install to hosts known_hosts does not list: %v\n%s\nwant it refused, naming --accept-new-host-key", err, out)
	}
	if got, _ := hs.Exec(ctx, 0, "ls /usr/local/bin/velo 2>&1 || true"); !strings.Contains(got, "No such file") {
		t.Errorf("refused install left %q", got)
	}

	out, err = veloRun(t, v1, env, append(append(all, sshArgs...), "--accept-new-host-key")...)
	if err != nil {
		t.Fatalf("velo install: %v\n%s", err, out)
	}
	t.Logf("velo install:\n%s", out)
	for i, h := range hs.Hosts {
		for _, step := range []string{"connected as admin", "binary shipped: " + ver1, "configuration and units written", "worker: started, /healthz ok"} {
			if !strings.Contains(out, h.IP+": "+step) {
				t.Errorf("no progress line %q for host %d", h.IP+": "+step, i+1)
			}
		}
	}
	for _, step := range []string{"postgres: PostgreSQL 15 serving database velo", "deploymgr: started", "router: started", "webui: started"} {
		if !strings.Contains(out, hs.Hosts[0].IP+": "+step) {
			t.Errorf("no progress line %q for the first host", step)
		}
	}
	admin := regexp.MustCompile(`admin token: ([0-9a-f]{64})`).FindStringSubmatch(out)
	if admin == nil || !strings.Contains(out, "dashboard:  http://"+hs.Hosts[0].IP+":8083") {
		t.Fatalf("no admin token or dashboard URL in the output")
	}
	api := "http://" + hs.Hosts[0].IP + ":8081"
	fn := "http://" + hs.Hosts[0].IP + ":8080/fn/hello/"

	// What is on a host: the configuration readable by root only, the
	// roles running as the unprivileged velo user.
	got, err := hs.Exec(ctx, 0, `stat -c '%a %U' /etc/velo/velo.env; for r in deploymgr worker router webui; do stat -c %U /proc/$(systemctl show -p MainPID --value velo-$r.service); done; stat -c %U /var/lib/velo`)
	if err != nil {
		t.Fatal(err)
	}
	if want := "600 root\nvelo\nvelo\nvelo\nvelo\nvelo\n"; strings.ReplaceAll(got, "\r", "") != want {
		t.Errorf("env file mode and owner, roles' users, data dir owner: %q, want %q", got, want)
	}
	if got, err := hs.Exec(ctx, 1, "ls /etc/systemd/system | grep velo"); err != nil || strings.TrimSpace(got) != "velo-worker.service" {
		t.Errorf("second host's units: %q, %v; want only velo-worker.service", got, err)
	}

	// A component deployed through the cluster answers through its router,
	// from the workers of every host.
	c := client.New(api, admin[1], nil)
	d, err := c.Deploy(ctx, "hello", bytes.NewReader(helloArchive(t, "installed")))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	workers := map[string]bool{}
	testsupport.EventuallyShow(t, 60*time.Second, "hello live and served by the three workers", func() bool {
		res, err := http.Get(fn)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == 200 && strings.Contains(string(b), "installed") && res.Header.Get("X-Velo-Deployment") == fmt.Sprint(d.ID) {
			workers[res.Header.Get("X-Velo-Worker")] = true
		}
		return len(workers) == 3
	}, func() string { return fmt.Sprint(workers) })

	hosts := func(bin string) string {
		t.Helper()
		out, err := veloRun(t, bin, env, append([]string{"hosts"}, sshArgs...)...)
		if err != nil {
			t.Errorf("velo hosts: %v\n%s", err, out)
		}
		return out
	}
	out = hosts(v1)
	if !regexp.MustCompile(regexp.QuoteMeta(hs.Hosts[0].IP)+`\s+deploymgr,worker,router,webui\s+`+regexp.QuoteMeta(ver1)+`\s+deploymgr ok, worker ok, router ok, webui ok`).MatchString(out) ||
		!regexp.MustCompile(regexp.QuoteMeta(hs.Hosts[2].IP)+`\s+worker\s+`+regexp.QuoteMeta(ver1)+`\s+worker ok`).MatchString(out) {
		t.Errorf("velo hosts:\n%s", out)
	}

	// The same install again changes nothing and restarts nothing.
	pids := func(i int) string {
		got, _ := hs.Exec(ctx, i, "systemctl show -p MainPID --value velo-worker.service")
		return got
	}
	before := pids(1)
	out, err = veloRun(t, v1, env, append(all, sshArgs...)...)
	if err != nil || !strings.Contains(out, hs.Hosts[1].IP+": binary up to date: "+ver1) || !strings.Contains(out, hs.Hosts[1].IP+": worker: running, up to date") || strings.Contains(out, "started") {
		t.Errorf("second install: %v\n%s\nwant everything up to date, nothing started", err, out)
	}
	if after := pids(1); after != before {
		t.Errorf("second install restarted the worker: pid %s, then %s", before, after)
	}

	// A host dies; the other two are upgraded, one at a time, while
	// 8 connections call the component: none fails.
	// A host whose key changed is refused, --accept-new-host-key or not.
	kh, err := os.ReadFile(hs.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(nil)
	otherKey, _ := ssh.NewPublicKey(other.Public())
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(kh)), "\n") {
		if !strings.HasPrefix(l, hs.Hosts[0].IP+" ") {
			lines = append(lines, l)
		}
	}
	lines = append(lines, knownhosts.Line([]string{hs.Hosts[0].IP}, otherKey))
	if err := os.WriteFile(hs.KnownHosts, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = veloRun(t, v1, env, append([]string{"install", hs.Hosts[0].Target(), "--accept-new-host-key"}, sshArgs...)...)
	if err == nil || !strings.Contains(out, "HOST KEY MISMATCH") {
		t.Errorf("install to a host whose key changed: %v\n%s\nwant it refused", err, out)
	}
	if err := os.WriteFile(hs.KnownHosts, kh, 0o600); err != nil {
		t.Fatal(err)
	}

	if err := hs.Kill(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// velo hosts says which host is down, and fails.
	out, err = veloRun(t, v1, env, append([]string{"hosts"}, sshArgs...)...)
	if err == nil || !regexp.MustCompile(regexp.QuoteMeta(hs.Hosts[2].IP)+`\s+-\s+-\s+unreachable`).MatchString(out) || !strings.Contains(out, hs.Hosts[1].IP) {
		t.Errorf("velo hosts with a host down: %v\n%s", err, out)
	}

	stop := make(chan struct{})
	var answered atomic.Int64
	done := make(chan []call, 1)
	go func() { done <- loadCounting(fn, 8, 1_000_000, 8*time.Minute, stop, &answered) }()
	testsupport.Eventually(t, 30*time.Second, "load flowing", func() bool { return answered.Load() > 50 })
	out, err = veloRun(t, v2, env, append([]string{"install", hs.Hosts[0].Target(), hs.Hosts[1].Target()}, sshArgs...)...)
	// Some more calls after the last restart.
	n := answered.Load()
	testsupport.Eventually(t, 30*time.Second, "calls after the upgrade", func() bool { return answered.Load() > n+50 })
	close(stop)
	calls := <-done
	if err != nil {
		t.Fatalf("upgrade: %v\n%s", err, out)
	}
	t.Logf("upgrade:\n%s", out)
	if bad := failed(calls); len(bad) > 0 {
		t.Errorf("%d of %d calls failed during the rolling upgrade:\n%s", len(bad), len(calls), describeCalls(bad))
	}
	for _, step := range []string{"0: binary shipped: install-test-2", "0: router: restarted", "1: worker: restarted"} {
		i := step[0] - '0'
		if !strings.Contains(out, hs.Hosts[i].IP+step[1:]) {
			t.Errorf("no progress line %q", hs.Hosts[i].IP+step[1:])
		}
	}
	out = hosts(v2)
	if !regexp.MustCompile(regexp.QuoteMeta(hs.Hosts[1].IP) + `\s+worker\s+install-test-2\s+worker ok`).MatchString(out) {
		t.Errorf("velo hosts after the upgrade:\n%s", out)
	}

	// A binary that does not come up, shipped with a new configuration,
	// is replaced by the previous binary, and the configuration too.
	envBefore, err := hs.Exec(ctx, 1, "cat /etc/velo/velo.env")
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho broken; exit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var progress testsupport.SyncBuffer
	_, err = install.Install(ctx, install.Options{
		Hosts:         []install.Host{{Target: mustTarget(t, hs.Hosts[1].Target()), Roles: []string{"worker"}}},
		SSH:           install.SSH{Identity: hs.Identity, KnownHosts: hs.KnownHosts},
		Binaries:      func(context.Context, string, string) (string, string, error) { return broken, "a broken build", nil },
		Domain:        "broken.example.test",
		Progress:      &progress,
		HealthTimeout: 5 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "previous binary and configuration restored") {
		t.Errorf("install of a binary that does not start: %v, want the previous one restored\n%s", err, progress.String())
	}
	if got, err := hs.Exec(ctx, 1, "cat /etc/velo/velo.env"); err != nil || got != envBefore {
		t.Errorf("configuration after the refused upgrade: %v\n%s\nwant it as before:\n%s", err, got, envBefore)
	}
	if got, err := hs.Exec(ctx, 1, "/usr/local/bin/velo version && /usr/local/bin/velo healthcheck http://127.0.0.1:8082/healthz && echo healthy"); err != nil || !strings.Contains(got, "install-test-2") || !strings.Contains(got, "healthy") {
		t.Errorf("after the refused upgrade: %q, %v; want install-test-2 running", got, err)
	}

	// --domain: components at NAME.<domain>, and the public URL says
	// http:// at the routers' port (velo install sets up no TLS).
	out, err = veloRun(t, v2, env, append([]string{"install", hs.Hosts[0].Target(), hs.Hosts[1].Target(), "--domain", "apps.example.test"}, sshArgs...)...)
	if err != nil || !strings.Contains(out, "components: http://apps.example.test:8080/fn/NAME/") {
		t.Errorf("install with --domain: %v\n%s\nwant the public URL http://apps.example.test:8080", err, out)
	}
	req, _ := http.NewRequest("GET", "http://"+hs.Hosts[0].IP+":8080/", nil)
	req.Host = "hello.apps.example.test"
	testsupport.EventuallyShow(t, 60*time.Second, "hello at hello.apps.example.test", func() bool {
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode == 200 && strings.Contains(string(b), "installed")
	}, func() string { return out })
}

func mustTarget(t *testing.T, s string) install.Target {
	t.Helper()
	tg, err := install.ParseTarget(s)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}
