package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// percentile returns the p-th percentile (0–100) of samples by nearest
// rank; samples need not be sorted.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// median returns the median of xs.
func median[T int64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fmtDur formats a latency for a table: µs below 10 ms, ms above.
func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "−" + fmtDur(-d)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

// fmtDiff formats a latency difference with its sign.
func fmtDiff(d time.Duration) string {
	if d >= 0 {
		return "+" + fmtDur(d)
	}
	return fmtDur(d)
}

// table is a section's results table: one row per figure.
type table struct {
	label string // which table of its section, when it has several
	rows  [][6]string
}

// Verdicts for table rows.
const (
	pass = "PASS"
	miss = "**MISS**"
	info = "—"
)

func verdict(ok bool) string {
	if ok {
		return pass
	}
	return miss
}

// add appends a row: the figure, Velo's number, the peer's, how they
// compare, the target and the verdict (pass, miss or info).
func (t *table) add(figure, velo, peer, compare, target, result string) {
	t.rows = append(t.rows, [6]string{figure, velo, peer, compare, target, result})
}

func (t *table) String() string {
	var b strings.Builder
	b.WriteString("| figure | Velo | peer | Velo vs peer | target | result |\n")
	b.WriteString("|---|---:|---:|---:|---|---|\n")
	for _, r := range t.rows {
		b.WriteString("| " + strings.Join(r[:], " | ") + " |\n")
	}
	return b.String()
}
