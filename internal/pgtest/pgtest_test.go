package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/velo-run/velo/internal/testsupport"
)

func TestMain(m *testing.M) { Main(m) }

func TestURLGivesFreshEmptyDatabases(t *testing.T) {
	ctx := context.Background()
	a, b := URL(t), URL(t)
	if a == b {
		t.Fatalf("URL returned %s twice", a)
	}
	conn, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("fresh database has %d tables", tables)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE t (x int)`); err != nil {
		t.Fatal(err)
	}
	conn2, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(ctx)
	if err := conn2.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("second database sees the first one's table")
	}
}

func TestDatabaseDroppedAtCleanup(t *testing.T) {
	ctx := context.Background()
	var u string
	t.Run("inner", func(t *testing.T) { u = URL(t) })
	if u == "" {
		t.Skip("inner test skipped")
	}
	conn, err := pgx.Connect(ctx, u)
	if err == nil {
		conn.Close(ctx)
		t.Fatalf("database %s still exists after its test ended", u)
	}
	if !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("connect after cleanup: %v, want database does not exist", err)
	}
}

func TestFindBinPrefersHighestVersion(t *testing.T) {
	if got := version("/usr/lib/postgresql/15/bin"); got != 15 {
		t.Errorf("version = %d, want 15", got)
	}
	if got := version("/usr/bin"); got != 0 {
		t.Errorf("version(/usr/bin) = %d, want 0", got)
	}
}

// TestKilledProcessLeavesNoServer runs this test binary as a child that
// starts a server and is then killed with SIGKILL, as go test's -timeout
// does: Main never runs, yet the server must stop and its files go.
func TestKilledProcessLeavesNoServer(t *testing.T) {
	if os.Getenv("PGTEST_HOLD") == "1" {
		u, err := ServerURL()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("%s %s\n", u, shared.dir)
		time.Sleep(10 * time.Minute)
		return
	}
	if _, err := ServerURL(); err != nil {
		testsupport.Need(t, "Postgres", err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKilledProcessLeavesNoServer$", "-test.v")
	cmd.Env = append(os.Environ(), "PGTEST_HOLD=1", EnvURL+"=")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := bufio.NewScanner(out)
	var serverURL, dir string
	for lines.Scan() {
		if f := strings.Fields(lines.Text()); len(f) == 2 && strings.HasPrefix(f[0], "postgres://") {
			serverURL, dir = f[0], f[1]
			break
		}
	}
	if serverURL == "" {
		t.Fatalf("child printed no server URL (scan: %v)", lines.Err())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin(ctx, serverURL, "SELECT 1"); err != nil {
		t.Fatalf("child's server does not answer: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := admin(ctx, serverURL, "SELECT 1")
		cancel()
		_, statErr := os.Stat(dir)
		if err != nil && errors.Is(statErr, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("60 s after the child was killed: server still answers: %v; files still there: %v", err == nil, statErr == nil)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
