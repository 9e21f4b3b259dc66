// Command hello-docker is the smallest Docker component for Velo: an HTTP
// server on $PORT that greets with $GREETING. velo deploy builds it into a
// static binary (velo.toml's build) that its Dockerfile puts on the Debian
// base image.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Getenv("PORT"), os.Getenv("GREETING")); err != nil {
		slog.Error("hello-docker", "err", err)
		os.Exit(1)
	}
}

// run serves until SIGTERM (what `docker stop`, and so Velo, sends), then
// lets requests in flight finish.
func run(port, greeting string) error {
	if port == "" {
		port = "8080"
	}
	srv := &http.Server{Addr: ":" + port, Handler: handler(greeting), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	slog.Info("listening", "addr", srv.Addr)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// handler answers every path with the greeting.
func handler(greeting string) http.Handler {
	if greeting == "" {
		greeting = "Hello"
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slog.Info("request", "method", r.Method, "path", r.URL.Path)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s from a container! You asked for %s\n", greeting, r.URL.Path)
	})
}
