package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Lease is a leadership held through a Postgres session advisory lock on a
// connection of its own. The lock lives as long as that session: when the
// holder dies, or its connection does, Postgres releases it and another
// process can take it. Lost is closed when the lease is known to be gone
// (the connection failed a check), so the holder stops acting as leader.
type Lease struct {
	lost    chan struct{}
	release func()
	once    sync.Once
}

// Lost is closed once the lease is gone: released, or its connection broke.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Release gives the leadership up. It is safe to call more than once.
func (l *Lease) Release() { l.once.Do(l.release) }

// leaseCheck is how often a held lease checks that its session is alive.
const leaseCheck = time.Second

// TryLeader tries to become the leader for key without waiting. It returns
// ok=false when another session holds it. On SQLite, whose database belongs
// to one process, it always succeeds.
func (s *Store) TryLeader(ctx context.Context, key int64) (lease *Lease, ok bool, err error) {
	pg, isPG := s.db.(*pgEngine)
	if !isPG {
		l := &Lease{lost: make(chan struct{})}
		l.release = func() { close(l.lost) }
		return l, true, nil
	}
	cfg := pg.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "velo-leader"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("leader lock connect: %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, false, fmt.Errorf("leader lock: %w", err)
	}
	if !got {
		conn.Close(context.WithoutCancel(ctx))
		return nil, false, nil
	}
	runCtx, cancel := context.WithCancel(context.Background())
	l := &Lease{lost: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(l.lost)
		t := time.NewTicker(leaseCheck)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				pctx, pcancel := context.WithTimeout(runCtx, leaseCheck)
				err := conn.Ping(pctx)
				pcancel()
				if err != nil {
					return
				}
			}
		}
	}()
	l.release = func() {
		cancel()
		<-done
		// Unlocked before Release returns, so that another session
		// takes it at once: closing the session alone frees it only
		// once the server has ended that session, a moment later. The
		// close frees it anyway should unlocking fail.
		cctx, ccancel := context.WithTimeout(context.Background(), time.Second)
		_, _ = conn.Exec(cctx, "SELECT pg_advisory_unlock($1)", key)
		conn.Close(cctx)
		ccancel()
	}
	return l, true, nil
}
