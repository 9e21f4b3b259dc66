package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/velo-run/velo/internal/testsupport"
)

// EnvURL names a Postgres server URL to create test databases in instead of
// starting one.
const EnvURL = "VELO_TEST_DATABASE_URL"

// unprivilegedUser runs Postgres when the tests run as root and Debian's
// postgres user does not exist.
const unprivilegedUser = "velotest"

// server is the throwaway Postgres of this test process.
type server struct {
	once    sync.Once
	url     string
	err     error
	dir     string   // temp dir with data, socket and log
	pgCtl   string   // path of pg_ctl
	asUser  []string // command prefix that runs as the server's user
	started bool
	// watch is the write end of the pipe the watchdog reads: when this
	// process ends, however it ends, the pipe closes and the watchdog stops
	// the server and removes its files (a test binary killed by go test's
	// -timeout never reaches Main's stop).
	watch *os.File
}

// the process's one server; Main stops it.
var (
	shared  server
	mainMu  sync.Mutex
	inMain  bool
	stopped bool
)

// Main runs the tests and then stops the server URL may have started and
// removes its files. Call it from TestMain: func TestMain(m *testing.M) {
// pgtest.Main(m) }.
func Main(m *testing.M) {
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
	os.Exit(code)
}

// ServerURL returns the URL of the Postgres server test databases are made
// in: VELO_TEST_DATABASE_URL, or a server started for this process (which
// needs Main to be stopped).
func ServerURL() (string, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return u, nil
	}
	mainMu.Lock()
	ok := inMain && !stopped
	mainMu.Unlock()
	if !ok {
		return "", errors.New("pgtest: starting a Postgres server needs pgtest.Main in TestMain (to stop it)")
	}
	shared.once.Do(func() { shared.url, shared.err = shared.start() })
	return shared.url, shared.err
}

// URL returns the URL of a new, empty database, dropped when t ends. When no
// Postgres is available it skips t, or fails it when CI=true.
func URL(t testing.TB) string {
	t.Helper()
	base, err := ServerURL()
	testsupport.Need(t, "Postgres", err)
	name := "velo_test_" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin(ctx, base, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE ends connections the test left open (Postgres 13+).
		if err := admin(ctx, base, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", EnvURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

// admin runs one statement on the server's maintenance connection.
func admin(ctx context.Context, base, stmt string) error {
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// start initializes and starts a server in a temp dir on a free loopback
// port, with trust authentication.
func (s *server) start() (string, error) {
	bin, err := findBin()
	if err != nil {
		return "", err
	}
	s.pgCtl = filepath.Join(bin, "pg_ctl")
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		name, err := runAsUser()
		if err != nil {
			return "", err
		}
		u, err := user.Lookup(name)
		if err != nil {
			return "", fmt.Errorf("look up user %s: %w", name, err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		s.asUser = []string{"runuser", "-u", name, "--"}
	}
	s.dir, err = os.MkdirTemp("", "velo-pgtest-")
	if err != nil {
		return "", fmt.Errorf("temp dir: %w", err)
	}
	sock := filepath.Join(s.dir, "sock")
	if err := os.Mkdir(sock, 0o700); err != nil {
		return "", fmt.Errorf("socket dir: %w", err)
	}
	if uid >= 0 {
		for _, p := range []string{s.dir, sock} {
			if err := os.Chown(p, uid, gid); err != nil {
				return "", fmt.Errorf("chown %s: %w", p, err)
			}
		}
	}
	data := filepath.Join(s.dir, "data")
	if out, err := s.run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return "", fmt.Errorf("initdb: %w: %s", err, out)
	}
	// A free port can be taken between finding and binding it: retry.
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off "+
			"-c full_page_writes=off -c max_connections=300", port, sock)
		out, err := s.run(s.pgCtl, "-D", data, "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "-o", opts, "start")
		if err == nil {
			s.started = true
			if err := s.startWatchdog(); err != nil {
				return "", err
			}
			return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), nil
		}
		if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
			return "", fmt.Errorf("pg_ctl start: %w: %s\n%s", err, out, log)
		}
	}
}

// run runs a Postgres command, as the server's user when needed.
func (s *server) run(name string, args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, s.asUser...), name), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.dir
	return cmd.CombinedOutput()
}

// stop stops the server, if one was started, and removes its files.
func stop() error {
	mainMu.Lock()
	stopped = true
	mainMu.Unlock()
	shared.once.Do(func() { shared.err = errors.New("pgtest: stopped") })
	return shared.stop()
}

// startWatchdog starts a shell, in a process group of its own, that waits
// for end of file on its standard input (the read end of a pipe only this
// process holds the write end of) and then stops the server immediately and
// removes its files. The process's exit, by Main or by a kill -9, closes the
// pipe.
func (s *server) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("watchdog pipe: %w", err)
	}
	stop := append(append(append([]string{}, s.asUser...), s.pgCtl), "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
	script := "cat >/dev/null; " + shellJoin(stop) + " >/dev/null 2>&1; rm -rf " + shellQuote(s.dir)
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("watchdog: %w", err)
	}
	r.Close()
	go func() { _ = cmd.Wait() }() // reap it when it ends before this process
	s.watch = w
	return nil
}

func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// stop stops s, if it was started, and removes its files.
func (s *server) stop() error {
	if s.watch != nil {
		// The server is stopped here; the watchdog's stop then finds none.
		defer s.watch.Close()
	}
	var err error
	if s.started {
		if out, e := s.run(s.pgCtl, "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop"); e != nil {
			err = fmt.Errorf("pg_ctl stop: %w: %s", e, out)
		}
	}
	if s.dir != "" {
		if e := os.RemoveAll(s.dir); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// findBin returns the directory holding initdb and pg_ctl: the highest
// version under /usr/lib/postgresql (Debian), else the PATH.
func findBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
			return d, nil
		}
	}
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		return "", errors.New("initdb not found in /usr/lib/postgresql/*/bin or PATH; install postgresql or set " + EnvURL)
	}
	d := filepath.Dir(initdb)
	if !isExec(filepath.Join(d, "pg_ctl")) {
		return "", fmt.Errorf("pg_ctl not found next to %s", initdb)
	}
	return d, nil
}

// version reads the major version from /usr/lib/postgresql/NN/bin.
func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// runAsUser returns the unprivileged user to run Postgres as: Debian's
// postgres, else velotest, created when missing.
func runAsUser() (string, error) {
	if _, err := user.Lookup("postgres"); err == nil {
		return "postgres", nil
	}
	if _, err := user.Lookup(unprivilegedUser); err == nil {
		return unprivilegedUser, nil
	}
	out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
		unprivilegedUser).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("useradd %s: %w: %s", unprivilegedUser, err, strings.TrimSpace(string(out)))
	}
	return unprivilegedUser, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
