package webui

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/api"
)

func TestNiceMax(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0, 1}, {0.3, 1}, {1, 1}, {1.1, 2}, {2, 2}, {3, 5}, {7, 10}, {10, 10}, {11, 20}, {999, 1000}, {1001, 2000}, {math.NaN(), 1},
	} {
		if got := niceMax(tc.in); got != tc.want {
			t.Errorf("niceMax(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestLinePath(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		name string
		vals []float64
		want string
	}{
		{"empty", nil, ""},
		{"all gaps", []float64{nan, nan}, ""},
		{"line", []float64{0, 5, 10}, "M0 100.00 L1 50.00 L2 0.00"},
		{"gap splits", []float64{10, 10, nan, 0, 5}, "M0 0.00 L1 0.00 M3 100.00 L4 50.00"},
		{"lone point is a dash", []float64{nan, 5, nan}, "M0.5 50.00 H1.5"},
		{"lone point at the edges", []float64{5, nan, nan, 10}, "M0 50.00 H0.5 M2.5 0.00 H3"},
	} {
		if got := linePath(tc.vals, 10); got != tc.want {
			t.Errorf("%s: linePath = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func buckets(hits ...int64) []api.Bucket {
	now := time.Now().Truncate(time.Minute)
	out := make([]api.Bucket, len(hits))
	for i, h := range hits {
		out[i] = api.Bucket{Minute: now.Add(time.Duration(i-len(hits)+1) * time.Minute), Hits: h, P50ms: float64(h), P99ms: float64(2 * h)}
	}
	return out
}

func TestCharts(t *testing.T) {
	c := hitsChart(buckets(0, 3, 7))
	if c.Max != "10" || c.W != 2 || c.Empty || c.Series[0].Note != "10" {
		t.Errorf("hits chart = %+v", c)
	}
	if c.Series[1].Line != "" {
		t.Errorf("errors line drawn with no errors: %q", c.Series[1].Line)
	}
	if !strings.Contains(c.Label, "10 hits") {
		t.Errorf("label %q", c.Label)
	}
	// Latency: minutes without hits are gaps, not zero.
	l := latencyChart(buckets(0, 3, 0))
	if l.Series[0].Line != "M0.5 70.00 H1.5" || l.Max != "10" {
		t.Errorf("latency chart = %+v", l)
	}
	if e := hitsChart(buckets(0, 0)); !e.Empty {
		t.Error("no traffic is not Empty")
	}
	if long := hitsChart(make([]api.Bucket, 1440)); long.From != "24 h ago" {
		t.Errorf("a day starts %q", long.From)
	}
	s := sparkline(buckets(0, 5))
	if s.Points != "0,100.00 1,0.00" || s.W != 1 {
		t.Errorf("sparkline = %+v", s)
	}
}

func TestCount(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567"} {
		if got := count(in); got != want {
			t.Errorf("count(%d) = %q, want %q", in, got, want)
		}
	}
}
