package deploymgr

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/velo-run/velo/internal/store"
)

// LeaderKey is the Postgres advisory lock key held by the active scheduler
// ("velo" and 1).
const LeaderKey int64 = 0x76656c6f_01

// Elector grants leadership; *store.Store implements it with a session
// advisory lock on Postgres (and always grants it on SQLite).
type Elector interface {
	TryLeader(ctx context.Context, key int64) (lease *store.Lease, ok bool, err error)
}

// Election runs a Manager's scheduler only while this process is the
// leader, so that any number of deploymgr processes can serve the API
// against one database while exactly one schedules. A standby tries to
// take over every Retry; the leader gives up as soon as its lease is lost.
type Election struct {
	// Retry is how often a standby tries to become the leader (default 1s).
	Retry time.Duration
	// Also are loops that, like the scheduler, must run in one process
	// only (the GitHub job runner requeues what it finds running at
	// start); they run while this process leads.
	Also    []func(context.Context) error
	leading atomic.Bool
}

// Leading reports whether this process schedules right now.
func (e *Election) Leading() bool { return e.leading.Load() }

// Run schedules with m whenever el grants leadership, until ctx is done.
func (e *Election) Run(ctx context.Context, m *Manager, el Elector) error {
	retry := e.Retry
	if retry <= 0 {
		retry = time.Second
	}
	for {
		lease, ok, err := el.TryLeader(ctx, LeaderKey)
		switch {
		case err != nil && ctx.Err() == nil:
			m.log.Warn("leader election failed", "err", err)
		case ok:
			m.log.Info("leading: this deploymgr schedules")
			lctx, cancel := context.WithCancel(ctx)
			go func() {
				select {
				case <-lease.Lost():
				case <-lctx.Done():
				}
				cancel()
			}()
			e.leading.Store(true)
			var wg sync.WaitGroup
			for _, also := range e.Also {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := also(lctx); err != nil && lctx.Err() == nil {
						m.log.Warn("leader loop failed", "err", err)
					}
				}()
			}
			runErr := m.Run(lctx)
			cancel()
			wg.Wait()
			e.leading.Store(false)
			lease.Release()
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("lost leadership; standing by", "err", runErr)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}
