package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
)

// The variables systemd sets for a socket-activated service
// (sd_listen_fds(3)): the sockets start at file descriptor 3.
const (
	envListenPID = "LISTEN_PID"
	envListenFDs = "LISTEN_FDS"
	listenFDBase = 3
)

// systemdListener returns the listening socket systemd passed this process
// (a velo-ROLE.socket unit, as velo install writes), or nil when it passed
// none. The socket outlives the process, so a role restarted through it
// (an upgrade) makes its clients wait, not fail.
func systemdListener() (net.Listener, error) {
	pid, fds := os.Getenv(envListenPID), os.Getenv(envListenFDs)
	if pid == "" || fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	// Not for the children this process starts (Docker, builds).
	os.Unsetenv(envListenPID)
	os.Unsetenv(envListenFDs)
	os.Unsetenv("LISTEN_FDNAMES")
	if fds != "1" {
		return nil, fmt.Errorf("%s=%s: want one socket from systemd", envListenFDs, fds)
	}
	f := os.NewFile(listenFDBase, "systemd socket")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("socket from systemd: %w", err)
	}
	return ln, nil
}
