package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/velo-run/velo/internal/shell"
)

// shellFailed is velo shell's exit code when the session itself fails (as
// ssh's 255), so that a script tells it from the command's own status.
const shellFailed = 255

func shellCommand() *cobra.Command {
	var (
		cn           conn
		forceTTY, no bool
	)
	cmd := &cobra.Command{
		Use:   "shell NAME [-- COMMAND [ARG…]]",
		Short: "Open a shell, or run a command, in a running container of a Docker component",
		Long: `Open an interactive shell (/bin/sh) in a running container of a Docker
component, or run COMMAND there, through Velo's API: you need the same
access as for any other call on the component, and the component's logs
record who opened a shell, what ran and how it ended. A stopped or paused
container is started or woken first, and is not paused while the shell is
open.

With a terminal on both stdin and stdout the command gets a TTY of the
same size, following resizes (-t forces one, -T turns it off); without,
its stdout and stderr stay apart, so it pipes: velo shell web -- cat /etc/os-release.
velo shell exits with the command's exit status, or 255 when the session
itself fails. WebAssembly components have no shell: each call runs in a
fresh instance that ends with the call.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if forceTTY && no {
				return errors.New("-t and -T: choose one")
			}
			c, err := cn.client()
			if err != nil {
				return err
			}
			in, out, errOut := cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			inFd, inTerm := terminal(in)
			outFd, outTerm := terminal(out)
			req := shell.Request{Cmd: args[1:], TTY: forceTTY || (!no && inTerm && outTerm)}
			if req.TTY {
				req.Term = os.Getenv("TERM")
				if outTerm {
					req.Size, _ = sizeOf(outFd)
				}
			}
			if _, err := shell.ParseRequest(req.Query()); err != nil {
				return err
			}
			session, err := c.Shell(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			var resize <-chan shell.Size
			if req.TTY && inTerm {
				old, err := term.MakeRaw(inFd)
				if err != nil {
					session.Close()
					return fmt.Errorf("terminal: %w", err)
				}
				defer term.Restore(inFd, old)
			}
			if req.TTY && outTerm {
				ch, stop := watchSize(outFd)
				defer stop()
				resize = ch
			}
			status, err := shell.Attach(session, in, out, errOut, resize)
			if err != nil {
				if inTerm && req.TTY {
					fmt.Fprint(errOut, "\r\n")
				}
				fmt.Fprintf(errOut, "velo: shell %s: %v\n", args[0], err)
				return exitError(shellFailed)
			}
			if status != 0 {
				return exitError(status)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&forceTTY, "tty", "t", false, "give the command a TTY even when stdin or stdout is not a terminal")
	cmd.Flags().BoolVarP(&no, "no-tty", "T", false, "no TTY, even on a terminal")
	cn.addFlags(cmd)
	return cmd
}

// terminal reports whether f is a terminal, and its descriptor.
func terminal(f any) (int, bool) {
	file, ok := f.(*os.File)
	if !ok {
		return -1, false
	}
	fd := int(file.Fd())
	return fd, term.IsTerminal(fd)
}

// sizeOf reads the size of the terminal fd.
func sizeOf(fd int) (shell.Size, bool) {
	w, h, err := term.GetSize(fd)
	if err != nil || w <= 0 || h <= 0 {
		return shell.Size{}, false
	}
	return shell.Size{Cols: uint16(min(w, shell.MaxSide)), Rows: uint16(min(h, shell.MaxSide))}, true
}
