// Command wagipeer is the benchmark's peer server: a minimal net/http
// server that runs a fresh wazero instance of one WAGI module per request
// (package bench/internal/wagi). The benchmark builds it like velo and runs
// it as a separate process, so that both servers get the same treatment.
//
//	wagipeer -module hello.wasm -addr 127.0.0.1:0 -mount /fn/hello
//
// It prints "listening on http://HOST:PORT" on stdout once it accepts
// connections, and stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/velo-run/velo/bench/internal/wagi"
)

func main() {
	os.Exit(doMain(os.Args[1:], os.Stdout, os.Stderr))
}

func doMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wagipeer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	module := fs.String("module", "", "WAGI module (.wasm) to serve")
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
	mount := fs.String("mount", "/fn/hello", "path prefix the module is mounted at (its SCRIPT_NAME)")
	var env [][2]string
	fs.Func("env", "NAME=value set in every instance's environment (repeatable)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return errors.New("want NAME=value")
		}
		env = append(env, [2]string{k, v})
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := run(*module, *addr, *mount, env, stdout); err != nil {
		fmt.Fprintln(stderr, "wagipeer:", err)
		return 1
	}
	return 0
}

func run(module, addr, mount string, env [][2]string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin, err := os.ReadFile(module)
	if err != nil {
		return err
	}
	host, err := wagi.New(ctx, bin, wagi.Config{Env: env})
	if err != nil {
		return err
	}
	defer host.Close(context.Background())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(mount+"/", host.Handler(mount))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
