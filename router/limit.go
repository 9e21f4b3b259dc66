package router

import (
	"context"
	"encoding/hex"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/velo-run/velo/internal/manifest"
	"github.com/velo-run/velo/internal/store"
)

// Rate limits are token buckets, one per client of a component: a bucket
// holds up to burst tokens, refills at count per period, and a call takes
// one. A full bucket is the same as no bucket, so buckets are dropped once
// full again; when a component has more clients at once than MaxClients,
// the least useful go (full ones first, then any): memory stays bounded
// whatever the number of clients, at the price of a fresh bucket for a
// client whose bucket was dropped.
//
// Several routers share what they admitted through the store once a
// second (syncLimits): each takes the others' calls out of its own
// buckets, so a limit holds across the cluster within what the routers
// admit between two syncs.

// DefaultMaxClients bounds the buckets of one component.
const DefaultMaxClients = 65536

const limitShards = 16

type limiter struct {
	component string
	cfg       manifest.Limits
	perToken  float64 // nanoseconds per token
	burst     float64
	maxShard  int
	shards    [limitShards]limitShard
}

type limitShard struct {
	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last refill
	used   int64 // calls admitted since the last sync
}

func newLimiter(component string, cfg manifest.Limits, maxClients int) *limiter {
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	l := &limiter{
		component: component,
		cfg:       cfg,
		perToken:  float64(cfg.Per) / float64(cfg.Count),
		burst:     float64(cfg.Burst),
		maxShard:  max(1, maxClients/limitShards),
	}
	for i := range l.shards {
		l.shards[i].m = map[string]*bucket{}
	}
	return l
}

// rateState is what a call's answer says of its client's bucket.
type rateState struct {
	ok        bool
	limit     int // the burst: calls at once
	remaining int
	reset     int // seconds until the bucket is full again
	retry     int // with !ok: seconds until a call is admitted
}

func (s *rateState) setHeader(h http.Header) {
	h["Ratelimit-Limit"] = []string{strconv.Itoa(s.limit)}
	h["Ratelimit-Remaining"] = []string{strconv.Itoa(s.remaining)}
	h["Ratelimit-Reset"] = []string{strconv.Itoa(s.reset)}
}

func (s *rateState) appendLines(dst []byte) []byte {
	dst = append(dst, "RateLimit-Limit: "...)
	dst = strconv.AppendInt(dst, int64(s.limit), 10)
	dst = append(dst, "\r\nRateLimit-Remaining: "...)
	dst = strconv.AppendInt(dst, int64(s.remaining), 10)
	dst = append(dst, "\r\nRateLimit-Reset: "...)
	dst = strconv.AppendInt(dst, int64(s.reset), 10)
	return append(dst, "\r\n"...)
}

func shardOf(key []byte) int {
	// FNV-1a: cheap, and spreads addresses and IDs well enough.
	h := uint32(2166136261)
	for _, c := range key {
		h = (h ^ uint32(c)) * 16777619
	}
	return int(h % limitShards)
}

// take takes a token of key's bucket at now.
func (l *limiter) take(key []byte, now time.Time) rateState {
	sh := &l.shards[shardOf(key)]
	t := now.UnixNano()
	sh.mu.Lock()
	b := sh.m[string(key)]
	if b == nil {
		l.makeRoom(sh, t)
		b = &bucket{tokens: l.burst, last: t}
		sh.m[string(key)] = b
	}
	l.refill(b, t)
	ok := b.tokens >= 1
	if ok {
		b.tokens--
		b.used++
	}
	tokens := b.tokens
	sh.mu.Unlock()
	s := rateState{ok: ok, limit: l.cfg.Burst, remaining: max(0, int(tokens))}
	s.reset = int(math.Ceil((l.burst - tokens) * l.perToken / 1e9))
	if !ok {
		s.retry = max(1, int(math.Ceil((1-tokens)*l.perToken/1e9)))
		s.reset = max(s.reset, s.retry)
	}
	return s
}

func (l *limiter) refill(b *bucket, t int64) {
	if t > b.last {
		b.tokens = min(l.burst, b.tokens+float64(t-b.last)/l.perToken)
		b.last = t
	}
}

// makeRoom drops buckets of a full shard: the full ones, then as many
// others as keep an eighth of the shard free.
func (l *limiter) makeRoom(sh *limitShard, t int64) {
	if len(sh.m) < l.maxShard {
		return
	}
	for k, b := range sh.m {
		if l.refill(b, t); b.tokens >= l.burst && b.used == 0 {
			delete(sh.m, k)
		}
	}
	for k := range sh.m {
		if len(sh.m) < l.maxShard-l.maxShard/8 {
			break
		}
		delete(sh.m, k)
	}
}

// clients is how many buckets the limiter holds.
func (l *limiter) clients() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// drainUsed appends what was admitted since the last call, per client.
func (l *limiter) drainUsed(dst []store.RateUsage, router string) []store.RateUsage {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, b := range sh.m {
			if b.used > 0 {
				dst = append(dst, store.RateUsage{Router: router, Component: l.component, Client: hex.EncodeToString([]byte(k)), Used: b.used})
				b.used = 0
			}
		}
		sh.mu.Unlock()
	}
	return dst
}

// spend takes n tokens another router used out of key's bucket, down to
// minus the burst at most.
func (l *limiter) spend(key []byte, n int64, now time.Time) {
	sh := &l.shards[shardOf(key)]
	t := now.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.m[string(key)]
	if b == nil {
		l.makeRoom(sh, t)
		b = &bucket{tokens: l.burst, last: t}
		sh.m[string(key)] = b
	}
	l.refill(b, t)
	b.tokens = max(-l.burst, b.tokens-float64(n))
}

// limitStore is what sharing rate limits across routers needs.
type limitStore interface {
	AddRateUsage(ctx context.Context, batch []store.RateUsage) error
	RateUsageSince(ctx context.Context, router string, since time.Time, limit int) ([]store.RateUsage, error)
	PruneRateUsage(ctx context.Context, before time.Time) (int64, error)
}

// usageWindow is how far back a sync reads the other routers' batches: a
// batch committed late (its transaction slower than a later one) is still
// seen, once (seen remembers the IDs applied).
const usageWindow = 10 * time.Second

// maxUsageRows bounds one sync's read.
const maxUsageRows = 50000

// limitSync is a router's state of sharing limits.
type limitSync struct {
	id        string
	seen      map[int64]time.Time
	lastPrune time.Time
}

// syncLimits writes the calls this router admitted since the last sync
// and takes the other routers' out of its buckets.
func (r *Router) syncLimits(ctx context.Context, ls limitStore) error {
	now := time.Now()
	var batch []store.RateUsage
	limiters := map[string]*limiter{}
	for name, rt := range r.table.Load().routes {
		if rt.gate != nil && rt.gate.limit != nil {
			limiters[name] = rt.gate.limit
			batch = rt.gate.limit.drainUsed(batch, r.sync.id)
		}
	}
	if err := ls.AddRateUsage(ctx, batch); err != nil {
		return fmt.Errorf("share rate usage: %w", err)
	}
	rows, err := ls.RateUsageSince(ctx, r.sync.id, now.Add(-usageWindow), maxUsageRows)
	if err != nil {
		return fmt.Errorf("read rate usage: %w", err)
	}
	for _, u := range rows {
		if _, ok := r.sync.seen[u.ID]; ok {
			continue
		}
		r.sync.seen[u.ID] = u.At
		l := limiters[u.Component]
		key, err := hex.DecodeString(u.Client)
		if l == nil || err != nil {
			continue
		}
		l.spend(key, u.Used, now)
	}
	for id, at := range r.sync.seen {
		if now.Sub(at) > 2*usageWindow {
			delete(r.sync.seen, id)
		}
	}
	if now.Sub(r.sync.lastPrune) > 30*time.Second {
		r.sync.lastPrune = now
		if _, err := ls.PruneRateUsage(ctx, now.Add(-time.Minute)); err != nil {
			return fmt.Errorf("prune rate usage: %w", err)
		}
	}
	return nil
}
