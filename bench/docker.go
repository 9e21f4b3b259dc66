package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	dockerclient "github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker"
)

// labelBench marks the peer containers the docker section creates, so that
// its cleanup finds every one of them (and nothing else).
const labelBench = "run.velo.bench"

// dockerResult holds the docker section's samples.
type dockerResult struct {
	veloCold, bareCold, hardCold []time.Duration // stopped → first response
	veloWake, bareWake           []time.Duration // paused → first response
	startAPI, unpauseAPI         []time.Duration // the peer's ContainerStart / ContainerUnpause calls alone
	veloStartAPI, veloUnpauseAPI []time.Duration // the same calls made by Velo's runtime
	// warm latency per round
	veloP50, veloP99, directP50, directP99 []time.Duration
	warmN                                  int
	image                                  string
	loads                                  []string // /proc/loadavg before each part
}

// dockerSection measures a Docker component's cold start, wake and warm
// latency through Velo against the same image run with the bare engine API
// (see bench/README.md).
func dockerSection(ctx context.Context, b *Bench) (string, error) {
	cli, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		return "", fmt.Errorf("docker client: %w", err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx); err != nil {
		return "", fmt.Errorf("docker engine not reachable: %w", err)
	}
	cli.NegotiateAPIVersion(ctx)

	dir, err := dockerComponentDir(ctx, b)
	if err != nil {
		return "", err
	}
	owner := fmt.Sprintf("velo-bench-%d", os.Getpid())
	name := fmt.Sprintf("bench-docker-%d", os.Getpid())
	rt := &capturingRuntime{insts: map[int64]*docker.Instance{}}
	// Velo's runtime gets its own engine client whose transport times the
	// start and unpause calls, to split Velo's cold start and wake into the
	// engine's part and Velo's.
	plain, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv)
	if err != nil {
		return "", err
	}
	timed := plain.HTTPClient()
	plain.Close()
	calls := &engineCalls{next: timed.Transport}
	timed.Transport = calls
	veloCli, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation(), dockerclient.WithHTTPClient(timed))
	if err != nil {
		return "", err
	}
	defer veloCli.Close()
	log := slog.New(slog.NewTextHandler(b.log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := node.Start(ctx, node.Config{
		Addr:    "127.0.0.1:0",
		DataDir: filepath.Join(b.Tmp, "velo-docker"),
		Logger:  log,
		Docker: func(ctx context.Context, _ string, log *slog.Logger) (worker.Runtime, error) {
			// Idle timers far away: the bench forces every state itself.
			r, err := docker.New(ctx, docker.Config{Owner: owner, Client: veloCli, Logger: log, IdlePause: time.Hour, IdleStop: 2 * time.Hour})
			rt.Runtime = r
			return rt, err
		},
	})
	if err != nil {
		return "", fmt.Errorf("start velo: %w", err)
	}
	v := &Velo{URL: n.URL, Client: client.New(n.URL, n.Token, nil), node: n}
	res := &dockerResult{}
	defer dockerCleanup(b, cli, v, name, owner, res)

	b.logf("docker: deploying %s (build FROM scratch image)", name)
	dep, err := deployDir(ctx, v, name, dir)
	if err != nil {
		return "", err
	}
	inst := rt.instance(dep)
	if inst == nil {
		return "", fmt.Errorf("deployment %d: the docker runtime prepared no instance for it", dep)
	}
	st := inst.Stats()
	if len(st.Containers) == 0 {
		return "", errors.New("docker instance has no container after deploy")
	}
	info, err := cli.ContainerInspect(ctx, st.Containers[0].ID)
	if err != nil {
		return "", err
	}
	res.image = info.Config.Image
	hc := newHTTPClient()
	defer hc.CloseIdleConnections()
	veloURL := v.URL + "/fn/" + name + "/"
	if err := dockerGet(ctx, hc, veloURL); err != nil {
		return "", err
	}

	bare, err := newBareContainer(ctx, cli, res.image, "bare", nil)
	if err != nil {
		return "", err
	}
	hard, err := newBareContainer(ctx, cli, res.image, "hardened", hardenedHostConfig)
	if err != nil {
		return "", err
	}

	samples := max(20, 5*b.Rounds)
	calls.reset()
	if err := dockerCold(ctx, b, inst, hc, veloURL, bare, hard, samples, res); err != nil {
		return "", err
	}
	res.veloStartAPI = calls.reset()["start"]
	if err := dockerWake(ctx, b, cli, inst, hc, veloURL, bare, samples*3/2, res); err != nil {
		return "", err
	}
	res.veloUnpauseAPI = calls.reset()["unpause"]
	if err := dockerWarm(ctx, b, inst, hc, veloURL, res); err != nil {
		return "", err
	}
	return dockerReport(b, res, samples), nil
}

// dockerComponentDir builds worker/docker/testdata/server as a static
// Linux binary and lays out a component serving it from a FROM scratch
// image.
func dockerComponentDir(ctx context.Context, b *Bench) (string, error) {
	dir := filepath.Join(b.Tmp, "components", "docker")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	b.logf("building worker/docker/testdata/server (static, linux)")
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "server"), "./worker/docker/testdata/server")
	build.Dir = b.Root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build test server: %v\n%s", err, out)
	}
	files := map[string]string{
		"Dockerfile": "FROM scratch\nCOPY server /server\nENTRYPOINT [\"/server\"]\n",
		"velo.toml":  "runtime = \"docker\"\nport = 8080\n\n[env]\nGREETING = \"bench\"\n\n[scale]\nmin = 0\nmax = 1\n",
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// deployDir uploads dir as component name and waits until it is live.
func deployDir(ctx context.Context, v *Velo, name, dir string) (int64, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(archive.Pack(pw, dir)) }()
	d, err := v.Client.Deploy(ctx, name, pr)
	pr.Close()
	if err != nil {
		return 0, fmt.Errorf("deploy %s: %w", name, err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		got, err := v.Client.Deployment(ctx, d.ID)
		if err != nil {
			return 0, fmt.Errorf("deployment %d: %w", d.ID, err)
		}
		switch {
		case got.Status == "failed":
			return 0, fmt.Errorf("deployment %d of %s failed: %s\n%s", d.ID, name, got.Error, got.BuildLog)
		case got.Status == "ready" && got.Live:
			return d.ID, nil
		case time.Now().After(deadline):
			return 0, fmt.Errorf("deployment %d of %s not live after 5 minutes (status %s)", d.ID, name, got.Status)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// engineCalls is an http.RoundTripper for an engine client that records
// how long each POST /containers/{id}/start and /unpause took.
type engineCalls struct {
	next http.RoundTripper
	mu   sync.Mutex
	took map[string][]time.Duration
}

func (e *engineCalls) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := e.next.RoundTrip(r)
	if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/containers/") {
		op := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		if op == "start" || op == "unpause" {
			e.mu.Lock()
			if e.took == nil {
				e.took = map[string][]time.Duration{}
			}
			e.took[op] = append(e.took[op], time.Since(start))
			e.mu.Unlock()
		}
	}
	return resp, err
}

// reset returns the calls recorded so far and forgets them.
func (e *engineCalls) reset() map[string][]time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := e.took
	e.took = nil
	return t
}

// capturingRuntime is Velo's docker runtime, unchanged, remembering the
// instance it prepares for each deployment so that the bench can force a
// container state (Instance.Stop, Instance.Pause) the way the idle timers
// would, and read where its container listens. Retire and the rest are
// the embedded runtime's.
type capturingRuntime struct {
	*docker.Runtime
	mu    sync.Mutex
	insts map[int64]*docker.Instance
}

func (r *capturingRuntime) Prepare(ctx context.Context, spec worker.Spec) (worker.Instance, error) {
	inst, err := r.Runtime.Prepare(ctx, spec)
	if di, ok := inst.(*docker.Instance); ok && err == nil {
		r.mu.Lock()
		r.insts[spec.Deployment] = di
		r.mu.Unlock()
	}
	return inst, err
}

func (r *capturingRuntime) instance(d int64) *docker.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.insts[d]
}

// bareContainer is the peer: a container of the same image driven with the
// engine API the way a person would with docker start / unpause and curl.
type bareContainer struct {
	cli  *dockerclient.Client
	id   string
	addr string
	hc   *http.Client
	// startAPI is how long the last ContainerStart call took.
	startAPI time.Duration
}

// hardenedHostConfig applies the hardening Velo's containers run with (see
// worker/docker: no capabilities, no-new-privileges, an init, read-only
// root with a tmpfs /tmp, memory, CPU and pids limits) to a peer container,
// to tell the cost of hardening from the cost of Velo's orchestration.
func hardenedHostConfig(hc *container.HostConfig) {
	init := true
	pids := int64(docker.DefaultPids)
	hc.CapDrop = []string{"ALL"}
	hc.SecurityOpt = []string{"no-new-privileges"}
	hc.Init = &init
	hc.ReadonlyRootfs = true
	hc.Tmpfs = map[string]string{"/tmp": "rw,noexec,nosuid,size=64m"}
	hc.Resources = container.Resources{Memory: 128 << 20, MemorySwap: 128 << 20, NanoCPUs: int64(docker.DefaultCPUs * 1e9), PidsLimit: &pids}
}

func newBareContainer(ctx context.Context, cli *dockerclient.Client, img, kind string, harden func(*container.HostConfig)) (*bareContainer, error) {
	hc := &container.HostConfig{PortBindings: nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1"}}}}
	if harden != nil {
		harden(hc)
	}
	resp, err := cli.ContainerCreate(ctx, &container.Config{
		Image:        img,
		Env:          []string{"PORT=8080", "GREETING=bench"},
		ExposedPorts: nat.PortSet{"8080/tcp": {}},
		Labels:       map[string]string{labelBench: strconv.Itoa(os.Getpid())},
	}, hc, nil, nil, fmt.Sprintf("velo-bench-%s-%d", kind, os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("create %s peer container: %w", kind, err)
	}
	return &bareContainer{cli: cli, id: resp.ID, hc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}}, nil
}

// start is `docker start` followed by polling GET / every millisecond
// until the first HTTP response; its time is the peer's cold start.
func (c *bareContainer) start(ctx context.Context) error {
	start := time.Now()
	if err := c.cli.ContainerStart(ctx, c.id, container.StartOptions{}); err != nil {
		return err
	}
	c.startAPI = time.Since(start)
	info, err := c.cli.ContainerInspect(ctx, c.id)
	if err != nil {
		return err
	}
	c.addr = ""
	if info.NetworkSettings != nil {
		for _, p := range info.NetworkSettings.Ports["8080/tcp"] {
			if p.HostPort != "" {
				c.addr = "127.0.0.1:" + p.HostPort
			}
		}
	}
	if c.addr == "" {
		return errors.New("peer container: port 8080 not published")
	}
	return c.firstResponse(ctx)
}

// firstResponse polls GET / every millisecond, for up to 30s, until an
// HTTP response comes.
func (c *bareContainer) firstResponse(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+c.addr+"/", nil)
		res, err := c.hc.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("peer container never answered: %w", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// stop kills the container (the peer's stop is not timed) and waits until
// it is down.
func (c *bareContainer) stop(ctx context.Context) error {
	c.hc.CloseIdleConnections()
	t := 0
	return c.cli.ContainerStop(ctx, c.id, container.StopOptions{Signal: "SIGKILL", Timeout: &t})
}

// dockerCold measures part 1: stopped → first response, Velo and the two
// peers interleaved with the order rotating every sample.
func dockerCold(ctx context.Context, b *Bench, inst *docker.Instance, hc *http.Client, veloURL string, bare, hard *bareContainer, n int, res *dockerResult) error {
	b.logf("docker: cold start, %d samples per variant, interleaved", n)
	res.loads = append(res.loads, loadavg())
	velo := func() (time.Duration, error) {
		if err := inst.Stop(ctx); err != nil {
			return 0, fmt.Errorf("stop velo's container: %w", err)
		}
		if s := inst.Stats(); s.Count(docker.Stopped) != len(s.Containers) {
			return 0, fmt.Errorf("velo's containers not all stopped: %+v", s.Containers)
		}
		time.Sleep(200 * time.Millisecond) // let the engine settle, as for the peers
		start := time.Now()
		err := dockerGet(ctx, hc, veloURL)
		return time.Since(start), err
	}
	peer := func(c *bareContainer) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			time.Sleep(200 * time.Millisecond)
			start := time.Now()
			err := c.start(ctx)
			d := time.Since(start)
			if serr := c.stop(ctx); err == nil {
				err = serr
			}
			return d, err
		}
	}
	variants := []func() (time.Duration, error){velo, peer(bare), peer(hard)}
	out := []*[]time.Duration{&res.veloCold, &res.bareCold, &res.hardCold}
	deadline := time.Now().Add(10 * time.Minute)
	for k := 0; k < n && time.Now().Before(deadline); k++ {
		for j := range variants {
			i := (j + k) % len(variants)
			d, err := variants[i]()
			if err != nil {
				return fmt.Errorf("cold start sample %d: %w", k, err)
			}
			*out[i] = append(*out[i], d)
			if i == 1 {
				res.startAPI = append(res.startAPI, bare.startAPI)
			}
		}
		b.logf("  cold %d/%d: velo %s · bare %s · hardened bare %s", k+1, n,
			fmtDur(res.veloCold[k]), fmtDur(res.bareCold[k]), fmtDur(res.hardCold[k]))
	}
	return nil
}

// dockerWake measures part 2: paused → first response through Velo and a
// bare docker unpause + GET, alternating.
func dockerWake(ctx context.Context, b *Bench, cli *dockerclient.Client, inst *docker.Instance, hc *http.Client, veloURL string, bare *bareContainer, n int, res *dockerResult) error {
	b.logf("docker: wake from paused, %d samples per variant, interleaved", n)
	res.loads = append(res.loads, loadavg())
	if err := bare.start(ctx); err != nil {
		return err
	}
	defer bare.stop(context.WithoutCancel(ctx))
	if err := dockerGet(ctx, hc, veloURL); err != nil { // Velo's container running again
		return err
	}
	velo := func() (time.Duration, error) {
		if err := inst.Pause(ctx); err != nil {
			return 0, fmt.Errorf("pause velo's container: %w", err)
		}
		if s := inst.Stats(); s.Count(docker.Paused) != len(s.Containers) {
			return 0, fmt.Errorf("velo's containers not all paused: %+v", s.Containers)
		}
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		err := dockerGet(ctx, hc, veloURL)
		return time.Since(start), err
	}
	peer := func() (time.Duration, error) {
		if err := cli.ContainerPause(ctx, bare.id); err != nil {
			return 0, err
		}
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if err := cli.ContainerUnpause(ctx, bare.id); err != nil {
			return 0, err
		}
		res.unpauseAPI = append(res.unpauseAPI, time.Since(start))
		err := bare.firstResponse(ctx)
		return time.Since(start), err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for k := 0; k < n && time.Now().Before(deadline); k++ {
		order := []bool{k%2 == 0, k%2 == 1}
		for _, isVelo := range order {
			if isVelo {
				d, err := velo()
				if err != nil {
					return fmt.Errorf("wake sample %d: %w", k, err)
				}
				res.veloWake = append(res.veloWake, d)
			} else {
				d, err := peer()
				if err != nil {
					return fmt.Errorf("unpause sample %d: %w", k, err)
				}
				res.bareWake = append(res.bareWake, d)
			}
		}
	}
	b.logf("  wake p50 velo %s · bare unpause %s", fmtDur(percentile(res.veloWake, 50)), fmtDur(percentile(res.bareWake, 50)))
	return nil
}

// dockerWarm measures part 3: sequential keep-alive requests through the
// router vs straight to the same container's published port.
func dockerWarm(ctx context.Context, b *Bench, inst *docker.Instance, hc *http.Client, veloURL string, res *dockerResult) error {
	if err := dockerGet(ctx, hc, veloURL); err != nil {
		return err
	}
	s := inst.Stats()
	if s.Count(docker.Running) != 1 {
		return fmt.Errorf("want one running container for warm latency, have %+v", s.Containers)
	}
	var direct string
	for _, c := range s.Containers {
		if c.State == docker.Running {
			direct = "http://" + c.Addr + "/"
		}
	}
	const warm, n = 200, 2000
	b.logf("docker: warm latency, %d rounds of %d requests per variant", b.Rounds, n)
	res.loads = append(res.loads, loadavg())
	variants := []func() error{
		func() error { return dockerGet(ctx, hc, veloURL) },
		func() error { return dockerGet(ctx, hc, direct) },
	}
	for r := 0; r < b.Rounds; r++ {
		samples, err := interleave(ctx, variants, warm, n, 3*time.Minute)
		if err != nil {
			return fmt.Errorf("warm latency: %w", err)
		}
		res.warmN = len(samples[0])
		res.veloP50 = append(res.veloP50, percentile(samples[0], 50))
		res.veloP99 = append(res.veloP99, percentile(samples[0], 99))
		res.directP50 = append(res.directP50, percentile(samples[1], 50))
		res.directP99 = append(res.directP99, percentile(samples[1], 99))
		b.logf("  round %d: velo p50 %s p99 %s · direct p50 %s p99 %s", r+1,
			fmtDur(res.veloP50[r]), fmtDur(res.veloP99[r]), fmtDur(res.directP50[r]), fmtDur(res.directP99[r]))
	}
	return nil
}

// dockerGet fetches url and checks for the component's greeting.
func dockerGet(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != "hello bench\n" {
		return fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	return nil
}

// dockerCleanup deletes the component (its containers and image), stops
// Velo, and removes the peer containers and anything of owner left over.
func dockerCleanup(b *Bench, cli *dockerclient.Client, v *Velo, name, owner string, res *dockerResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := v.Client.Delete(ctx, name); err != nil {
		b.logf("docker cleanup: delete %s: %v", name, err)
	}
	// Deleting removes the containers and then the image in the background.
	for deadline := time.Now().Add(10 * time.Second); res.image != "" && time.Now().Before(deadline); {
		if _, err := cli.ImageInspect(ctx, res.image); err != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	v.Close()
	for _, lbl := range []string{labelBench + "=" + strconv.Itoa(os.Getpid()), docker.LabelOwner + "=" + owner} {
		list, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", lbl))})
		if err != nil {
			b.logf("docker cleanup: list containers: %v", err)
			continue
		}
		for _, c := range list {
			if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
				b.logf("docker cleanup: remove %s: %v", c.ID[:12], err)
			}
		}
	}
	imgs, err := cli.ImageList(ctx, image.ListOptions{Filters: filters.NewArgs(filters.Arg("label", docker.LabelOwner+"="+owner))})
	if err != nil {
		b.logf("docker cleanup: list images: %v", err)
	}
	for _, img := range imgs {
		if _, err := cli.ImageRemove(ctx, img.ID, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			b.logf("docker cleanup: remove image %s: %v", img.ID, err)
		}
	}
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func dockerReport(b *Bench, r *dockerResult, samples int) string {
	var s strings.Builder
	fmt.Fprintf(&s, "## docker — a Docker component through Velo vs the bare engine\n\n")
	fmt.Fprintf(&s, "%s\n\n", b.Stamp())
	fmt.Fprintf(&s, "Image: `worker/docker/testdata/server` (a static Go HTTP server) built `FROM scratch` by Velo from the component's "+
		"Dockerfile (`runtime = \"docker\"`, port 8080, `scale.max = 1`). Velo runs in the bench process (`node.Start`, embedded SQLite, "+
		"hit recording on, the real `worker/docker` runtime with idle timers set to an hour so that only the bench changes a container's state). "+
		"Every request goes through the router over loopback HTTP/1.1 keep-alive: `GET /fn/NAME/`. The peers are containers of the very same "+
		"image tag created with the engine API (published on 127.0.0.1): **bare** has no options beyond the port, **hardened bare** has "+
		"Velo's hardening (all capabilities dropped, `no-new-privileges`, `--init`, read-only root and tmpfs `/tmp`, memory, CPU and pids limits).\n\n")
	fmt.Fprintf(&s, "How the states are forced: the bench wraps Velo's docker runtime (`worker.Runtime`) to keep the `*docker.Instance` "+
		"it prepares, and calls `Instance.Stop` / `Instance.Pause` — the transitions the idle timers run — then waits until Velo's own state "+
		"says stopped / paused. Stopping or pausing the container behind Velo's back would not do: an external stop is taken for a crash and "+
		"replaced at once, an external pause is not seen at all.\n\n")
	fmt.Fprintf(&s, "1. **Cold start** (stopped → first response): Velo: the timed `GET` makes the instance `docker start` its stopped container, "+
		"read the published port, poll it until it answers HTTP (backoff from 1 ms), then proxy the request. Peer: `ContainerStart` + "+
		"`ContainerInspect` + `GET /` every 1 ms until the first response (the peer is then killed, untimed). "+
		"%d samples each, interleaved, the order rotating every sample, 200 ms of quiet before each.\n", len(r.veloCold))
	fmt.Fprintf(&s, "2. **Wake from paused**: Velo: `Instance.Pause`, then the timed `GET` (unpause + proxy on the kept-alive connection). "+
		"Peer: `docker pause`, then timed `ContainerUnpause` + `GET /` (on its kept-alive connection). %d samples each, alternating.\n", len(r.veloWake))
	fmt.Fprintf(&s, "3. **Warm latency**: sequential keep-alive `GET`s through the router vs straight to the published port of Velo's own "+
		"container, 200 warm-up then %d timed per variant, interleaved in blocks of 50; %d rounds, the median of the per-round p50/p99.\n\n",
		r.warmN, b.Rounds)
	fmt.Fprintf(&s, "Where the time goes: Velo's runtime gets an engine client whose transport times each `POST /containers/{id}/start` "+
		"and `/unpause`; the peer's calls are timed around the same API calls. The rows *call alone* and *minus the call* split each figure into "+
		"the engine's part and the rest (for Velo: inspect, readiness polling, proxying, the router; for the peer: inspect and polling).\n\n")

	t := b.newTable("")
	vc, bc, hc := percentile(r.veloCold, 50), percentile(r.bareCold, 50), percentile(r.hardCold, 50)
	ratio := float64(vc) / float64(bc)
	t.add(fmt.Sprintf("cold start p50 (n=%d)", len(r.veloCold)), fmtDur(vc), fmtDur(bc), fmt.Sprintf("%.2f×", ratio), "≤ 1.1× bare", verdict(ratio <= 1.1))
	t.add("cold start p99", fmtDur(percentile(r.veloCold, 99)), fmtDur(percentile(r.bareCold, 99)),
		fmt.Sprintf("%.2f×", float64(percentile(r.veloCold, 99))/float64(percentile(r.bareCold, 99))), "", info)
	t.add("cold start p50 vs hardened bare", fmtDur(vc), fmtDur(hc), fmt.Sprintf("%.2f×", float64(vc)/float64(hc)), "", info)
	vs, ps := percentile(r.veloStartAPI, 50), percentile(r.startAPI, 50)
	t.add("`ContainerStart` call alone p50", fmtDur(vs), fmtDur(ps), fmtDiff(vs-ps), "", info)
	t.add("cold start minus `ContainerStart` p50", fmtDur(percentile(minus(r.veloCold, r.veloStartAPI), 50)),
		fmtDur(percentile(minus(r.bareCold, r.startAPI), 50)), "", "", info)
	vw, bw := percentile(r.veloWake, 50), percentile(r.bareWake, 50)
	t.add(fmt.Sprintf("wake from paused p50 (n=%d)", len(r.veloWake)), fmtDur(vw), fmtDur(bw), fmt.Sprintf("%.2f×", float64(vw)/float64(bw)), "≤ 50 ms", verdict(vw <= 50*time.Millisecond))
	t.add("wake from paused p99", fmtDur(percentile(r.veloWake, 99)), fmtDur(percentile(r.bareWake, 99)), "", "", info)
	vu, pu := percentile(r.veloUnpauseAPI, 50), percentile(r.unpauseAPI, 50)
	t.add("`ContainerUnpause` call alone p50", fmtDur(vu), fmtDur(pu), fmtDiff(vu-pu), "", info)
	t.add("wake minus `ContainerUnpause` p50", fmtDur(percentile(minus(r.veloWake, r.veloUnpauseAPI), 50)),
		fmtDur(percentile(minus(r.bareWake, r.unpauseAPI), 50)), "", "", info)
	vp50, dp50 := median(r.veloP50), median(r.directP50)
	vp99, dp99 := median(r.veloP99), median(r.directP99)
	t.add("warm request p50 (router vs direct)", fmtDur(vp50), fmtDur(dp50), fmtDiff(vp50-dp50), "", info)
	t.add("warm request p99 (router vs direct)", fmtDur(vp99), fmtDur(dp99), fmtDiff(vp99-dp99), "", info)
	fmt.Fprintf(&s, "%s\n", t)
	fmt.Fprintf(&s, "Samples, ms — cold Velo: %s; cold bare: %s; cold hardened bare: %s. Wake Velo: %s; unpause bare: %s. "+
		"Load average before each part: %s.\n", fmtMillis(r.veloCold), fmtMillis(r.bareCold), fmtMillis(r.hardCold),
		fmtMillis(r.veloWake), fmtMillis(r.bareWake), strings.Join(r.loads, " · "))
	return s.String()
}

// minus returns a[i]-b[i] for the samples both have; nil when their
// counts differ (the calls could not be matched to samples).
func minus(a, b []time.Duration) []time.Duration {
	if len(a) != len(b) {
		return nil
	}
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

func fmtMillis(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64)
	}
	return strings.Join(parts, " ")
}
