package pgtest

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
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
