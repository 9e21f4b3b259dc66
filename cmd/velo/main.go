// Command velo is Velo's one binary: the server roles (up, deploymgr, worker,
// router, webui, migrate) and the CLI that talks to them. It only wires the
// packages together; the work lives in them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one velo command and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, os.Stdin, stdout, stderr)
}

// runWith is run reading stdin from in (velo secrets set KEY=-).
func runWith(ctx context.Context, args []string, in io.Reader, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "velo",
		Short:         "Velo: push code, get a URL. WebAssembly and Docker components, self-hosted.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetIn(in)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(serverCommands()...)
	root.AddCommand(clientCommands()...)
	root.AddCommand(installCommand(), hostsCommand(), versionCommand())
	if err := root.ExecuteContext(ctx); err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			return int(exit)
		}
		fmt.Fprintln(stderr, "velo:", err)
		return 1
	}
	return 0
}

// exitError ends the command with that exit code, its reason already printed.
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
