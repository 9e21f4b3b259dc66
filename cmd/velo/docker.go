package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/velo-run/velo/worker"
)

// newDockerRuntime starts the Docker runtime when an engine answers.
func newDockerRuntime(ctx context.Context, owner string, log *slog.Logger) (worker.Runtime, error) {
	return nil, errors.New("docker runtime not built yet")
}
