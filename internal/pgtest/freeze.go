//go:build unix

package pgtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Freeze stops the Postgres server this process started and every one of
// its backends with SIGSTOP, as when Postgres hangs: connections stay open
// and the kernel still takes what is sent, but nothing answers. The
// returned thaw continues them (SIGCONT); it also runs at t's cleanup, so
// a failed test never leaves the server stopped. It needs Linux's /proc to
// find the backends, and skips t without it.
func Freeze(t testing.TB) (thaw func()) {
	t.Helper()
	if err := controllable(); err != nil {
		t.Fatal(err)
	}
	pidFile, err := os.ReadFile(filepath.Join(shared.dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatalf("pgtest: read postmaster.pid: %v", err)
	}
	first, _, _ := bytes.Cut(pidFile, []byte("\n"))
	postmaster, err := strconv.Atoi(strings.TrimSpace(string(first)))
	if err != nil {
		t.Fatalf("pgtest: postmaster.pid: %v", err)
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("pgtest: Freeze needs /proc to find the backends")
	}
	// The postmaster first, so that it starts no backend after the scan.
	stopped := []int{postmaster}
	if err := syscall.Kill(postmaster, syscall.SIGSTOP); err != nil {
		t.Fatalf("pgtest: stop postmaster %d: %v", postmaster, err)
	}
	var thawed bool
	thaw = func() {
		if thawed {
			return
		}
		thawed = true
		for _, pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT) // a backend may have gone
		}
	}
	t.Cleanup(thaw)
	children, err := childrenOf(postmaster)
	if err != nil {
		t.Fatalf("pgtest: find backends: %v", err)
	}
	for _, pid := range children {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err == nil {
			stopped = append(stopped, pid)
		}
	}
	return thaw
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) < 2 {
			return nil, fmt.Errorf("/proc/%d/stat: %q", child, stat)
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == pid {
			out = append(out, child)
		}
	}
	return out, nil
}
