package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/client"
	"github.com/velo-run/velo/internal/node"
)

// Velo is a Velo under test: in this process (node.Start) or a separate
// `velo up` process. Either way URL and Client reach it over loopback.
type Velo struct {
	URL    string
	Client *client.Client
	node   *node.Node
	proc   *Proc
}

// StartVelo starts an all-in-one Velo in this process on a fresh data dir,
// hit recording on, logging only warnings.
func (b *Bench) StartVelo(ctx context.Context, name string) (*Velo, error) {
	log := slog.New(slog.NewTextHandler(b.log, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := node.Start(ctx, node.Config{Addr: "127.0.0.1:0", DataDir: filepath.Join(b.Tmp, name), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("start velo: %w", err)
	}
	return &Velo{URL: n.URL, Client: client.New(n.URL, n.Token, nil), node: n}, nil
}

// StartVeloProc builds ./cmd/velo and runs `velo up` as a separate process
// on a fresh data dir (embedded SQLite, hit recording on).
func (b *Bench) StartVeloProc(ctx context.Context, name string) (*Velo, error) {
	bin, err := b.GoBuild(ctx, "./cmd/velo")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(b.Tmp, name)
	p, err := b.StartProc(ctx, name, bin, []string{"up", "--addr", "127.0.0.1:0", "--data", data},
		[]string{"VELO_LOG_LEVEL=warn"}, "Velo is up at ")
	if err != nil {
		return nil, err
	}
	v, err := veloAt(p, data)
	if err != nil {
		p.Stop()
	}
	return v, err
}

// veloAt is the Velo of a started `velo up` process with data dir data.
func veloAt(p *Proc, data string) (*Velo, error) {
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		return nil, fmt.Errorf("velo admin token: %w", err)
	}
	return &Velo{URL: p.URL, Client: client.New(p.URL, strings.TrimSpace(string(tok)), nil), proc: p}, nil
}

// Close stops Velo.
func (v *Velo) Close() {
	if v.node != nil {
		_ = v.node.Close()
	}
	if v.proc != nil {
		v.proc.Stop()
	}
}

// wasmComponent is a WASM component the benchmark deploys: a directory
// holding velo.toml and the module, and a counter file changed on every
// deploy so that each artifact has a new digest.
type wasmComponent struct {
	name string
	dir  string
	seq  int
}

// newWasmComponent lays out a component named name serving module with the
// manifest the Go example uses (10s timeout, 128 MiB, GREETING=hi).
func (b *Bench) newWasmComponent(name, module string) (*wasmComponent, error) {
	dir := filepath.Join(b.Tmp, "components", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(module)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "module.wasm"), bin, 0o644); err != nil {
		return nil, err
	}
	manifest := fmt.Sprintf("name = %q\nruntime = \"wasm\"\nmodule = \"module.wasm\"\ntimeout = \"10s\"\nmemory = \"128MiB\"\n\n[env]\nGREETING = \"hi\"\n", name)
	if err := os.WriteFile(filepath.Join(dir, "velo.toml"), []byte(manifest), 0o644); err != nil {
		return nil, err
	}
	return &wasmComponent{name: name, dir: dir}, nil
}

// deployed is the outcome of one deploy.
type deployed struct {
	id     int64
	toLive time.Duration // from the upload's start until the API reports it live
}

// Deploy uploads a fresh artifact of c (its counter bumped) and waits,
// polling GET /deployments/{id} every 2 ms for up to 2 minutes, until it is
// ready and live.
func (v *Velo) Deploy(ctx context.Context, c *wasmComponent) (deployed, error) {
	c.seq++
	if err := os.WriteFile(filepath.Join(c.dir, "deploy-counter.txt"), []byte(strconv.Itoa(c.seq)+"\n"), 0o644); err != nil {
		return deployed{}, err
	}
	var buf bytes.Buffer
	if err := archive.Pack(&buf, c.dir, "module.wasm"); err != nil {
		return deployed{}, fmt.Errorf("pack %s: %w", c.name, err)
	}
	start := time.Now()
	d, err := v.Client.Deploy(ctx, c.name, &buf)
	if err != nil {
		return deployed{}, fmt.Errorf("deploy %s: %w", c.name, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, err := v.Client.Deployment(ctx, d.ID)
		if err != nil {
			return deployed{}, fmt.Errorf("deployment %d: %w", d.ID, err)
		}
		switch {
		case got.Status == "failed":
			return deployed{}, fmt.Errorf("deployment %d of %s failed: %s\n%s", d.ID, c.name, got.Error, got.BuildLog)
		case got.Status == "ready" && got.Live:
			return deployed{id: d.ID, toLive: time.Since(start)}, nil
		case time.Now().After(deadline):
			return deployed{}, fmt.Errorf("deployment %d of %s not live after 2 minutes (status %s)", d.ID, c.name, got.Status)
		}
		select {
		case <-ctx.Done():
			return deployed{}, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// newHTTPClient returns a keep-alive HTTP/1.1 client for loopback load.
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		},
	}
}
