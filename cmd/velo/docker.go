package main

import (
	"context"
	"log/slog"

	"github.com/velo-run/velo/worker"
	"github.com/velo-run/velo/worker/docker"
)

// newDockerRuntime starts the Docker runtime when an engine answers, with
// the idle timers from VELO_DOCKER_IDLE_PAUSE and VELO_DOCKER_IDLE_STOP.
// owner is the worker's name: containers are labelled with it, and those
// an earlier run of the same worker left behind are removed at start.
func newDockerRuntime(ctx context.Context, owner string, log *slog.Logger) (worker.Runtime, error) {
	pause, err := durationEnv("VELO_DOCKER_IDLE_PAUSE", docker.DefaultIdlePause)
	if err != nil {
		return nil, err
	}
	stop, err := durationEnv("VELO_DOCKER_IDLE_STOP", docker.DefaultIdleStop)
	if err != nil {
		return nil, err
	}
	rt, err := docker.New(ctx, docker.Config{Owner: owner, IdlePause: pause, IdleStop: stop, Logger: log})
	if err != nil {
		return nil, err
	}
	return rt, nil
}
