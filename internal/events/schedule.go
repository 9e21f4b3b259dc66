package events

import (
	"context"
	"errors"
	"time"

	"github.com/riverqueue/river"

	"github.com/velo-run/velo/internal/api"
	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// Schedule ticks: every executor looks at the live schedules a few times
// a second and queues the latest tick that is due, as a River job unique
// by (schedule, tick). However many executors queue the same tick, River
// keeps one: each tick runs once across the cluster. A schedule whose
// ticks were missed (Velo was down) gets only the latest of them, so at
// most one catch-up run; a schedule that never ran starts at its next
// tick.

// scheduleTick is how often the executor looks for due ticks.
const scheduleTick = 100 * time.Millisecond

// maxTickSteps bounds the walk from the last tick to now (a schedule every
// second, down for a day, is 86 400 steps).
const maxTickSteps = 200_000

// scheduler keeps, per schedule, the last tick this process queued or
// found queued.
type scheduler struct {
	last map[string]time.Time // by component + "\n" + key
}

func (e *Engine) runSchedules(ctx context.Context) {
	sc := &scheduler{last: map[string]time.Time{}}
	t := time.NewTicker(scheduleTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := e.scheduleOnce(ctx, sc, time.Now()); err != nil && ctx.Err() == nil {
			e.log.Warn("queue schedule ticks", "err", err)
		}
	}
}

func (e *Engine) scheduleOnce(ctx context.Context, sc *scheduler, now time.Time) error {
	seen := map[string]bool{}
	var errs []error
	for _, s := range e.cfg.Schedules() {
		for i, sch := range s.Schedules {
			key := sch.Key(i)
			id := s.Component + "\n" + key
			seen[id] = true
			spec, err := sch.Spec()
			if err != nil {
				continue // Parse refused it at deploy; an older manifest
			}
			last, ok := sc.last[id]
			if !ok {
				tick, _, err := e.st.LastScheduled(ctx, store.EventQueue(s.Component), key)
				switch {
				case errors.Is(err, store.ErrNotFound):
					last = now // never ran: from the next tick on
				case err != nil:
					errs = append(errs, err)
					continue
				default:
					last = time.UnixMicro(tick)
				}
				sc.last[id] = last
			}
			due := latestDue(spec, last, now)
			if due.IsZero() {
				continue
			}
			c := s.Call(i)
			args := callArgs{Call: *c, Schedule: key, Tick: due.UnixMicro()}
			queue := store.EventQueue(s.Component)
			_, err = e.client.Insert(ctx, args, &river.InsertOpts{Queue: queue, MaxAttempts: c.Events.MaxAttempts,
				UniqueOpts: river.UniqueOpts{ByArgs: true, ByQueue: true}})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			sc.last[id] = due
			e.noteInsert(queue, c.Events.Concurrency)
		}
	}
	for id := range sc.last {
		if !seen[id] {
			delete(sc.last, id)
		}
	}
	return errors.Join(errs...)
}

// latestDue is the latest tick of spec after last and at or before now;
// zero when none is.
func latestDue(spec interface{ Next(time.Time) time.Time }, last, now time.Time) time.Time {
	var due time.Time
	for n, steps := spec.Next(last), 0; !n.IsZero() && !n.After(now) && steps < maxTickSteps; n, steps = spec.Next(n), steps+1 {
		due = n
	}
	return due
}

// Schedules describes a component's schedules: the next tick and how
// the last one went.
func (e *Engine) Schedules(ctx context.Context, component string, list []manifest.Schedule) ([]api.Schedule, error) {
	out := make([]api.Schedule, 0, len(list))
	now := time.Now()
	for i, s := range list {
		as := api.Schedule{Cron: s.Cron, Timezone: s.Timezone, Method: s.Method, Path: s.Path}
		if spec, err := s.Spec(); err == nil {
			t := spec.Next(now).UTC()
			as.NextRun = &t
		}
		tick, id, err := e.st.LastScheduled(ctx, store.EventQueue(component), s.Key(i))
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, err
		default:
			inv, err := e.Invocation(ctx, id)
			if err == nil {
				last := api.ScheduleRun{Invocation: id, Tick: time.UnixMicro(tick).UTC(), State: inv.State, Error: inv.LastError}
				if inv.Answer != nil {
					last.Status = inv.Answer.Status
				}
				as.Last = &last
			}
		}
		out = append(out, as)
	}
	return out, nil
}
