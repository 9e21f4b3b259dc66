package webui

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/velo-run/velo/internal/api"
)

// Graphs are inline SVG drawn here, on the server: one x unit per minute,
// y from 0 (bottom) to chartH (top), stretched to the box by CSS with
// preserveAspectRatio="none" and non-scaling strokes, so they need no
// script and no third-party code.

const chartH = 100

// chart is one graph: a viewBox and its series.
type chart struct {
	W      int // buckets (minutes)
	H      int
	Label  string // for screen readers
	Max    string // value at the top
	Unit   string
	From   string // x axis, left
	Series []series
	Empty  bool
}

type series struct {
	Name  string
	Class string // CSS class: hits, errors, p50, p99
	Area  string // closed path under the line, or ""
	Line  string // the line's path
	Note  string // legend: total or peak
}

// niceMax rounds v up to 1, 2 or 5 × 10^k, at least 1.
func niceMax(v float64) float64 {
	if v <= 1 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// y maps v in [0, max] to the viewBox.
func y(v, max float64) string {
	return strconv.FormatFloat(chartH-v/max*chartH, 'f', 2, 64)
}

// linePath joins the points of vals, skipping NaN (no data): a gap starts a
// new subpath, and a lone point is drawn as a dash one minute wide.
func linePath(vals []float64, max float64) string {
	var b strings.Builder
	last := float64(len(vals) - 1)
	for i := 0; i < len(vals); i++ {
		if math.IsNaN(vals[i]) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if i+1 >= len(vals) || math.IsNaN(vals[i+1]) {
			x0, x1 := math.Max(float64(i)-0.5, 0), math.Min(float64(i)+0.5, last)
			fmt.Fprintf(&b, "M%s %s H%s", num(x0), y(vals[i], max), num(x1))
			continue
		}
		fmt.Fprintf(&b, "M%d %s", i, y(vals[i], max))
		for i+1 < len(vals) && !math.IsNaN(vals[i+1]) {
			i++
			fmt.Fprintf(&b, " L%d %s", i, y(vals[i], max))
		}
	}
	return b.String()
}

// areaPath is the region under vals (no NaN), closed along the bottom.
func areaPath(vals []float64, max float64) string {
	if len(vals) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "M0 %d", chartH)
	for i, v := range vals {
		fmt.Fprintf(&b, " L%d %s", i, y(v, max))
	}
	fmt.Fprintf(&b, " L%d %d Z", len(vals)-1, chartH)
	return b.String()
}

func span(n int) string {
	if n >= 120 {
		return fmt.Sprintf("%d h ago", (n+30)/60)
	}
	return fmt.Sprintf("%d min ago", n)
}

// hitsChart draws hits and errors per minute.
func hitsChart(bs []api.Bucket) chart {
	hits, errs := make([]float64, len(bs)), make([]float64, len(bs))
	var total, totalErr int64
	top := 0.0
	for i, b := range bs {
		hits[i], errs[i] = float64(b.Hits), float64(b.Errors)
		total += b.Hits
		totalErr += b.Errors
		top = max(top, hits[i])
	}
	m := niceMax(top)
	errLine := ""
	if totalErr > 0 { // a red line along the bottom would look like trouble
		errLine = linePath(errs, m)
	}
	return chart{
		W: max(len(bs)-1, 1), H: chartH, Max: num(m), Unit: "per min", From: span(len(bs)),
		Label: fmt.Sprintf("Hits per minute over the last %s: %d hits, %d errors, peak %s a minute", spanWord(len(bs)), total, totalErr, num(top)),
		Series: []series{
			{Name: "hits", Class: "hits", Area: areaPath(hits, m), Line: linePath(hits, m), Note: count(total)},
			{Name: "errors", Class: "errors", Line: errLine, Note: count(totalErr)},
		},
		Empty: total == 0,
	}
}

// latencyChart draws p50 and p99 latency per minute; minutes without hits
// are gaps.
func latencyChart(bs []api.Bucket) chart {
	p50, p99 := make([]float64, len(bs)), make([]float64, len(bs))
	top, top50, any := 0.0, 0.0, false
	for i, b := range bs {
		if b.Hits == 0 {
			p50[i], p99[i] = math.NaN(), math.NaN()
			continue
		}
		any = true
		p50[i], p99[i] = b.P50ms, b.P99ms
		top, top50 = max(top, b.P99ms), max(top50, b.P50ms)
	}
	m := niceMax(top)
	return chart{
		W: max(len(bs)-1, 1), H: chartH, Max: num(m), Unit: "ms", From: span(len(bs)),
		Label: fmt.Sprintf("Latency per minute over the last %s: p50 peak %s ms, p99 peak %s ms", spanWord(len(bs)), num(top50), num(top)),
		Series: []series{
			{Name: "p50", Class: "p50", Line: linePath(p50, m), Note: "peak " + num(top50) + " ms"},
			{Name: "p99", Class: "p99", Line: linePath(p99, m), Note: "peak " + num(top) + " ms"},
		},
		Empty: !any,
	}
}

func spanWord(n int) string {
	if n >= 120 {
		return fmt.Sprintf("%d hours", (n+30)/60)
	}
	return fmt.Sprintf("%d minutes", n)
}

// spark is a components-list sparkline of hits per minute.
type spark struct {
	W      int
	Points string
	Label  string
}

func sparkline(bs []api.Bucket) spark {
	top := 0.0
	for _, b := range bs {
		top = max(top, float64(b.Hits))
	}
	m := niceMax(top)
	var pts []string
	for i, b := range bs {
		pts = append(pts, fmt.Sprintf("%d,%s", i, y(float64(b.Hits), m)))
	}
	return spark{W: max(len(bs)-1, 1), Points: strings.Join(pts, " "), Label: fmt.Sprintf("hits per minute, last hour, peak %s", num(top))}
}
