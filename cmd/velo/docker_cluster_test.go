package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/testsupport"
	"github.com/velo-run/velo/worker/docker/dockertest"
)

// TestClusterDockerWorkers runs velo's own image — FROM scratch with the
// static binary, built here since no registry is reachable — as two worker
// containers on a private Docker network created for the test. Postgres
// (the test's server on loopback) is reached from the containers through a
// TCP relay this test runs on the network's gateway address; deploymgr and
// the router run on the host, and the router forwards to the containers'
// addresses on the private network. Without a Docker engine the test is
// skipped, or fails under CI=true.
func TestClusterDockerWorkers(t *testing.T) {
	dockertest.Engine(t)
	c := newCluster(t, "VELO_WORKER_TIMEOUT=3s")
	suffix := randomHex(t)

	// The image: the static binary alone, plus empty /data and /tmp.
	ctxDir := t.TempDir()
	bin, err := os.ReadFile(veloBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(ctxDir, "velo"), bin, 0o755))
	must(t, os.Mkdir(filepath.Join(ctxDir, "data"), 0o755))
	must(t, os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(
		"FROM scratch\nCOPY velo /velo\nCOPY data /data\nCOPY data /tmp\nENV VELO_DATA=/data\nUSER 65534:65534\nENTRYPOINT [\"/velo\"]\n"), 0o644))
	image := "velo-test:" + suffix
	dockerRun(t, "build", "-q", "-t", image, ctxDir)
	t.Cleanup(func() { dockerQuiet("image", "rm", "-f", image) })

	// The private network, on a subnet of its own.
	network := "velo-test-" + suffix
	var subnet *net.IPNet
	for attempt := 0; ; attempt++ {
		b := make([]byte, 1)
		_, _ = rand.Read(b)
		cidr := fmt.Sprintf("10.%d.%d.0/24", 200+int(b[0])%50, int(b[0]))
		out, err := exec.Command("docker", "network", "create", "--driver", "bridge", "--subnet", cidr, network).CombinedOutput()
		if err == nil {
			_, subnet, _ = net.ParseCIDR(cidr)
			break
		}
		if attempt == 5 {
			t.Fatalf("docker network create: %v: %s", err, out)
		}
	}
	t.Cleanup(func() { dockerQuiet("network", "rm", network) })
	gateway := ipAt(subnet, 1)

	// Postgres for the containers: a relay on the gateway address to the
	// test server on loopback.
	dbu, err := url.Parse(c.DB)
	if err != nil {
		t.Fatal(err)
	}
	relay := startRelay(t, net.JoinHostPort(gateway.String(), "0"), dbu.Host)
	cdb := *dbu
	cdb.Host = relay
	containerDB := cdb.String()

	type dw struct{ name, ip, container string }
	var workers []dw
	for i, name := range []string{"da", "db"} {
		ip := ipAt(subnet, 10+i).String()
		container := "velo-test-" + name + "-" + suffix
		dockerRun(t, "run", "-d", "--name", container, "--network", network, "--ip", ip,
			"--read-only", "--tmpfs", "/data:uid=65534", "--tmpfs", "/tmp:uid=65534",
			"-e", "VELO_DATABASE_URL="+containerDB, "-e", "VELO_CLUSTER_TOKEN="+c.Token,
			image, "worker", "--addr", "0.0.0.0:8082", "--name", name, "--advertise", "http://"+ip+":8082")
		t.Cleanup(func() {
			if t.Failed() {
				out, _ := exec.Command("docker", "logs", "--tail", "40", container).CombinedOutput()
				t.Logf("--- container %s:\n%s", name, out)
			}
			dockerQuiet("rm", "-f", container)
		})
		workers = append(workers, dw{name, ip, container})
	}

	dm := c.Start("deploymgr", "deploymgr")
	rt := c.Start("router", "router")
	// The host reaches the containers on the private network.
	for _, w := range workers {
		testsupport.Eventually(c.T, 30*time.Second, "worker "+w.name+" healthy", func() bool {
			return exec.Command(veloBinary(t), "healthcheck", "http://"+w.ip+":8082/healthz").Run() == nil
		})
	}
	id := deployHello(c, dm, "hi")
	testsupport.Eventually(c.T, 30*time.Second, "hello ready in both containers", func() bool {
		return strings.Join(readyWorkers(c, dm), ",") == "da,db"
	})
	u := rt.URL + "/fn/hello/"
	testsupport.Eventually(c.T, 10*time.Second, "router serving from both containers", func() bool {
		seen := map[string]bool{}
		for _, cl := range load(u, 1, 4, 5*time.Second, nil) {
			if cl.status == 200 && strings.HasPrefix(cl.body, "hi from Velo!") {
				seen[cl.worker] = true
			}
		}
		return seen["da"] && seen["db"]
	})
	calls := load(u, 1, 10, 10*time.Second, nil)
	for i, cl := range calls {
		if cl.status != 200 || cl.deployment != fmt.Sprint(id) {
			t.Fatalf("call %d: %d %q", i, cl.status, cl.body)
		}
		if i > 0 && cl.worker == calls[i-1].worker {
			t.Fatalf("X-Velo-Worker did not alternate between the containers: %s", describeCalls(calls))
		}
	}

	// Kill one container under load: its address vanishes from the
	// network (no refusal, the dial times out), and the router carries on
	// with the other.
	const conc = 4
	stop := make(chan struct{})
	done := make(chan []call)
	go func() { done <- load(u, conc, 100000, 20*time.Second, stop) }()
	time.Sleep(time.Second)
	dockerRun(t, "kill", workers[0].container)
	killed := time.Now()
	time.Sleep(3 * time.Second)
	close(stop)
	calls = <-done
	bad := failed(calls)
	var after, lastDA time.Time
	var afterKill int
	for _, cl := range calls {
		if cl.start.After(killed) {
			afterKill++
			after = cl.end
		}
		if cl.worker == "da" && cl.end.After(lastDA) {
			lastDA = cl.end
		}
	}
	if len(bad) > conc {
		t.Fatalf("%d requests failed after killing a worker container, more than the %d in flight:\n%s", len(bad), conc, describeCalls(bad))
	}
	for _, cl := range bad {
		if cl.start.After(killed) {
			t.Fatalf("a request sent after the kill failed:\n%s", describeCalls([]call{cl}))
		}
	}
	if afterKill == 0 || after.IsZero() {
		t.Fatal("no request completed after the kill")
	}
	t.Logf("docker kill of a worker container under load: %d requests, %d failed (in flight), %d after the kill all served; last answer from it %v after the kill",
		len(calls), len(bad), afterKill, lastDA.Sub(killed).Round(time.Millisecond))
}

func randomHex(t testing.TB) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ipAt is the address n inside subnet.
func ipAt(subnet *net.IPNet, n int) net.IP {
	ip := make(net.IP, 4)
	copy(ip, subnet.IP.To4())
	ip[3] += byte(n)
	return ip
}

func dockerRun(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func dockerQuiet(args ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = exec.CommandContext(ctx, "docker", args...).Run()
}

// startRelay forwards TCP connections accepted on listen to target until
// the test ends, and returns the address it listens on.
func startRelay(t *testing.T, listen, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("relay listen on %s: %v", listen, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) bool {
		mu.Lock()
		defer mu.Unlock()
		if add && conns == nil {
			return false
		}
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			if !track(in, true) || !track(out, true) {
				in.Close()
				out.Close()
				continue
			}
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
				track(dst, false)
				track(src, false)
			}
			go pipe(out, in)
			go pipe(in, out)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestClusterDockerAutoscale: a Docker component busier than
// VELO_DOCKER_TARGET_RPS per replica gets a second replica on the other
// worker, and the router then serves it from both. The two workers run on
// the host and share its Docker engine, each with its own containers and
// image; deleting the component leaves nothing of either behind.
func TestClusterDockerAutoscale(t *testing.T) {
	dockertest.Engine(t)
	suffix := randomHex(t)
	wa, wb := "dka-"+suffix, "dkb-"+suffix
	// owned lists the containers and images the two workers have on the
	// engine, by their owner label.
	owned := func(kind string) []string {
		var ids []string
		for _, w := range []string{wa, wb} {
			args := []string{kind, "-q", "--filter", "label=run.velo.owner=" + w}
			if kind == "ps" {
				args = append(args, "-a")
			}
			if o, err := exec.Command("docker", args...).Output(); err == nil {
				ids = append(ids, strings.Fields(string(o))...)
			}
		}
		return ids
	}
	// Registered before the cluster's, so it runs after the workers
	// stopped: whatever happened, leave nothing behind.
	t.Cleanup(func() {
		for _, id := range owned("ps") {
			dockerQuiet("rm", "-f", id)
		}
		for _, id := range owned("images") {
			dockerQuiet("rmi", "-f", id)
		}
	})
	c := newCluster(t, "VELO_WORKER_TIMEOUT=3s", "VELO_DOCKER_TARGET_RPS=1", "VELO_SCALE_COOLDOWN=1s")

	// The component: the Docker tests' static server, FROM scratch.
	tgz := archivetest.TarGz(t, map[string]string{
		"Dockerfile": dockertest.Dockerfile,
		"server":     string(dockertest.Server(t)),
		"velo.toml":  "name = \"hello\"\nruntime = \"docker\"\nport = 8080\n[env]\nGREETING = \"docker\"\n",
	})

	dm := c.Start("deploymgr", "deploymgr")
	c.Start("worker-a", "worker", "--name", wa, "--data", t.TempDir())
	c.Start("worker-b", "worker", "--name", wb, "--data", t.TempDir())
	rt := c.Start("router", "router")
	d, err := c.Client(dm).Deploy(c.Ctx, "hello", bytes.NewReader(tgz))
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	c.WaitLive(dm, "hello", d.ID)
	if ws := readyWorkers(c, dm); len(ws) != 1 {
		t.Fatalf("Docker component placed on %v, want one worker (VELO_DOCKER_REPLICAS=1)", ws)
	}

	// The router learns of the new route through Postgres: wait for it.
	u := rt.URL + "/fn/hello/"
	testsupport.Eventually(c.T, 20*time.Second, "router serving hello", func() bool {
		calls := load(u, 1, 1, 10*time.Second, nil)
		return len(calls) == 1 && calls[0].status == 200
	})
	// 600 requests: several per second over the minutes the autoscaler
	// looks at, for a target of 1 per replica.
	for _, cl := range load(u, 4, 600, time.Minute, nil) {
		if cl.status != 200 || cl.body != "hello docker\n" {
			t.Fatalf("call under load: %d %q", cl.status, cl.body)
		}
	}
	testsupport.Eventually(c.T, 60*time.Second, "a second replica", func() bool {
		return strings.Join(readyWorkers(c, dm), ",") == wa+","+wb
	})
	testsupport.Eventually(c.T, 20*time.Second, "router serving from both workers", func() bool {
		seen := map[string]bool{}
		for _, cl := range load(u, 1, 6, 10*time.Second, nil) {
			if cl.status == 200 && cl.body == "hello docker\n" {
				seen[cl.worker] = true
			}
		}
		return seen[wa] && seen[wb]
	})

	// Delete: both workers remove their containers and images.
	must(t, c.Client(dm).Delete(c.Ctx, "hello"))
	testsupport.Eventually(c.T, 60*time.Second, "nothing of the component left on the engine", func() bool {
		return len(owned("ps"))+len(owned("images")) == 0
	})
}
