package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"
)

// The event engine's [events] concurrency holds across the cluster through
// leases on a queue's slots (table event_slots): each executor process
// that runs a queue's calls renews its lease about every second, saying
// how many calls it could run (want) and holding some slots (held); the
// sum of the live leases' held is at most the queue's concurrency. A
// process's calls never wait for the database: only the lease does, once
// a second or so. A lease not renewed in time is dead with its process,
// and its slots go to the others.

// slotsLockClass is the first key of the transaction advisory lock that
// serializes the claims on one queue (the second is the queue's hash).
// Two-key advisory locks never collide with the one-key locks of the
// leader and the migrations.
const slotsLockClass = 0x76656c6f // "velo"

// SlotClaim is an executor's claim on a queue's slots (ClaimSlots).
type SlotClaim struct {
	Queue  string
	Holder string // the executor process; unique per process
	Limit  int    // the queue's [events] concurrency
	// Want is how many calls the holder could run now (running and
	// waiting), at most Limit. With Want 0 it is granted nothing.
	Want int
	// Keep is how many slots the holder may be using until it hears the
	// answer (what it was granted before, or runs): it goes on holding
	// them whatever it is granted now. Want 0 and Keep 0 drop the lease.
	Keep int
	TTL  time.Duration // the lease dies when not claimed again within it
}

// ClaimSlots renews c.Holder's lease on c.Queue and returns how many of
// the queue's calls it may run at once from now on. That is its fair share
// of c.Limit — the slots are shared out evenly among the live leases that
// want some, a lease wanting less than an even share leaving the rest to
// the others, and the holder counting as wanting all it can get — but
// never more than what the other live leases leave free, nor more than it
// wants unless the others do not want the rest. The lease then
// holds max(granted, Keep). So as long as every holder runs at most what
// it was granted and says so in Keep, the sum over the live leases never
// exceeds c.Limit. others is the number of other live leases on the queue.
func (s *Store) ClaimSlots(ctx context.Context, c SlotClaim) (granted, others int, err error) {
	err = s.tx(ctx, func(q querier) error {
		if s.db.name() == EnginePostgres {
			if _, err := q.exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, slotsLockClass, c.Queue); err != nil {
				return err
			}
		}
		t := now()
		if _, err := q.exec(ctx, `DELETE FROM event_slots WHERE queue = $1 AND expires_at < $2`, c.Queue, micros(t)); err != nil {
			return err
		}
		rs, err := q.query(ctx, `SELECT holder, want, held FROM event_slots WHERE queue = $1 AND holder <> $2`, c.Queue, c.Holder)
		if err != nil {
			return err
		}
		var ls []slotLease
		for rs.Next() {
			var l slotLease
			if err := rs.Scan(&l.holder, &l.want, &l.held); err != nil {
				rs.Close()
				return err
			}
			ls = append(ls, l)
		}
		rs.Close()
		if err := rs.Err(); err != nil {
			return err
		}
		others = len(ls)
		if c.Want <= 0 && c.Keep <= 0 {
			_, err := q.exec(ctx, `DELETE FROM event_slots WHERE queue = $1 AND holder = $2`, c.Queue, c.Holder)
			return err
		}
		if c.Want > 0 {
			free, unwanted := c.Limit, c.Limit
			for _, l := range ls {
				free -= l.held
				unwanted -= l.want
			}
			// At most what it wants, or more when nobody else wants it
			// (a holder's want grows with its calls: one claim then, not
			// one per call).
			granted = max(0, min(fairShare(c.Limit, c.Holder, ls), free, max(c.Want, unwanted)))
		}
		_, err = q.exec(ctx, `INSERT INTO event_slots (queue, holder, want, held, expires_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (queue, holder) DO UPDATE SET want = excluded.want, held = excluded.held, expires_at = excluded.expires_at`,
			c.Queue, c.Holder, min(c.Want, c.Limit), max(granted, c.Keep), micros(t.Add(c.TTL)))
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("claim event slots of %s: %w", c.Queue, err)
	}
	return granted, others, nil
}

// slotLease is another holder's lease, as ClaimSlots reads it.
type slotLease struct {
	holder     string
	want, held int
}

// fairShare is holder's share of limit slots among itself (wanting all
// of them) and the other leases (wanting what they said), filled evenly:
// a lease that wants less than an even share gets what it wants, the rest
// is split among the others, the odd slots going to the lowest holder
// names.
func fairShare(limit int, holder string, others []slotLease) int {
	ls := slices.Clone(others)
	slices.SortFunc(ls, func(a, b slotLease) int { return cmp.Compare(a.want, b.want) })
	left, n := limit, len(ls)+1
	i := 0
	for ; i < len(ls); i++ {
		if w := max(ls[i].want, 0); w <= left/(n-i) {
			left -= w
			continue
		}
		break
	}
	// ls[i:] and holder split what is left.
	k := n - i
	share := left / k
	rank := 0
	for _, l := range ls[i:] {
		if l.holder < holder {
			rank++
		}
	}
	if rank < left%k {
		share++
	}
	return share
}
