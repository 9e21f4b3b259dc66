//go:build unix

package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/pgtest"
	"github.com/velo-run/velo/internal/testsupport"
)

// TestListenSurvivesHungPostgres: with Postgres stopped (SIGSTOP), a Listen
// on a new channel returns once the listener's LISTEN reaches its deadline
// (the reconnect then resyncs), rather than waiting for Postgres; once it
// continues, notes on that channel arrive.
func TestListenSurvivesHungPostgres(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Listen(ctx, ChannelDeployments); err != nil { // the listener runs
		t.Fatal(err)
	}
	thaw := pgtest.Freeze(t)
	type listened struct {
		ch  <-chan Note
		err error
	}
	got := make(chan listened, 1)
	go func() {
		ch, err := s.Listen(ctx, ChannelLogs)
		got <- listened{ch, err}
	}()
	var l listened
	testsupport.Eventually(t, 60*time.Second, "Listen returning while Postgres hangs", func() bool {
		select {
		case l = <-got:
			return true
		default:
			return false
		}
	})
	if l.err != nil {
		t.Fatal(l.err)
	}
	thaw()
	testsupport.Eventually(t, 60*time.Second, "a note on the new channel once Postgres continues", func() bool {
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := s.Notify(nctx, LogsWritten("web")); err != nil {
			return false
		}
		for {
			select {
			case n := <-l.ch:
				if n.Component() == "web" {
					return true
				}
			case <-time.After(time.Second):
				return false
			}
		}
	})
}

// TestOpenFailsOnHungPostgres: opening the store while Postgres hangs
// (SIGSTOP: the kernel takes the connection, nothing answers it) fails at
// the connect deadline, rather than waiting for Postgres.
func TestOpenFailsOnHungPostgres(t *testing.T) {
	url := pgtest.URL(t)
	pgtest.Freeze(t)
	got := make(chan error, 1)
	go func() {
		s, err := Open(context.Background(), url)
		if err == nil {
			s.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err == nil || !strings.Contains(err.Error(), "postgres connect") {
			t.Fatalf("Open while Postgres hangs: %v, want a connect error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Open still waiting 60s after Postgres hung")
	}
}
