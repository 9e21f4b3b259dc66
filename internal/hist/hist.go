// Package hist is a fixed-bucket latency histogram: cheap to record into from
// many goroutines, mergeable bucket-wise (so per-minute buckets written by
// several routers add up), and good to about 9% for quantiles.
package hist

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// subBuckets per power of two of microseconds.
const subBuckets = 8

// Buckets is the number of buckets: 1µs up to 2^27µs (about 134s), the last
// one open-ended.
const Buckets = 27*subBuckets + 1

// index returns the bucket of a duration.
func index(d time.Duration) int {
	us := uint64(d / time.Microsecond)
	if us < 1 {
		return 0
	}
	exp := bits.Len64(us) - 1 // us in [2^exp, 2^(exp+1))
	var sub uint64
	if exp >= 3 {
		sub = (us >> (exp - 3)) & (subBuckets - 1)
	} else {
		sub = (us << (3 - exp)) & (subBuckets - 1)
	}
	i := exp*subBuckets + int(sub)
	if i >= Buckets {
		return Buckets - 1
	}
	return i
}

// upper returns the upper bound of bucket i.
func upper(i int) time.Duration {
	exp := i / subBuckets
	sub := i % subBuckets
	us := math.Ldexp(1+float64(sub+1)/subBuckets, exp)
	return time.Duration(us * float64(time.Microsecond))
}

// Recorder counts durations; safe for concurrent use without locks.
type Recorder struct {
	counts [Buckets]atomic.Uint64
}

// Record counts one duration.
func (r *Recorder) Record(d time.Duration) { r.counts[index(d)].Add(1) }

// Drain returns the counts recorded since the last Drain and resets them.
// It returns nil when nothing was recorded.
func (r *Recorder) Drain() []uint64 {
	var out []uint64
	for i := range r.counts {
		if n := r.counts[i].Swap(0); n > 0 {
			if out == nil {
				out = make([]uint64, Buckets)
			}
			out[i] = n
		}
	}
	return out
}

// Merge adds b into a bucket-wise and returns the result (a may be nil).
func Merge(a, b []uint64) []uint64 {
	if len(b) == 0 {
		return a
	}
	if len(a) < len(b) {
		a = append(a, make([]uint64, len(b)-len(a))...)
	}
	for i, n := range b {
		a[i] += n
	}
	return a
}

// Quantile returns the upper bound of the bucket holding quantile q (0..1)
// of counts, or 0 when counts is empty.
func Quantile(counts []uint64, q float64) time.Duration {
	var total uint64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, n := range counts {
		seen += n
		if seen >= rank {
			return upper(i)
		}
	}
	return upper(len(counts) - 1)
}
