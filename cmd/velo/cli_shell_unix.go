//go:build unix

package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/velo-run/velo/internal/shell"
)

// watchSize sends the terminal fd's new size each time it changes
// (SIGWINCH) until stop.
func watchSize(fd int) (<-chan shell.Size, func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGWINCH)
	out := make(chan shell.Size, 1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-sig:
				s, ok := sizeOf(fd)
				if !ok {
					continue
				}
				select {
				case out <- s:
				case <-done:
					return
				}
			}
		}
	}()
	return out, func() {
		signal.Stop(sig)
		close(done)
	}
}
