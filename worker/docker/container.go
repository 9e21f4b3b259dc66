package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"sort"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/docker/go-connections/nat"

	"github.com/velo-run/velo/worker"
)

// stopTimeout is how long a container gets to exit on SIGTERM before SIGKILL.
const stopTimeout = 5

// logTail is how many lines of a container's output a failed start reports.
const logTail = 20

// create creates the container c with Velo's hardening and returns its id.
func (i *Instance) create(ctx context.Context, c *ctr) (string, error) {
	port := nat.Port(strconv.Itoa(i.port) + "/tcp")
	env := make([]string, 0, len(i.manifest.Env)+len(i.secrets)+1)
	for k, v := range i.manifest.Env {
		if _, secret := i.secrets[k]; k != "PORT" && !secret {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range i.secrets {
		if k != "PORT" {
			env = append(env, k+"="+v)
		}
	}
	sort.Strings(env)
	env = append(env, "PORT="+strconv.Itoa(i.port))
	pids := i.rt.cfg.Pids
	init := true
	cfg := &container.Config{
		Image:        i.image,
		Env:          env,
		ExposedPorts: nat.PortSet{port: struct{}{}},
		Labels: map[string]string{
			LabelManaged:    "true",
			LabelOwner:      i.rt.cfg.Owner,
			LabelComponent:  i.component,
			LabelDeployment: strconv.FormatInt(i.deployment, 10),
			LabelDigest:     i.digest,
			labelInstance:   i.id,
		},
	}
	hc := &container.HostConfig{
		// Published on loopback only, on a port the engine picks: the
		// worker is the only client.
		PortBindings:  nat.PortMap{port: {{HostIP: "127.0.0.1", HostPort: ""}}},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled}, // Velo replaces crashed ones itself
		AutoRemove:    false,
		Privileged:    false,
		CapDrop:       []string{"ALL"},
		SecurityOpt:   []string{"no-new-privileges"},
		// An init as PID 1 forwards SIGTERM, so a server that installs no
		// handler still stops at once instead of at the kill timeout.
		Init:           &init,
		ReadonlyRootfs: true,
		Tmpfs:          map[string]string{"/tmp": "rw,noexec,nosuid,size=64m"},
		Resources: container.Resources{
			Memory:     i.manifest.Memory,
			MemorySwap: i.manifest.Memory,
			NanoCPUs:   int64(i.rt.cfg.CPUs * 1e9),
			PidsLimit:  &pids,
		},
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "2"}},
	}
	resp, err := i.rt.cli.ContainerCreate(ctx, cfg, hc, nil, nil, c.name)
	if cerrdefs.IsConflict(err) && i.removeStale(ctx, c.name) {
		resp, err = i.rt.cli.ContainerCreate(ctx, cfg, hc, nil, nil, c.name)
	}
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", c.name, err)
	}
	return resp.ID, nil
}

// removeStale removes a container of ours that holds name, left by an
// earlier Prepare of the same deployment. It reports whether it did.
func (i *Instance) removeStale(ctx context.Context, name string) bool {
	old, err := i.rt.cli.ContainerInspect(ctx, name)
	if err != nil || old.Config == nil || old.Config.Labels[LabelManaged] != "true" || old.Config.Labels[LabelOwner] != i.rt.cfg.Owner {
		return false
	}
	return i.rt.cli.ContainerRemove(ctx, old.ID, container.RemoveOptions{Force: true}) == nil
}

// start creates c if needed, starts it and waits until it answers HTTP.
// On failure the container is removed and the error carries its last log
// lines.
func (i *Instance) start(c *ctr) error {
	ctx := i.ctx
	i.mu.Lock()
	id := c.id
	i.mu.Unlock()
	if id == "" {
		// Not cut off by Close: an engine whose create request is dropped
		// may still create the container, which nothing would then remove.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
		var err error
		id, err = i.create(cctx, c)
		cancel()
		if err != nil {
			return err
		}
		i.mu.Lock()
		closed := i.closed
		if !closed {
			c.id = id // from here on Close removes it
		}
		i.mu.Unlock()
		if closed {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), removeTimeout)
			defer cancel()
			if err := i.rt.remove(rctx, id); err != nil {
				return err
			}
			return fmt.Errorf("start container %s: deployment %d is stopping", c.name, i.deployment)
		}
		if ctx.Err() != nil {
			return ctx.Err() // Close removes it: the id is recorded
		}
	}

	since := time.Now()
	if err := i.rt.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", c.name, err)
	}
	info, err := i.rt.cli.ContainerInspect(ctx, id)
	if err != nil {
		return fmt.Errorf("inspect container %s: %w", c.name, err)
	}
	addr, err := hostAddr(info, i.port)
	if err != nil {
		// A container that exited at once has no port bindings left:
		// explain it from its state and output, as any failed start.
		return i.startFailed(c, id, fmt.Errorf("container %s: %w", c.name, err))
	}

	i.mu.Lock()
	c.gen++
	gen := c.gen
	exited := make(chan struct{})
	c.exited = exited
	c.addr = addr
	if c.conns != nil {
		c.conns.CloseIdleConnections() // an earlier run's, if it was not stopped cleanly
	}
	conns := newTransport()
	c.conns = conns
	c.proxy = i.newProxy(c, gen, addr, conns)
	i.wg.Add(2)
	i.mu.Unlock()
	go i.watchExit(c, gen, id)
	go i.follow(id, since)

	if err := i.waitReady(ctx, addr, exited, conns); err != nil {
		return i.startFailed(c, id, err)
	}
	return nil
}

// hostAddr reads the loopback address the engine published port on.
func hostAddr(info container.InspectResponse, port int) (string, error) {
	if info.NetworkSettings != nil {
		for _, b := range info.NetworkSettings.Ports[nat.Port(strconv.Itoa(port)+"/tcp")] {
			if b.HostPort != "" {
				return "127.0.0.1:" + b.HostPort, nil
			}
		}
	}
	return "", fmt.Errorf("port %d not published", port)
}

// startFailed explains a start that never got ready, from the container's
// state and last log lines.
func (i *Instance) startFailed(c *ctr, id string, cause error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(i.ctx), 10*time.Second)
	defer cancel()
	if i.ctx.Err() != nil {
		return i.ctx.Err()
	}
	msg := cause.Error()
	if info, err := i.rt.cli.ContainerInspect(ctx, id); err == nil && info.State != nil && !info.State.Running {
		msg = fmt.Sprintf("container exited with code %d before it was ready", info.State.ExitCode)
		if info.State.OOMKilled {
			msg += " (out of memory)"
		}
	}
	logs := i.lastLogs(ctx, id)
	if logs == "" {
		return fmt.Errorf("%s; it wrote no output", msg)
	}
	return fmt.Errorf("%s; last output:\n%s", msg, logs)
}

// lastLogs returns the last lines a container wrote, stdout and stderr mixed.
func (i *Instance) lastLogs(ctx context.Context, id string) string {
	rc, err := i.rt.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(logTail)})
	if err != nil {
		return ""
	}
	defer rc.Close()
	t := &tail{n: logTail}
	if _, err := stdcopy.StdCopy(t, t, rc); err != nil {
		return t.String()
	}
	return t.String()
}

// waitReady polls GET / on addr through conns until it answers with any
// HTTP status, or, when the manifest has a health check, GET of its path
// until it answers a status the check expects: a container whose port is
// open is not ready before its application says so.
func (i *Instance) waitReady(ctx context.Context, addr string, exited <-chan struct{}, conns *http.Transport) error {
	start := time.Now()
	deadline := start.Add(i.rt.cfg.ReadyTimeout)
	backoff := time.Millisecond
	url := "http://" + addr + "/"
	h := i.manifest.Health
	if h != nil {
		url = "http://" + addr + h.Path
	}
	last := ""
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(pctx, http.MethodGet, url, nil)
		req.Header.Set("User-Agent", "velo-ready-check")
		resp, err := conns.RoundTrip(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			cancel()
			if h == nil || h.Passes(resp.StatusCode) {
				return nil
			}
			last = fmt.Sprintf("; it last answered %s with %d: %.200q", h.Path, resp.StatusCode, body)
		} else {
			cancel()
		}
		if time.Now().After(deadline) {
			if h != nil {
				return fmt.Errorf("container did not pass its health check %s on port %d within %s%s", h, i.port, i.rt.cfg.ReadyTimeout, last)
			}
			return fmt.Errorf("container did not answer HTTP on port %d within %s", i.port, i.rt.cfg.ReadyTimeout)
		}
		t := time.NewTimer(backoff)
		select {
		case <-exited:
			t.Stop()
			return errors.New("container exited before it was ready")
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		// Poll tightly while a typical server is still booting: every
		// millisecond waited after it listens is added to the cold start.
		// A refused loopback connection costs microseconds.
		if time.Since(start) > 2*time.Second {
			backoff = min(backoff*3/2+time.Millisecond, 50*time.Millisecond)
		}
	}
}

// watchExit waits for the current run of container id to end.
func (i *Instance) watchExit(c *ctr, gen int, id string) {
	defer i.wg.Done()
	waitC, errC := i.rt.cli.ContainerWait(i.ctx, id, container.WaitConditionNotRunning)
	select {
	case res := <-waitC:
		i.exited(c, gen, res.StatusCode)
	case err := <-errC:
		if i.ctx.Err() == nil {
			// Lost the engine connection: a proxy error will notice a crash.
			i.log.Warn("watch container exit", "container", c.name, "err", err)
		}
	}
}

// follow copies the container's output since it was started to the sink.
// It returns when the container stops or the instance is closed.
func (i *Instance) follow(id string, since time.Time) {
	defer i.wg.Done()
	rc, err := i.rt.cli.ContainerLogs(i.ctx, id, container.LogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Follow:     true,
		Timestamps: true,
		Since:      fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
	})
	if err != nil {
		if i.ctx.Err() == nil {
			i.log.Warn("follow container logs", "container", id[:12], "err", err)
		}
		return
	}
	defer rc.Close()
	stdout := &lineWriter{sink: i.logs, stream: worker.Stdout}
	stderr := &lineWriter{sink: i.logs, stream: worker.Stderr}
	_, err = stdcopy.StdCopy(stdout, stderr, rc)
	stdout.Flush()
	stderr.Flush()
	if err != nil && i.ctx.Err() == nil {
		i.log.Warn("copy container logs", "container", id[:12], "err", err)
	}
}

// newProxy returns the reverse proxy to one run of container c, at addr
// through conns.
func (i *Instance) newProxy(c *ctr, gen int, addr string, conns *http.Transport) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport: conns,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = addr
			pr.SetXForwarded()
			// The router set these for this call: the container sees
			// what it sent, not the router's address appended again.
			for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[k]; ok {
					pr.Out.Header[k] = v
				}
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(r.Context().Err(), context.DeadlineExceeded) {
				http.Error(w, fmt.Sprintf("component did not answer within %s", i.timeout), http.StatusGatewayTimeout)
				return
			}
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			i.log.Warn("proxy to container", "container", c.name, "err", err)
			http.Error(w, "component unavailable", http.StatusBadGateway)
			i.check(c, gen)
		},
	}
}

// check looks at a container a request failed on, and treats it as crashed
// if it is not running (the exit watcher may not have seen it yet).
func (i *Instance) check(c *ctr, gen int) {
	i.mu.Lock()
	if i.closed || c.gen != gen || c.id == "" {
		i.mu.Unlock()
		return
	}
	id := c.id
	i.wg.Add(1)
	i.mu.Unlock()
	go func() {
		defer i.wg.Done()
		info, err := i.rt.cli.ContainerInspect(i.ctx, id)
		if err == nil && info.State != nil && !info.State.Running {
			i.exited(c, gen, int64(info.State.ExitCode))
		}
	}()
}
