package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/archive"
	veloclient "github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/debiantest"
	"github.com/velo-run/velo/internal/install/installtest"
)

// installConns is how many connections call the component during the
// rolling upgrade.
const installConns = 8

// installSection installs a three-host cluster with velo install
// --with-postgres on Debian containers (systemd, sshd; internal/debiantest)
// on a Docker network of its own, deploys the C module, and upgrades all
// three hosts to another build while installConns connections call the
// component through the router: the install's wall time, the upgrade's,
// and the calls that failed (target 0). Each round has fresh hosts. There
// is no peer.
func installSection(ctx context.Context, b *Bench) (string, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return "", err
	}
	defer cli.Close()
	b.logf("install: Debian host image (built once per machine)")
	img, err := debiantest.Build(ctx, cli, installtest.Packages(), io.Discard)
	if err != nil {
		return "", err
	}
	v1, v2 := filepath.Join(b.Tmp, "install", "v1", "velo"), filepath.Join(b.Tmp, "install", "v2", "velo")
	for _, v := range []struct{ out, version string }{{v1, "bench-1"}, {v2, "bench-2"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version="+v.version, "-o", v.out, "./cmd/velo")
		cmd.Dir = b.Root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	var pack bytes.Buffer
	comp, err := b.newWasmComponent("hello", filepath.Join(b.Root, "bench", "testdata", "hello.wasm"))
	if err != nil {
		return "", err
	}
	if err := archive.Pack(&pack, comp.dir); err != nil {
		return "", err
	}

	var installs, upgrades []time.Duration
	var calls, failures int64
	var sample string
	for round := 1; round <= b.Rounds; round++ {
		in, up, n, bad, err := installRound(ctx, b, cli, img, v1, v2, pack.Bytes())
		if err != nil {
			return "", fmt.Errorf("round %d: %w", round, err)
		}
		installs, upgrades = append(installs, in), append(upgrades, up)
		calls, failures = calls+n, failures+int64(len(bad))
		if sample == "" && len(bad) > 0 {
			sample = bad[0]
		}
		b.logf("install round %d: install %v, upgrade %v, %d of %d calls failed", round, in, up, len(bad), n)
	}
	secs := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	rounds := func(ds []time.Duration) string {
		return "rounds " + strings.Join(mapf(durFloats(ds), func(v float64) string { return secs(time.Duration(v)) }), ", ")
	}
	t := b.newTable("")
	t.add("`velo install` of three hosts (all roles + PostgreSQL on the first, a worker on each other), wall time", secs(median(installs)), "—", rounds(installs), "reported", info)
	t.add("rolling upgrade of the three hosts to a new build, wall time", secs(median(upgrades)), "—", rounds(upgrades), "reported", info)
	t.add(fmt.Sprintf("calls failed during the upgrade, %d connections", installConns), fmt.Sprintf("%d of %d", failures, calls), "—", "", "0", verdict(failures == 0))

	var sb strings.Builder
	sb.WriteString("## install — `velo install` over SSH, and a rolling upgrade under load\n\n")
	sb.WriteString(b.Stamp() + "\n\n")
	fmt.Fprintf(&sb, "Three Debian bookworm containers (debootstrap + `docker import`, systemd as PID 1, Debian's sshd; Debian's PostgreSQL 15 packages in apt's cache, not installed, since the containers reach no mirror; `internal/debiantest`) on a private Docker network, reached as an unprivileged user with sudo. `velo install ssh://admin@h1 ssh://admin@h2 ssh://admin@h3 --with-postgres --accept-new-host-key` ships the 47 MB binary to each, installs PostgreSQL with apt on h1 and configures it, writes the units and waits for every role's `/healthz`: its wall time is the first figure. The C module `bench/testdata/hello.wasm` is deployed; then %d connections call it through the router on h1 (`GET /fn/hello/bench`, keep-alive, Go client) while `velo install` of another build (same code, another version string) upgrades h1, h2, h3 in place, one role at a time. A call fails when it gets an error or a status other than 200. Fresh containers each round, %d rounds; no peer.", installConns, b.Rounds)
	if sample != "" {
		fmt.Fprintf(&sb, " A failed call: %s.", sample)
	}
	sb.WriteString("\n\n")
	sb.WriteString(t.String())
	return sb.String(), nil
}

// installRound runs one round on fresh hosts: the install's and the
// upgrade's wall time, the calls sent and those that failed.
func installRound(ctx context.Context, b *Bench, cli *client.Client, img, v1, v2 string, pack []byte) (time.Duration, time.Duration, int64, []string, error) {
	hs, err := installtest.New(ctx, cli, img, installtest.RandomName("velo-bench-install"), 3)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	defer hs.Close()
	args := []string{"install"}
	for _, h := range hs.Hosts {
		args = append(args, h.Target())
	}
	args = append(args, "--identity", hs.Identity, "--known-hosts", hs.KnownHosts, "--accept-new-host-key")
	run := func(bin string, args ...string) (string, time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "VELO_DATA="+filepath.Join(b.Tmp, "install", "data"), "SSH_AUTH_SOCK=")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", 0, fmt.Errorf("velo %s: %v\n%s", args[0], err, out)
		}
		return string(out), time.Since(start), nil
	}
	out, installTook, err := run(v1, append(args, "--with-postgres")...)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	m := regexp.MustCompile(`admin token: ([0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0, nil, fmt.Errorf("no admin token in:\n%s", out)
	}
	c := veloclient.New("http://"+hs.Hosts[0].IP+":8081", m[1], nil)
	if _, err := c.Deploy(ctx, "hello", bytes.NewReader(pack)); err != nil {
		return 0, 0, 0, nil, err
	}
	url := "http://" + hs.Hosts[0].IP + ":8080/fn/hello/bench"
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: installConns}}
	defer hc.CloseIdleConnections()
	get := func() error {
		res, err := hc.Get(url)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err == nil && res.StatusCode != 200 {
			err = fmt.Errorf("status %d", res.StatusCode)
		}
		return err
	}
	live := time.Now().Add(2 * time.Minute)
	for get() != nil {
		if time.Now().After(live) {
			return 0, 0, 0, nil, fmt.Errorf("hello not served at %s after 2 minutes", url)
		}
		time.Sleep(200 * time.Millisecond)
	}

	var (
		sent atomic.Int64
		mu   sync.Mutex
		bad  []string
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	deadline := time.Now().Add(10 * time.Minute) // every load loop is bounded
	for range installConns {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				sent.Add(1)
				if err := get(); err != nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s %v", time.Now().Format("15:04:05.000"), err))
					mu.Unlock()
				}
			}
		})
	}
	_, upgradeTook, err := run(v2, args...)
	// A few more calls once the last role is back.
	n := sent.Load()
	for sent.Load() < n+100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if err != nil {
		return 0, 0, 0, nil, err
	}
	return installTook, upgradeTook, sent.Load(), bad, nil
}
