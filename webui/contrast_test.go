package webui

import (
	"math"
	"regexp"
	"strconv"
	"testing"
)

// The main text colors of velo.css against their backgrounds meet WCAG AA
// (contrast ratio ≥ 4.5). The colors are read from the embedded stylesheet,
// so changing one there is checked here.

var cssVar = regexp.MustCompile(`--([a-z-]+):\s*#([0-9a-fA-F]{6});`)

func luminance(hex string) float64 {
	var c [3]float64
	for i := range 3 {
		v, _ := strconv.ParseUint(hex[2*i:2*i+2], 16, 8)
		s := float64(v) / 255
		if s <= 0.04045 {
			c[i] = s / 12.92
		} else {
			c[i] = math.Pow((s+0.055)/1.055, 2.4)
		}
	}
	return 0.2126*c[0] + 0.7152*c[1] + 0.0722*c[2]
}

func contrast(a, b string) float64 {
	la, lb := luminance(a), luminance(b)
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

func TestContrast(t *testing.T) {
	css, err := staticFS.ReadFile("static/velo.css")
	if err != nil {
		t.Fatal(err)
	}
	colors := map[string]string{"white": "ffffff"}
	for _, m := range cssVar.FindAllStringSubmatch(string(css), -1) {
		colors[m[1]] = m[2]
	}
	for _, p := range []struct{ fg, bg string }{
		{"fg", "bg"}, {"fg", "card"}, {"fg", "code-bg"},
		{"muted", "bg"}, {"muted", "card"}, {"muted", "code-bg"},
		{"link", "bg"}, {"link", "card"},
		{"accent-fg", "accent"}, {"accent", "card"},
		{"danger-fg", "danger"}, {"danger", "card"},
		{"live", "card"}, {"deploying", "card"}, {"failed", "card"}, {"paused", "card"}, {"white", "live"},
		{"flash-fg", "flash-bg"},
		{"log-fg", "log-bg"}, {"log-err", "log-bg"}, {"log-velo", "log-bg"}, {"log-time", "log-bg"},
	} {
		fg, bg := colors[p.fg], colors[p.bg]
		if fg == "" || bg == "" {
			t.Errorf("velo.css lacks --%s or --%s", p.fg, p.bg)
			continue
		}
		if r := contrast(fg, bg); r < 4.5 {
			t.Errorf("--%s #%s on --%s #%s: contrast %.2f, want ≥ 4.5", p.fg, fg, p.bg, bg, r)
		} else {
			t.Logf("--%s #%s on --%s #%s: %.2f", p.fg, fg, p.bg, bg, r)
		}
	}
}
