package docker

import (
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/go-connections/nat"

	"github.com/velo-run/velo/internal/manifest"
)

// Run with: go test -run '^$' -bench . -benchtime 10x ./worker/docker/
// Each op of the start benchmarks is a full container start (about a second
// or more on fuse-overlayfs), so keep -benchtime small.

func benchApp(b *testing.B) (*Runtime, *app) {
	r := newRuntime(b, Config{IdlePause: time.Hour})
	dir, digest := appDir(b, "")
	a := newSpec(b, "bench", dir, digest, manifest.Manifest{Scale: manifest.Scale{Min: 0, Max: 1}})
	prepare(b, r, a)
	return r, a
}

// BenchmarkColdStart: stopped container → first response through Serve.
func BenchmarkColdStart(b *testing.B) {
	_, a := benchApp(b)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		if err := a.inst.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if code, _ := a.get("/"); code != 200 {
			b.Fatalf("GET / = %d", code)
		}
	}
}

// BenchmarkWake: paused container → first response through Serve.
func BenchmarkWake(b *testing.B) {
	_, a := benchApp(b)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		if err := a.inst.Pause(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if code, _ := a.get("/"); code != 200 {
			b.Fatalf("GET / = %d", code)
		}
	}
}

// BenchmarkWarm: a request to a running container through Serve.
func BenchmarkWarm(b *testing.B) {
	_, a := benchApp(b)
	for b.Loop() {
		if code, _ := a.get("/"); code != 200 {
			b.Fatalf("GET / = %d", code)
		}
	}
}

// BenchmarkStartVsBare measures, interleaved so that machine noise hits both
// alike, a cold start through Serve (stopped → first response) and its peer:
// `docker start` of a plain container of the same image (published on
// loopback, no hardening) then polling GET / until the first response. It
// reports the medians and their ratio (the design's figure: ≤ 1.1).
func BenchmarkStartVsBare(b *testing.B) {
	r, a := benchApp(b)
	ctx := context.Background()
	bare := newBare(b, r, a.inst.image)
	var velo, peer []time.Duration
	for b.Loop() {
		if err := a.inst.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if code, _ := a.get("/"); code != 200 {
			b.Fatalf("GET / = %d", code)
		}
		velo = append(velo, time.Since(start))

		start = time.Now()
		bare.start(b)
		peer = append(peer, time.Since(start))
		bare.stop(b)
	}
	report(b, "velo", velo, "bare", peer)
}

// BenchmarkWakeVsUnpause measures, interleaved, a wake through Serve (paused
// → first response) and a bare `docker unpause` + GET of a plain container.
func BenchmarkWakeVsUnpause(b *testing.B) {
	r, a := benchApp(b)
	ctx := context.Background()
	bare := newBare(b, r, a.inst.image)
	bare.start(b)
	var velo, peer []time.Duration
	for b.Loop() {
		if err := a.inst.Pause(ctx); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if code, _ := a.get("/"); code != 200 {
			b.Fatalf("GET / = %d", code)
		}
		velo = append(velo, time.Since(start))

		if err := r.cli.ContainerPause(ctx, bare.id); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if err := r.cli.ContainerUnpause(ctx, bare.id); err != nil {
			b.Fatal(err)
		}
		bare.firstResponse(b)
		peer = append(peer, time.Since(start))
	}
	report(b, "velo", velo, "bare", peer)
}

func report(b *testing.B, name string, ds []time.Duration, peerName string, peer []time.Duration) {
	b.StopTimer()
	med := func(ds []time.Duration) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[len(s)/2]) / 1e6
	}
	v, p := med(ds), med(peer)
	b.ReportMetric(v, name+"-p50-ms")
	b.ReportMetric(p, peerName+"-p50-ms")
	b.ReportMetric(v/p, "ratio")
	b.ReportMetric(0, "ns/op")
}

// bareContainer is a plain container of an image, started and polled the
// way a person would with docker start and curl.
type bareContainer struct {
	r    *Runtime
	id   string
	addr string
	hc   *http.Client
}

func newBare(b *testing.B, r *Runtime, img string) *bareContainer {
	ctx := context.Background()
	resp, err := r.cli.ContainerCreate(ctx, &container.Config{
		Image:        img,
		Env:          []string{"PORT=8080"},
		ExposedPorts: nat.PortSet{"8080/tcp": {}},
		Labels:       map[string]string{LabelOwner: r.cfg.Owner},
	}, &container.HostConfig{
		PortBindings: nat.PortMap{"8080/tcp": {{HostIP: "127.0.0.1"}}},
	}, nil, nil, "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.cli.ContainerRemove(ctx, resp.ID, container.RemoveOptions{Force: true}) })
	return &bareContainer{r: r, id: resp.ID, hc: &http.Client{Transport: &http.Transport{}}}
}

func (c *bareContainer) start(b *testing.B) {
	ctx := context.Background()
	if err := c.r.cli.ContainerStart(ctx, c.id, container.StartOptions{}); err != nil {
		b.Fatal(err)
	}
	info, err := c.r.cli.ContainerInspect(ctx, c.id)
	if err != nil {
		b.Fatal(err)
	}
	if c.addr, err = hostAddr(info, 8080); err != nil {
		b.Fatal(err)
	}
	c.firstResponse(b)
}

func (c *bareContainer) firstResponse(b *testing.B) {
	deadline := time.Now().Add(30 * time.Second)
	for backoff := time.Millisecond; ; backoff = min(backoff*3/2+time.Millisecond, 50*time.Millisecond) {
		res, err := c.hc.Get("http://" + c.addr + "/")
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("bare container never answered: %v", err)
		}
		time.Sleep(backoff)
	}
}

func (c *bareContainer) stop(b *testing.B) {
	t := 5
	if err := c.r.cli.ContainerStop(context.Background(), c.id, container.StopOptions{Timeout: &t}); err != nil {
		b.Fatal(err)
	}
	c.hc.CloseIdleConnections()
}
