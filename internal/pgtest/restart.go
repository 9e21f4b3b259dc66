package pgtest

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Run is Main without the exit: it runs the tests, stops the server URL may
// have started, and returns the exit code, so that TestMain can clean up
// more of its own before exiting.
func Run(m *testing.M) int {
	mainMu.Lock()
	inMain = true
	mainMu.Unlock()
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Stop stops the Postgres server this process started (fast shutdown: open
// connections are cut), keeping its data, as when Postgres crashes or is
// restarted. Start brings it back on the same port. It fails t when the
// server comes from VELO_TEST_DATABASE_URL, which this process cannot
// control.
func Stop(t testing.TB) {
	t.Helper()
	if err := controllable(); err != nil {
		t.Fatal(err)
	}
	if out, err := shared.run(shared.pgCtl, "-D", filepath.Join(shared.dir, "data"), "-m", "fast", "-w", "stop"); err != nil {
		t.Fatalf("pg_ctl stop: %v: %s", err, out)
	}
}

// Start starts the server again after Stop, on the same port and data.
func Start(t testing.TB) {
	t.Helper()
	if err := controllable(); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(shared.url)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off "+
		"-c full_page_writes=off -c max_connections=300", port, filepath.Join(shared.dir, "sock"))
	if out, err := shared.run(shared.pgCtl, "-D", filepath.Join(shared.dir, "data"), "-l", filepath.Join(shared.dir, "log"),
		"-w", "-t", "60", "-o", opts, "start"); err != nil {
		t.Fatalf("pg_ctl start: %v: %s", err, out)
	}
}

func controllable() error {
	if os.Getenv(EnvURL) != "" {
		return errors.New("pgtest: cannot stop a server given by " + EnvURL)
	}
	if !shared.started {
		return errors.New("pgtest: no server started by this process (call URL first)")
	}
	return nil
}

// Throwaway starts a Postgres server of its own for a program that is not a
// test (a benchmark), and returns its URL and a function that stops it and
// removes its files.
func Throwaway() (serverURL string, stop func() error, err error) {
	s := new(server)
	u, err := s.start()
	stop = s.stop
	if err != nil {
		_ = stop()
		return "", nil, err
	}
	return u, stop, nil
}
