// Command build makes what docker-compose.yml and examples/hello-docker
// need, on a machine that reaches no container registry:
//
//		go run ./deploy/build
//
//	 1. the Debian base image velo-debian:bookworm (BaseImage), made with
//	    debootstrap from Debian's package mirror — the one apt uses here —
//	    and `docker import`, holding Debian's PostgreSQL and CA certificates
//	    (BasePackages); skipped when the engine has it;
//	 2. deploy/velo, Velo's static binary, which deploy/Dockerfile puts in an
//	    image FROM scratch.
//
// Then `docker compose up -d --build` (or docker-compose) builds the
// images of the compose file from those two. debootstrap needs root and
// `apt-get install debootstrap`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/docker/docker/client"

	"github.com/velo-run/velo/internal/debiantest"
)

// BaseImage is the base image's name in docker-compose.yml's build
// arguments and examples/hello-docker's Dockerfile.
const BaseImage = debiantest.BaseImage

// BasePackages are what the base holds besides Debian's minimal system:
// Postgres for the compose file's database, CA certificates for Velo's
// image (its calls to GitHub).
var BasePackages = debiantest.BasePackages

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tag := fs.String("tag", BaseImage, "name of the base image")
	out := fs.String("out", "deploy/velo", "where to write Velo's binary (\"\": do not build it)")
	verbose := fs.Bool("v", false, "show debootstrap's output")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := build(ctx, *tag, *out, *verbose, stdout); err != nil {
		fmt.Fprintln(stderr, "build:", err)
		return 1
	}
	return 0
}

func build(ctx context.Context, tag, out string, verbose bool, log io.Writer) error {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker engine: %w", err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx); err != nil {
		return fmt.Errorf("docker engine: %w", err)
	}
	ref, err := Base(ctx, cli, tag, verbose, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "base image %s (%s)\n", tag, ref)
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags=-s -w", "-o", out, "./cmd/velo")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/velo (run from the repository's root): %w", err)
	}
	fmt.Fprintf(log, "velo binary %s\n", out)
	return nil
}

// Base makes sure the engine has the base image under tag, building it
// with debootstrap when it has none, and returns the image it names.
func Base(ctx context.Context, cli *client.Client, tag string, verbose bool, log io.Writer) (string, error) {
	if img, err := cli.ImageInspect(ctx, tag); err == nil {
		return img.ID, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", errors.New("debootstrap not found: apt-get install debootstrap (the base image is made from Debian's packages, no registry)")
	}
	fmt.Fprintf(log, "building %s: debootstrap bookworm with %v (a minute or two)\n", tag, BasePackages)
	var dlog io.Writer = io.Discard
	if verbose {
		dlog = log
	}
	ref, err := debiantest.Build(ctx, cli, BasePackages, dlog)
	if err != nil {
		return "", err
	}
	if err := cli.ImageTag(ctx, ref, tag); err != nil {
		return "", fmt.Errorf("tag %s as %s: %w", ref, tag, err)
	}
	return ref, nil
}
