package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/velo-run/velo/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestSQLite(t *testing.T) {
	runContract(t, EngineSQLite, func(t *testing.T) string {
		return "sqlite://" + filepath.Join(t.TempDir(), "velo.db")
	})
}

func TestPostgres(t *testing.T) {
	pgtest.URL(t) // skip (or fail in CI) early without Postgres
	runContract(t, EnginePostgres, func(t *testing.T) string { return pgtest.URL(t) })
}

func TestOpenURLs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, filepath.Join(dir, "plain.db"))
	if err != nil {
		t.Fatalf("Open(plain path): %v", err)
	}
	if s.Engine() != EngineSQLite {
		t.Errorf("plain path engine = %s", s.Engine())
	}
	s.Close()
	for _, bad := range []string{"", "mysql://x/y", "sqlite://"} {
		if s, err := Open(ctx, bad); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
	_, err = Open(ctx, "mysql://user:secret@host/db")
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("Open(mysql) error %v should not show the password", err)
	}
}

// TestPostgresConcurrentOpen starts several processes' worth of stores on
// one fresh database at once: the advisory lock lets one migrate and the
// others find the schema done.
func TestPostgresConcurrentOpen(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestPostgresPoolSize holds connections of the store's pool at once: the
// default holds defaultMaxConns (pgxpool's own would stop at 4 on a 2-core
// machine and starve the event engine), and pool_max_conns in the URL
// still sets the size.
func TestPostgresPoolSize(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	hold := func(s *Store, n int) error {
		pool := s.PostgresPool()
		var conns []*pgxpool.Conn
		defer func() {
			for _, c := range conns {
				c.Release()
			}
		}()
		for i := range n {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := pool.Acquire(actx)
			cancel()
			if err != nil {
				return fmt.Errorf("connection %d of %d: %w", i+1, n, err)
			}
			conns = append(conns, c)
		}
		return nil
	}
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := hold(s, defaultMaxConns); err != nil {
		t.Fatalf("default pool: %v", err)
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	small, err := Open(ctx, url+sep+"pool_max_conns=2")
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	if err := hold(small, 2); err != nil {
		t.Fatalf("pool_max_conns=2: %v", err)
	}
	if err := hold(small, 3); err == nil {
		t.Fatal("pool_max_conns=2 held 3 connections at once")
	}
}

// TestPostgresListenReconnect kills the LISTEN connection: listeners get ""
// (resync) once it is back, then notifications flow again.
func TestPostgresListenReconnect(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	s := openStore(t, url)
	ch, err := s.Listen(ctx, ChannelPlacements)
	must(t, err)
	must(t, s.Notify(ctx, PlacementsChanged(1)))
	if p, _ := recv(t, ch); p != "1" {
		t.Fatalf("got %q, want 1", p)
	}
	n, err := s.db.exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database()`, listenAppName)
	must(t, err)
	if n != 1 {
		t.Fatalf("terminated %d listen connections, want 1", n)
	}
	if p, _ := recv(t, ch); p != "" {
		t.Fatalf("after reconnect got %q, want the resync signal", p)
	}
	// A new channel after the reconnect works too.
	ch2, err := s.Listen(ctx, ChannelLogs)
	must(t, err)
	deadline := time.Now().Add(10 * time.Second)
	for {
		must(t, s.Notify(ctx, PlacementsChanged(2)))
		p, _ := recv(t, ch)
		if p == "2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification after reconnect, last %q", p)
		}
	}
	must(t, s.Notify(ctx, LogsWritten("web")))
	if p, _ := recv(t, ch2); p != "web" {
		t.Errorf("new channel after reconnect got %q", p)
	}
}

func TestMapErr(t *testing.T) {
	if mapErr(nil) != nil {
		t.Error("mapErr(nil) != nil")
	}
	other := errors.New("other")
	if mapErr(other) != other {
		t.Error("mapErr changed an unrelated error")
	}
}

func TestTrimLog(t *testing.T) {
	short := "a\nb\n"
	if trimLog(short) != short {
		t.Error("trimLog changed a short log")
	}
	// One giant line of multi-byte runes: the cut lands on a rune start.
	long := strings.Repeat("é", BuildLogCap)
	got := trimLog(long)
	if !strings.HasPrefix(got, buildLogMarker) || len(got) > BuildLogCap {
		t.Errorf("trimLog: %d bytes", len(got))
	}
	if rest := strings.TrimPrefix(got, buildLogMarker); !strings.HasPrefix(rest, "é") {
		t.Errorf("trimLog cut a rune: %q", rest[:4])
	}
}

func TestCountsEncoding(t *testing.T) {
	for _, counts := range [][]uint64{nil, {0, 0}, {1}, {0, 5, 0, 1 << 40}} {
		got, err := decodeCounts(encodeCounts(counts))
		must(t, err)
		if !sameCounts(got, counts) {
			t.Errorf("round trip of %v = %v", counts, got)
		}
	}
	for _, bad := range []string{"x", "1:", ":1", "-1:2", "1:-2", "99999999:1"} {
		if _, err := decodeCounts(bad); err == nil {
			t.Errorf("decodeCounts(%q) succeeded", bad)
		}
	}
}

// TestListenAfterClose: a closed store hands out closed channels at once.
func TestListenAfterClose(t *testing.T) {
	urls := map[string]string{EngineSQLite: "sqlite://" + filepath.Join(t.TempDir(), "velo.db")}
	if !testing.Short() {
		if u, err := pgtest.ServerURL(); err == nil && u != "" {
			urls[EnginePostgres] = pgtest.URL(t)
		}
	}
	for engine, url := range urls {
		s, err := Open(context.Background(), url)
		must(t, err)
		s.Close()
		s.Close() // twice is fine
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ch, err := s.Listen(ctx, ChannelRoutes)
		cancel()
		if err == nil {
			if _, ok := <-ch; ok {
				t.Errorf("%s: Listen after Close delivered a payload", engine)
			}
		}
	}
}

// TestNotes: each channel's constructor makes notes of that channel with
// its payload, and only a note of ChannelLogs names a component.
func TestNotes(t *testing.T) {
	for _, tc := range []struct {
		n         Note
		channel   Channel
		resync    bool
		component string
	}{
		{RoutesChanged(), ChannelRoutes, true, ""},
		{RoutesChangedFor(""), ChannelRoutes, true, ""},
		{RoutesChangedFor("web"), ChannelRoutes, false, "web"},
		{PlacementsChanged(7), ChannelPlacements, false, ""},
		{PlacementsChanged(0), ChannelPlacements, true, ""},
		{DeploymentChanged(7), ChannelDeployments, false, ""},
		{LogsWritten("web"), ChannelLogs, false, "web"},
		{SecretsChanged("web"), ChannelSecrets, false, "web"},
	} {
		if tc.n.Channel() != tc.channel || tc.n.Resync() != tc.resync || tc.n.Component() != tc.component {
			t.Errorf("%s: channel %s, resync %v, component %q; want %s, %v, %q",
				tc.n, tc.n.Channel(), tc.n.Resync(), tc.n.Component(), tc.channel, tc.resync, tc.component)
		}
	}
	s := openStore(t, "sqlite://"+t.TempDir()+"/notes.db")
	if err := s.Notify(context.Background(), Note{}); err == nil {
		t.Error("Notify of a note without a channel succeeded")
	}
}
